"""The adapter library: PEFT folders under ``adapters_dir()``, one per adapter.

Each entry holds ``adapter_config.json`` + ``adapter_model.safetensors`` (stock PEFT,
loadable by ``PeftModel.from_pretrained``), ``studio.json`` (what the studio knows
about how it was made, plus the user's tags and notes) and a ``README.md`` model card.
The library is the files on disk: listing reads JSON and safetensors headers only and
never imports torch.

Every change is a rename or an atomic write, so a crash leaves an entry either as it
was or as it was meant to become. Deleting and restoring are ``engine.adapters.trash``;
importing and exporting (folders and zips) are ``engine.adapters.transfer``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from engine.adapters.evaluations import EVALUATIONS, EvalHeadline, newest_headline
from engine.core.atomic import read_json_object, staged_directory, write_json, write_text
from engine.core.checks import MAX_RANK, MAX_VIRTUAL_TOKENS, is_number, shown
from engine.core.fields import text_field, whole_field
from engine.core.names import MAX_NAME, is_plain_name, is_valid_name
from engine.core.patterns import is_simple_pattern, matching_names
from engine.core.sampling_checks import SETTINGS, check_setting
from engine.core.safetensors_files import safetensors_problem
from engine.errors import StudioError
from engine.paths import adapters_dir, folder_entries, writable_home

ADAPTER_META = "studio.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
# The key in studio.json of the adapter's chat settings: the sampling settings to chat with it by
# default, by the names of engine.core.sampling_checks.SETTINGS (a GGUF export's Modelfile carries them).
CHAT_SETTINGS = "chat_settings"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class AdapterRecord:
    name: str
    path: str
    base_model: Optional[str]
    method: Optional[str]
    rank: Optional[int]
    dataset: Optional[str]
    created: Optional[str]
    steps: Optional[int]
    final_loss: Optional[float]
    size_bytes: int
    damaged: Optional[str] = None  # why the folder cannot be used, when it cannot
    eval_loss: Optional[float] = None
    tags: list[str] = field(default_factory=list)
    evaluation: Optional[EvalHeadline] = None  # the newest evaluation's headline score, when it was evaluated

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# reading ---------------------------------------------------------------------------------------


def read_adapter_meta(path: Path) -> dict[str, Any]:
    """The studio's metadata for an adapter folder; empty for adapters made elsewhere."""
    return read_json_object(Path(path) / ADAPTER_META) or {}


def read_peft_config(path: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict; empty when it is missing or not a JSON object."""
    return read_json_object(Path(path) / PEFT_CONFIG) or {}


def damage(path: Path) -> Optional[str]:
    """Why an adapter folder cannot be used (missing or pickled files, a bad config, truncated weights); None when it can."""
    if not (path / PEFT_CONFIG).is_file():
        return f"missing {PEFT_CONFIG}"
    if not (path / PEFT_WEIGHTS).is_file():
        if any((path / f"adapter_model{suffix}").is_file() for suffix in _PICKLE_SUFFIXES):
            return "its weights are a pickle file (adapter_model.bin), which LoRA Studio never loads"
        return f"missing {PEFT_WEIGHTS}"
    config = read_json_object(path / PEFT_CONFIG)
    if config is None:
        return f"{PEFT_CONFIG} is not a valid JSON object"
    return _config_problem(config) or safetensors_problem(path / PEFT_WEIGHTS)


# The sizes an adapter's config must give as positive whole numbers, by PEFT type.
_POSITIVE_SIZES = {"LORA": ("r",), "PROMPT_TUNING": ("num_virtual_tokens",), "PREFIX_TUNING": ("num_virtual_tokens",),
                   "P_TUNING": ("num_virtual_tokens",)}


def _config_problem(config: dict[str, Any]) -> Optional[str]:
    """What in an ``adapter_config.json`` would make peft fail later, in the user's words."""
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        return f"{PEFT_CONFIG} names no peft_type"
    for name in _POSITIVE_SIZES.get(peft_type, ()):
        value = config.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"{PEFT_CONFIG} says {name}={value!r}: it must be a positive whole number"
        if value > _MAX_SIZES[name]:
            return f"{PEFT_CONFIG} says {name}={value:,}: no real adapter has more than {_MAX_SIZES[name]:,}"
    alpha = config.get("lora_alpha")
    if peft_type == "LORA" and alpha is not None and not is_number(alpha):  # json reads NaN and Infinity
        return f"{PEFT_CONFIG} says lora_alpha={alpha!r}: it must be a finite number"
    return _pattern_problem(config)


_MAX_SIZES = {"r": MAX_RANK, "num_virtual_tokens": MAX_VIRTUAL_TOKENS}
# Module names as a causal LM has them, for trying an adapter's module regexes early (the real
# names are tried again, with the same bound, when the adapter is loaded: base_model.load_peft).
_TYPICAL_MODULES = [f"{prefix}layers.{layer}.{part}" for prefix in ("model.", "base_model.model.model.")
                    for layer in (0, 31) for part in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_up_proj",
                                                      "mlp.down_proj", "input_layernorm")]
_TYPICAL_MODULES += ["model.embed_tokens", "lm_head", "transformer.h.11.attn.c_attn"]


def _pattern_problem(config: dict[str, Any]) -> Optional[str]:
    """A module pattern peft would run with Python's ``re``, which nothing can stop: a string
    ``target_modules`` / ``exclude_modules`` must match within the time bound (engine.core.patterns);
    the names peft splices into its own patterns must be simple ones."""
    for key in ("target_modules", "exclude_modules"):
        if isinstance(config.get(key), str):
            try:
                matching_names(f"{PEFT_CONFIG} {key}", config[key], _TYPICAL_MODULES)
            except StudioError as exc:
                return str(exc)
    for key, fits in (("rank_pattern", _is_rank), ("alpha_pattern", is_number)):
        per_module = config.get(key) or {}
        if not isinstance(per_module, dict) or not all(fits(value) for value in per_module.values()):
            return f"{PEFT_CONFIG} {key} must map module names to {'ranks' if key == 'rank_pattern' else 'numbers'}"
    spliced = [*_as_list(config.get("modules_to_save")), *_as_list(config.get("layers_pattern")),
               *(config.get("rank_pattern") or {}), *(config.get("alpha_pattern") or {})]
    bad = [item for item in spliced if not is_simple_pattern(item)]
    if bad:
        return (f"{PEFT_CONFIG} names modules with {shown(bad[0])}: modules_to_save, layers_pattern and the keys "
                "of rank_pattern and alpha_pattern must be module names or simple patterns (no groups)")
    return None


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_RANK


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


# studio.json is a user's file like any other: a field of the wrong type is treated as absent
# (engine.core.fields). A loss is kept even when it is not finite: a run that diverged shows nan.
def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def final_eval_loss(meta: dict[str, Any]) -> Optional[float]:
    """The last evaluation loss a run recorded, if it evaluated at all."""
    recorded = _number(meta.get("final_eval_loss"))
    if recorded is not None:
        return recorded
    history = meta.get("eval_history")
    if isinstance(history, list) and history and isinstance(history[-1], (list, tuple)) and len(history[-1]) == 2:
        return _number(history[-1][1])
    return None


def adapter_method(meta: dict[str, Any], config: dict[str, Any]) -> Optional[str]:
    """The method that made an adapter: as studio.json says, else as its PEFT config implies."""
    if text_field(meta, "method"):
        return meta["method"]
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str):
        return None
    return "dora" if peft_type == "LORA" and config.get("use_dora") else peft_type.lower()


def _record(path: Path) -> AdapterRecord:
    meta = read_adapter_meta(path)
    # Adapters made elsewhere have no studio.json: their PEFT config still names base and rank.
    config = read_peft_config(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    dataset = text_field(meta, "dataset")
    tags = meta.get("tags")
    return AdapterRecord(
        name=path.name,
        path=str(path),
        base_model=text_field(meta, "base_model") or text_field(config, "base_model_name_or_path"),
        method=adapter_method(meta, config),
        rank=whole_field(meta, "rank") or whole_field(config, "r"),
        dataset=Path(dataset).name if dataset else None,
        created=text_field(meta, "created"),
        steps=whole_field(meta, "steps"),
        final_loss=_number(meta.get("final_loss")),
        size_bytes=size,
        damaged=damage(path),
        eval_loss=final_eval_loss(meta),
        tags=[str(tag) for tag in tags] if isinstance(tags, list) else [],
        evaluation=newest_headline(meta),
    )


def list_adapters() -> list[AdapterRecord]:
    """Every adapter in the library, newest first. Staging and trash folders (dot-names) are skipped.

    A folder that vanishes while it is being read (deleted by another window) is left out;
    one that cannot be read is listed as damaged.
    """
    records = []
    for folder in folder_entries(adapters_dir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            records.append(_record(folder))
        except FileNotFoundError:
            continue
        except OSError as exc:
            records.append(AdapterRecord(folder.name, str(folder), None, None, None, None, None, None, None, 0,
                                         damaged=f"cannot be read: {exc.strerror or exc}"))
    return sorted(records, key=lambda r: (r.created or "", r.name), reverse=True)


def saved_by_run() -> dict[str, list[Path]]:
    """The library's adapters by the name of the run folder that saved them (``run_dir`` in their
    studio.json). By name, not path: a studio home moved as a whole keeps its runs' names."""
    saved: dict[str, list[Path]] = {}
    for folder in folder_entries(adapters_dir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        run_dir = text_field(read_adapter_meta(folder), "run_dir")
        if run_dir:
            saved.setdefault(Path(run_dir).name, []).append(folder)
    return saved


def same_weights(folder: Path, other: Path) -> bool:
    """Whether two adapter folders hold the same weights, byte for byte: a run that ends or is
    stopped saves its last checkpoint and its library adapter from the same tensors, and with
    early stopping the adapter is the best checkpoint's, not the last one's. Files of different
    sizes cost a stat; equal ones are read once while neither changes (``filecmp`` keeps the answer)."""
    import filecmp

    try:
        return filecmp.cmp(folder / PEFT_WEIGHTS, other / PEFT_WEIGHTS, shallow=False)
    except OSError:
        return False


def resolve_adapter(ref: str | Path) -> Path:
    """A library name or a path to a PEFT folder -> the folder. Raises StudioError otherwise."""
    candidates = [adapters_dir() / str(ref)] if is_plain_name(str(ref)) else []
    candidates.append(Path(ref).expanduser())
    for path in candidates:
        if path.is_dir():
            problem = damage(path)
            if problem:
                raise StudioError(f"adapter {ref!r} cannot be used: {problem}")
            return path.resolve()
    known = ", ".join(r.name for r in list_adapters()) or "the library is empty"
    raise StudioError(f"unknown adapter {str(ref)!r}: not in the library ({known}) and not a PEFT folder")



def library_entry(ref: str | Path) -> Path:
    """A library entry (not any folder): the library is all that edits may change."""
    path = resolve_adapter(ref)
    if path.parent != adapters_dir().resolve():
        raise StudioError(f"{path} is not in the adapter library ({adapters_dir()}): import it first")
    return path


def unique_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is free in the library (case ignored,
    as macOS and Windows ignore it)."""
    taken = {p.name.lower() for p in adapters_dir().iterdir()}
    name, n = base, 1
    while name.lower() in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def check_name(name: str) -> str:
    """``name`` stripped, or a StudioError saying what a library name may hold."""
    name = name.strip()
    if not is_valid_name(name):
        raise StudioError(
            f"adapter name {name!r} may only use letters, digits, '.', '_' and '-', start with a letter "
            f"or digit, and be at most {MAX_NAME} characters"
        )
    return name


def now() -> str:
    """The time stamps entries carry: UTC, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# writing ---------------------------------------------------------------------------------------
def save_adapter(name: str, write_weights: Callable[[Path], None], meta: dict[str, Any],
                 card: Callable[[str], str]) -> Path:
    """Write a new library entry atomically.

    ``write_weights(folder)`` writes the PEFT files (``model.save_pretrained``); ``card(name)``
    returns the model card for the name the entry finally gets. The entry
    appears under its final name only once everything, metadata and card included, is
    on disk; if anything fails, the library is left as it was.
    """
    target = adapters_dir() / unique_name(name)
    with staged_directory(target) as staging:
        write_weights(staging)
        problem = damage(staging)
        if problem:
            raise StudioError(f"saving adapter {target.name} failed: {problem}")
        write_json(staging / ADAPTER_META, meta)
        (staging / "README.md").write_text(card(target.name), encoding="utf-8")
    return target


def rename_adapter(ref: str, new_name: str) -> Path:
    """Give a library entry a new name; its files are untouched apart from the card's title."""
    writable_home()
    path = library_entry(ref)
    new_name = check_name(new_name)
    if new_name == path.name:
        return path
    if new_name.lower() != path.name.lower() and new_name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
        raise StudioError(f"an adapter named {new_name!r} is already in the library")
    target = path.with_name(new_name)
    os.rename(path, target)
    retitle_card(target, path.name, new_name)
    return target


def retitle_card(folder: Path, old: str, new: str) -> None:
    """Put the adapter's new name in its model card's title, where the card starts with the old one."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if text.startswith(f"# {old}\n"):
        write_text(card, f"# {new}\n" + text[len(old) + 3:])


def editable_meta(path: Path) -> dict[str, Any]:
    """The ``studio.json`` of the adapter folder ``path``, to be changed and written back: empty when
    there is none; a StudioError when it is damaged, which is then never written over."""
    meta_file = Path(path) / ADAPTER_META
    if not meta_file.is_file():
        return {}
    meta = read_json_object(meta_file)
    if meta is None:
        # Writing over it would lose whatever it still holds; the user can look at it first.
        raise StudioError(f"{meta_file} is damaged (not a JSON object): fix or remove it, then try again")
    return meta


def _update_meta(ref: str, change: Callable[[dict[str, Any]], None]) -> Path:
    writable_home()
    path = library_entry(ref)
    meta = editable_meta(path)
    change(meta)
    write_json(path / ADAPTER_META, meta)
    return path


def clean_tags(tags: list[str]) -> list[str]:
    """Tags stripped, without empties and repeats, in the order given."""
    cleaned: list[str] = []
    for tag in tags:
        tag = " ".join(str(tag).replace(",", " ").split())
        if tag and tag.lower() not in (t.lower() for t in cleaned):
            cleaned.append(tag)
    return cleaned


def set_tags(ref: str, tags: list[str]) -> list[str]:
    cleaned = clean_tags(tags)
    _update_meta(ref, lambda meta: meta.__setitem__("tags", cleaned))
    return cleaned


def set_notes(ref: str, notes: str) -> None:
    _update_meta(ref, lambda meta: meta.__setitem__("notes", notes.rstrip()))


def chat_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The adapter's chat settings from its studio.json (``read_adapter_meta``), by the names of
    SETTINGS and in their order. studio.json is a user's file: a setting the chat could not use
    (a wrong type, out of range, an unknown name) is left out, as if it were not set."""
    stored = meta.get(CHAT_SETTINGS)
    if not isinstance(stored, dict):
        return {}
    kept = {}
    for name in SETTINGS:
        if name not in stored:
            continue
        try:
            check_setting(name, stored[name])
        except StudioError:
            continue
        kept[name] = stored[name]
    return kept


def set_chat_settings(ref: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keep ``settings`` (any of SETTINGS; a seed of None is random) as the library entry's chat
    settings, over the ones it has; returns all it has now. Each is checked as the chat checks it,
    every one before anything is written: a bad value changes nothing."""
    for name, value in settings.items():
        check_setting(name, value)
    kept: dict[str, Any] = {}

    def change(meta: dict[str, Any]) -> None:
        merged = {**chat_settings(meta), **settings}
        kept.update((name, merged[name]) for name in SETTINGS if name in merged)
        meta[CHAT_SETTINGS] = kept

    _update_meta(ref, change)
    return kept


def clear_chat_settings(ref: str) -> None:
    """Forget the library entry's chat settings: it chats with whatever the chat is set to."""
    _update_meta(ref, lambda meta: meta.pop(CHAT_SETTINGS, None))


def record_evaluation(ref: str, key: str, summary: dict[str, Any]) -> Path:
    """Keep an evaluation's ``summary`` (engine.adapters.evaluations gives its shape) in the library
    entry's studio.json under ``key``, the evaluation set's hash: the same set again replaces its
    entry, another set adds one. Library entries only (``library_entry``): a PEFT folder elsewhere or a
    run's checkpoint is not the library's to change. A damaged studio.json is refused and left as it is."""
    def change(meta: dict[str, Any]) -> None:
        stored = meta.get(EVALUATIONS)
        meta[EVALUATIONS] = {**(stored if isinstance(stored, dict) else {}), key: summary}

    return _update_meta(ref, change)


def duplicate_adapter(ref: str, new_name: Optional[str] = None) -> Path:
    """A full copy of a library entry under a new name (``NAME-copy`` by default)."""
    writable_home()
    path = library_entry(ref)
    name = check_name(new_name) if new_name else unique_name(f"{path.name}-copy")
    if new_name and name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
        raise StudioError(f"an adapter named {name!r} is already in the library")
    with staged_directory(adapters_dir() / name) as staging:
        copy_regular_files(path, staging)
        meta = read_adapter_meta(staging)
        meta.update(duplicated_from=path.name, created=now())
        write_json(staging / ADAPTER_META, meta)
    return adapters_dir() / name


def copy_regular_files(source: Path, target: Path) -> None:
    """Copy plain files (and their folders); pickle files are left behind, never read."""
    for item in sorted(source.rglob("*")):
        if item.is_symlink() or item.name.startswith(".") or item.suffix.lower() in _PICKLE_SUFFIXES:
            continue
        destination = target / item.relative_to(source)
        if item.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        elif item.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, destination)
