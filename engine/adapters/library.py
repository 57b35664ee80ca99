"""The adapter library: PEFT folders under ``adapters_dir()``, one per adapter.

Each entry holds ``adapter_config.json`` + ``adapter_model.safetensors`` (stock PEFT,
loadable by ``PeftModel.from_pretrained``), ``studio.json`` (what the studio knows
about how it was made, plus the user's tags and notes) and a ``README.md`` model card.
The library is the files on disk: listing reads JSON and safetensors headers only and
never imports torch.

Every change is a rename or an atomic write, so a crash leaves an entry either as it
was or as it was meant to become. Deleting moves the folder into ``.trash`` (hidden,
like every dot-folder) from where it can be restored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional

from engine.core.atomic import staged_directory, write_json, write_text
from engine.core.safetensors_files import safetensors_problem
from engine.errors import StudioError
from engine.paths import adapters_dir

ADAPTER_META = "studio.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
TRASH = ".trash"
_TRASH_INFO = "deleted.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_NAME = 80


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrashEntry:
    id: str
    name: str  # the adapter's name when it was deleted
    deleted: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# reading ---------------------------------------------------------------------------------------
def _read_json_object(file: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_adapter_meta(path: Path) -> dict[str, Any]:
    """The studio's metadata for an adapter folder; empty for adapters made elsewhere."""
    return _read_json_object(Path(path) / ADAPTER_META) or {}


def read_peft_config(path: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict; empty when it is missing or not a JSON object."""
    return _read_json_object(Path(path) / PEFT_CONFIG) or {}


def _damage(path: Path) -> Optional[str]:
    if not (path / PEFT_CONFIG).is_file():
        return f"missing {PEFT_CONFIG}"
    if not (path / PEFT_WEIGHTS).is_file():
        if any((path / f"adapter_model{suffix}").is_file() for suffix in _PICKLE_SUFFIXES):
            return "its weights are a pickle file (adapter_model.bin), which LoRA Studio never loads"
        return f"missing {PEFT_WEIGHTS}"
    config = _read_json_object(path / PEFT_CONFIG)
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
    alpha = config.get("lora_alpha")
    if peft_type == "LORA" and alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
        return f"{PEFT_CONFIG} says lora_alpha={alpha!r}: it must be a number"
    return None


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# studio.json is a user's file like any other: a field of the wrong type is treated as absent.
def _string(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def final_eval_loss(meta: dict[str, Any]) -> Optional[float]:
    """The last evaluation loss a run recorded, if it evaluated at all."""
    recorded = _number(meta.get("final_eval_loss"))
    if recorded is not None:
        return recorded
    history = meta.get("eval_history")
    if isinstance(history, list) and history and isinstance(history[-1], (list, tuple)) and len(history[-1]) == 2:
        return _number(history[-1][1])
    return None


def _method(meta: dict[str, Any], config: dict[str, Any]) -> Optional[str]:
    if _string(meta.get("method")):
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
    dataset = _string(meta.get("dataset"))
    tags = meta.get("tags")
    return AdapterRecord(
        name=path.name,
        path=str(path),
        base_model=_string(meta.get("base_model")) or _string(config.get("base_model_name_or_path")),
        method=_method(meta, config),
        rank=_integer(meta.get("rank")) or _integer(config.get("r")),
        dataset=Path(dataset).name if dataset else None,
        created=_string(meta.get("created")),
        steps=_integer(meta.get("steps")),
        final_loss=_number(meta.get("final_loss")),
        size_bytes=size,
        damaged=_damage(path),
        eval_loss=final_eval_loss(meta),
        tags=[str(tag) for tag in tags] if isinstance(tags, list) else [],
    )


def list_adapters() -> list[AdapterRecord]:
    """Every adapter in the library, newest first. Staging and trash folders (dot-names) are skipped.

    A folder that vanishes while it is being read (deleted by another window) is left out;
    one that cannot be read is listed as damaged.
    """
    records = []
    for folder in adapters_dir().iterdir():
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


def resolve_adapter(ref: str | Path) -> Path:
    """A library name or a path to a PEFT folder -> the folder. Raises StudioError otherwise."""
    candidates = [adapters_dir() / str(ref)] if _is_plain_name(str(ref)) else []
    candidates.append(Path(ref).expanduser())
    for path in candidates:
        if path.is_dir():
            problem = _damage(path)
            if problem:
                raise StudioError(f"adapter {ref!r} cannot be used: {problem}")
            return path.resolve()
    known = ", ".join(r.name for r in list_adapters()) or "the library is empty"
    raise StudioError(f"unknown adapter {str(ref)!r}: not in the library ({known}) and not a PEFT folder")


def _is_plain_name(ref: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", ref)) and ref not in (".", "..")


def _library_entry(ref: str | Path) -> Path:
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
    if not (_is_plain_name(name) and len(name) <= _MAX_NAME):
        raise StudioError(
            f"adapter name {name!r} may only use letters, digits, '.', '_' and '-', start with a letter "
            f"or digit, and be at most {_MAX_NAME} characters"
        )
    return name


def _now() -> str:
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
        problem = _damage(staging)
        if problem:
            raise StudioError(f"saving adapter {target.name} failed: {problem}")
        write_json(staging / ADAPTER_META, meta)
        (staging / "README.md").write_text(card(target.name), encoding="utf-8")
    return target


def rename_adapter(ref: str, new_name: str) -> Path:
    """Give a library entry a new name; its files are untouched apart from the card's title."""
    path = _library_entry(ref)
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


def _update_meta(ref: str, change: Callable[[dict[str, Any]], None]) -> Path:
    path = _library_entry(ref)
    meta_file = path / ADAPTER_META
    if meta_file.is_file():
        meta = _read_json_object(meta_file)
        if meta is None:
            # Writing over it would lose whatever it still holds; the user can look at it first.
            raise StudioError(f"{meta_file} is damaged (not a JSON object): fix or remove it, then try again")
    else:
        meta = {}
    change(meta)
    write_json(meta_file, meta)
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


def duplicate_adapter(ref: str, new_name: Optional[str] = None) -> Path:
    """A full copy of a library entry under a new name (``NAME-copy`` by default)."""
    path = _library_entry(ref)
    name = check_name(new_name) if new_name else unique_name(f"{path.name}-copy")
    if new_name and name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
        raise StudioError(f"an adapter named {name!r} is already in the library")
    with staged_directory(adapters_dir() / name) as staging:
        _copy_regular_files(path, staging)
        meta = read_adapter_meta(staging)
        meta.update(duplicated_from=path.name, created=_now())
        write_json(staging / ADAPTER_META, meta)
    return adapters_dir() / name


# trash -----------------------------------------------------------------------------------------
def _trash_dir() -> Path:
    trash = adapters_dir() / TRASH
    trash.mkdir(exist_ok=True)
    return trash


def delete_adapter(ref: str) -> TrashEntry:
    """Move a library entry into the trash (one rename); ``restore_adapter`` brings it back."""
    path = _library_entry(ref)
    entry_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    holder = _trash_dir() / entry_id
    holder.mkdir()
    entry = TrashEntry(id=entry_id, name=path.name, deleted=_now(),
                       size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    write_json(holder / _TRASH_INFO, entry.to_dict())
    os.rename(path, holder / path.name)
    return entry


def list_trash() -> list[TrashEntry]:
    """What is in the trash, most recently deleted first."""
    entries = []
    for holder in _trash_dir().iterdir():
        info = _read_json_object(holder / _TRASH_INFO)
        if info is None or not (holder / str(info.get("name"))).is_dir():
            continue
        entries.append(TrashEntry(id=holder.name, name=str(info["name"]), deleted=str(info.get("deleted", "")),
                                  size_bytes=int(info.get("size_bytes") or 0)))
    return sorted(entries, key=lambda e: e.deleted, reverse=True)


def restore_adapter(entry_id: str) -> Path:
    """Put a deleted adapter back under its old name (or ``NAME-2``... if that was taken since)."""
    match = next((e for e in list_trash() if e.id == entry_id), None)
    if match is None:
        raise StudioError(f"nothing in the trash with id {entry_id!r}")
    holder = _trash_dir() / entry_id
    target = adapters_dir() / unique_name(match.name)
    os.rename(holder / match.name, target)
    shutil.rmtree(holder, ignore_errors=True)
    return target


def empty_trash() -> int:
    """Delete everything in the trash for good; the number of adapters removed."""
    removed = 0
    for holder in list(_trash_dir().iterdir()):
        # Rename first, so a crash halfway never leaves a half-deleted entry that looks restorable.
        doomed = holder.with_name(f".{holder.name}.removing")
        os.rename(holder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed += 1
    return removed


# import and export -----------------------------------------------------------------------------
def validate_adapter_folder(path: Path) -> dict[str, Any]:
    """The folder's PEFT config, or a StudioError saying why this peft cannot use it.

    Checks what a load would trip over, before anything enters the library: the config
    (present, JSON, a method and settings this peft knows), and complete safetensors weights.
    """
    config_file = path / PEFT_CONFIG
    if not config_file.is_file():
        raise StudioError(f"{path} is not a PEFT adapter: it has no {PEFT_CONFIG}")
    config = _read_json_object(config_file)
    if config is None:
        raise StudioError(f"{PEFT_CONFIG} in {path} is not a valid JSON object")
    _check_peft_config(config)
    problem = _damage(path)
    if problem:
        raise StudioError(f"adapter {path.name} cannot be used: {problem}")
    return config


def _check_peft_config(config: dict[str, Any]) -> None:
    import dataclasses
    from importlib.metadata import version

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    installed = version("peft")
    written_by = config.get("peft_version")
    if isinstance(written_by, str) and _version_key(written_by) > _version_key(installed):
        origin = f"was written by peft {written_by}, newer than the peft {installed} here, and"
    else:
        origin = "probably comes from a newer peft: it"
    upgrade = "upgrade peft (pip install -U peft) to use this adapter"
    peft_type = config.get("peft_type")
    if peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
        raise StudioError(f"{PEFT_CONFIG} {origin} names a method peft {installed} does not know "
                          f"({peft_type!r}): {upgrade}")
    known = {f.name for f in dataclasses.fields(PEFT_TYPE_TO_CONFIG_MAPPING[peft_type])}
    unknown = sorted(set(config) - known)
    if unknown:
        # peft would drop these settings with a warning and load something other than what was trained.
        raise StudioError(f"{PEFT_CONFIG} {origin} uses settings peft {installed} does not know "
                          f"({', '.join(unknown)}): {upgrade}")


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def import_adapter(source: str | Path, name: Optional[str] = None) -> Path:
    """Copy an adapter folder, or a zip holding one, into the library under a free name.

    Anything wrong (a zip entry escaping its folder, a link, a newer peft's config, truncated
    weights) is refused before the entry appears; the library is left as it was.
    """
    source = Path(source).expanduser()
    if not source.exists():
        raise StudioError(f"no such folder or file: {source}")
    if name is not None:
        name = check_name(name)
    scratch = adapters_dir() / f".import-{uuid.uuid4().hex[:8]}"
    try:
        if source.is_dir():
            root = source
        elif zipfile.is_zipfile(source):
            scratch.mkdir()
            _safe_extract(source, scratch)
            root = _adapter_root(scratch, source)
        else:
            raise StudioError(f"{source} is neither an adapter folder nor a zip file")
        _refuse_links(root)
        config = validate_adapter_folder(root)
        wanted = name or _default_name(source if root in (source, scratch) else root)
        if name and name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
            raise StudioError(f"an adapter named {name!r} is already in the library")
        target = adapters_dir() / (name or unique_name(wanted))
        with staged_directory(target) as staging:
            _copy_regular_files(root, staging)
            if not read_adapter_meta(staging):
                write_json(staging / ADAPTER_META, _imported_meta(config, source))
            if not (staging / "README.md").is_file():
                (staging / "README.md").write_text(_imported_card(target.name, config, source), encoding="utf-8")
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _default_name(named_after: Path) -> str:
    """A library name from a folder's name or a zip's stem."""
    stem = named_after.name if named_after.is_dir() else named_after.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip("-._")[:_MAX_NAME]
    return cleaned or "imported-adapter"


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract a zip, refusing absolute paths, '..' and links before writing a single file."""
    with zipfile.ZipFile(archive) as handle:
        members = handle.infolist()
        total = 0
        for member in members:
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise StudioError(f"{archive.name} is refused: entry {member.filename!r} points outside its folder")
            if stat.S_ISLNK(member.external_attr >> 16):
                raise StudioError(f"{archive.name} is refused: entry {member.filename!r} is a symbolic link")
            total += member.file_size
        free = shutil.disk_usage(into).free
        if total > free:
            raise StudioError(f"{archive.name} unpacks to {total:,} bytes but only {free:,} are free")
        try:
            for member in members:
                target = into.joinpath(*PurePosixPath(member.filename.replace("\\", "/")).parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with handle.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise StudioError(f"{archive.name} cannot be unpacked: {exc}") from None


def _adapter_root(folder: Path, archive: Path) -> Path:
    roots = sorted({config.parent for config in folder.rglob(PEFT_CONFIG)})
    if not roots:
        raise StudioError(f"{archive.name} holds no PEFT adapter (no {PEFT_CONFIG} inside)")
    if len(roots) > 1:
        listed = ", ".join(str(r.relative_to(folder)) for r in roots[:4])
        raise StudioError(f"{archive.name} holds {len(roots)} adapters ({listed}): import them one at a time")
    return roots[0]


def _refuse_links(root: Path) -> None:
    for item in [root, *root.rglob("*")]:
        if item.is_symlink():
            raise StudioError(f"{item} is a symbolic link: LoRA Studio imports only plain files")


def _copy_regular_files(source: Path, target: Path) -> None:
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


def _imported_meta(config: dict[str, Any], source: Path) -> dict[str, Any]:
    return {
        "base_model": config.get("base_model_name_or_path"),
        "method": _method({}, config),
        "rank": config.get("r"),
        "alpha": config.get("lora_alpha"),
        "targets": config.get("target_modules"),
        "imported_from": str(source.resolve()),
        "created": _now(),
    }


def _imported_card(name: str, config: dict[str, Any], source: Path) -> str:
    return (
        f"# {name}\n\nA {config.get('peft_type', 'PEFT')} adapter for "
        f"`{config.get('base_model_name_or_path') or 'an unnamed base model'}`, imported into LoRA Studio "
        f"from `{source.name}`.\n"
    )


def export_adapter(ref: str, output: str | Path, overwrite: bool = False) -> Path:
    """Write a library adapter as a zip holding one folder named after it.

    The zip is written beside its final name and renamed into place, so a reader never
    finds half an archive.
    """
    path = resolve_adapter(ref)
    output = Path(output).expanduser()
    if output.is_dir():
        output = output / f"{path.name}.zip"
    if output.suffix.lower() != ".zip":
        output = output.with_name(output.name + ".zip")
    if output.exists() and not overwrite:
        raise StudioError(f"{output} already exists: choose another file name")
    if not output.parent.is_dir():
        raise StudioError(f"folder {output.parent} does not exist")
    if path in output.resolve().parents:
        raise StudioError("the zip cannot be written inside the adapter's own folder")
    partial = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for item in sorted(path.rglob("*")):
                if item.is_file() and not item.is_symlink():
                    archive.write(item, PurePosixPath(path.name, *item.relative_to(path).parts).as_posix())
        os.replace(partial, output)
    finally:
        if partial.exists():
            partial.unlink()
    return output
