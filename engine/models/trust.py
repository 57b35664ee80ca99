"""Models that bring their own Python code: run it only after the user said yes, per model.

A Hugging Face folder whose ``config.json`` (or tokenizer config) has an ``auto_map``
names classes in ``.py`` files of its own, which transformers executes when asked to
(``trust_remote_code``). The studio asks once per model and remembers the answer in
``trusted_code.json`` in its home folder, against a hash of that code: code changed
since the user agreed is code the user has not agreed to.

The hash covers every ``.py`` file under the folder, in subfolders too, and the
``auto_map`` itself. What transformers would import from elsewhere is refused, so it
can never be trusted: a class from another repository (``other/repo--module.Class``),
a module path that leaves the folder, a module or relative import with no file in it.

Reading only JSON and hashing a few small files, nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from engine.core.atomic import write_json
from engine.errors import StudioError
from engine.paths import studio_home

TRUST_FILE = "trusted_code.json"
_CONFIGS = ("config.json", "tokenizer_config.json")
# With trust_remote_code, transformers also runs a model's own generate function from here.
_CUSTOM_GENERATE = "custom_generate/generate.py"
# The relative imports transformers follows and copies beside a module (get_relative_imports
# in transformers/dynamic_module_utils.py): the same two patterns, so the same files.
_RELATIVE_IMPORTS = (re.compile(r"^\s*import\s+\.(\S+)\s*$", re.MULTILINE),
                     re.compile(r"^\s*from\s+\.(\S+)\s+import", re.MULTILINE))


def _json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def needs_code(folder: Path) -> bool:
    """Whether the model's configs ask for classes of its own (an ``auto_map``)."""
    return any(_json(Path(folder) / name).get("auto_map") for name in _CONFIGS)


def _auto_maps(folder: Path) -> dict[str, Any]:
    """Each config's ``auto_map``, by config file name, for those that have one."""
    maps = {name: _json(folder / name).get("auto_map") for name in _CONFIGS}
    return {name: auto_map for name, auto_map in maps.items() if auto_map}


def _references(folder: Path) -> Iterator[tuple[str, str]]:
    """(config file, class reference) for every class an ``auto_map`` names.

    A value is ``module.Class`` or, for tokenizers, a list of them (slow, fast; either may be
    null); an old tokenizer config gives the list itself instead of a mapping."""
    for name, auto_map in _auto_maps(folder).items():
        if isinstance(auto_map, dict):
            values = list(auto_map.values())
        elif isinstance(auto_map, list):
            values = [auto_map]
        else:
            raise StudioError(f"{folder.name}: the auto_map in {name} is not a mapping of class names")
        for value in values:
            for reference in value if isinstance(value, (list, tuple)) else [value]:
                if reference is None:
                    continue
                if not isinstance(reference, str):
                    raise StudioError(f"{folder.name}: the auto_map in {name} names {reference!r}, not a class")
                yield name, reference


def _plain_relative(path: str) -> bool:
    """A path inside the folder: relative, forward slashes, no empty, '.' or '..' part, no drive."""
    parts = path.split("/")
    return (bool(path) and "\\" not in path and ":" not in path
            and all(part not in ("", ".", "..") for part in parts))


def _python_files(folder: Path) -> dict[str, Path]:
    """Every regular ``.py`` file under ``folder`` (symlinked folders are not entered), by its
    path relative to it: what the hash covers."""
    found = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            file = Path(root) / name
            # A FIFO or a device named x.py would hang the hash; transformers could not import it either.
            if name.endswith(".py") and file.is_file():
                found[file.relative_to(folder).as_posix()] = file
    return found


def _module_of(folder: Path, source: str, reference: str) -> str:
    """The file (relative to ``folder``) that an ``auto_map`` reference makes transformers import,
    or a StudioError when that file is not one the hash covers."""
    if "--" in reference:
        raise StudioError(f"{folder.name}: its {source} takes {reference!r} from another repository, whose "
                          "code LoRA Studio cannot check or trust: only code inside the model's folder can run")
    module, dot, class_name = reference.rpartition(".")
    # transformers splits the reference at its one dot: 'module.Class', the module a path with '/'.
    if not dot or "." in module or not class_name:
        raise StudioError(f"{folder.name}: its {source} names {reference!r}, which is not a module.Class name")
    if not _plain_relative(module):
        raise StudioError(f"{folder.name}: its {source} names {reference!r}, whose module is outside the "
                          "model's folder: only code inside the folder can run")
    return f"{module}.py"


def _imports_of(folder: Path, module: str, files: dict[str, Path]) -> list[str]:
    """``module`` and every file its relative imports reach, as transformers resolves them (each
    import relative to the folder of ``module``); a StudioError for one that is not a covered file."""
    base = PurePosixPath(module).parent
    reached, pending = [], [module]
    while pending:
        current = pending.pop()
        if current in reached:
            continue
        if current not in files:
            raise StudioError(f"{folder.name}: its code needs {current}, which is not a file in the model's folder")
        reached.append(current)
        text = files[current].read_text(encoding="utf-8", errors="replace")
        for pattern in _RELATIVE_IMPORTS:
            for name in pattern.findall(text):
                target = (base / f"{name}.py").as_posix()
                if name.startswith(".") or not _plain_relative(target):
                    raise StudioError(f"{folder.name}: {current} imports .{name}, from outside the model's "
                                      "folder: only code inside the folder can run")
                pending.append(target)
    return reached


def code_files(folder: Path) -> list[Path]:
    """The model's own Python files when it asks for classes of its own, else none; a StudioError
    when its ``auto_map`` would make transformers run code that these files do not hold."""
    folder = Path(folder)
    if not needs_code(folder):
        return []
    files = _python_files(folder)
    modules = [_module_of(folder, source, reference) for source, reference in _references(folder)]
    if _CUSTOM_GENERATE in files:
        modules.append(_CUSTOM_GENERATE)
    for module in modules:
        _imports_of(folder, module, files)
    return [files[name] for name in sorted(files)]


def code_names(folder: Path) -> list[str]:
    """``code_files`` as paths relative to the folder, for telling the user what would run."""
    return [file.relative_to(folder).as_posix() for file in code_files(Path(folder))]


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    # The auto_map too: pointing it at another class is a change the user has not agreed to.
    digest.update(json.dumps(_auto_maps(folder), sort_keys=True).encode() + b"\0")
    for file in code_files(folder):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _records() -> dict[str, str]:
    data = _json(studio_home() / TRUST_FILE)
    return {str(key): str(value) for key, value in data.items() if isinstance(value, str)}


def is_trusted(folder: Path) -> bool:
    folder = Path(folder).resolve()
    return _records().get(str(folder)) == _digest(folder)


def trust(folder: Path) -> None:
    """Remember that the user allows this model's code, as it is now."""
    folder = Path(folder).resolve()
    if not needs_code(folder):
        raise StudioError(f"{folder.name} runs no code of its own: there is nothing to trust")
    records = _records()
    records[str(folder)] = _digest(folder)
    write_json(studio_home() / TRUST_FILE, records)


def revoke(folder: Path) -> None:
    records = _records()
    if records.pop(str(Path(folder).resolve()), None) is not None:
        write_json(studio_home() / TRUST_FILE, records)


def check(folder: Path) -> None:
    """Refuse a model whose own code the user has not agreed to run."""
    if needs_code(folder) and not is_trusted(folder):
        files = ", ".join(code_names(folder)) or "files named in its auto_map"
        raise StudioError(f"{Path(folder).name} runs its own Python code ({files}), which LoRA Studio runs only "
                          f"once you agree: lora-studio models trust {folder}, or choose Run its code when the studio asks")


def load_options(folder: Path) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` on ``folder``: its own code only when trusted.

    Always an explicit yes or no: left unset, transformers would ask on the terminal itself."""
    return {"trust_remote_code": needs_code(folder) and is_trusted(folder)}
