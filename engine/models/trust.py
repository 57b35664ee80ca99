"""Models that bring their own Python code: run it only after the user said yes, per model.

A Hugging Face folder whose ``config.json`` (or tokenizer config) has an ``auto_map``
names classes in ``.py`` files of its own, which transformers executes when asked to
(``trust_remote_code``). The studio asks once per model and remembers the answer in
``trusted_code.json`` in its home folder, against a hash of those files: code changed
since the user agreed is code the user has not agreed to.

Reading only JSON and hashing a few small files, nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from engine.core.atomic import write_json
from engine.errors import StudioError
from engine.paths import studio_home

TRUST_FILE = "trusted_code.json"
_CONFIGS = ("config.json", "tokenizer_config.json")


def _json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def needs_code(folder: Path) -> bool:
    """Whether the model's configs ask for classes of its own (an ``auto_map``)."""
    return any(_json(Path(folder) / name).get("auto_map") for name in _CONFIGS)


def code_files(folder: Path) -> list[Path]:
    """The model's own Python files, when it asks for its own classes; else none."""
    return sorted(Path(folder).glob("*.py")) if needs_code(folder) else []


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in code_files(folder):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
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
        files = ", ".join(file.name for file in code_files(folder)) or "files named in its auto_map"
        raise StudioError(f"{Path(folder).name} runs its own Python code ({files}), which LoRA Studio runs only "
                          f"once you agree: lora-studio models trust {folder}, or choose Run its code when the studio asks")


def load_options(folder: Path) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` on ``folder``: its own code only when trusted."""
    return {"trust_remote_code": True} if needs_code(folder) and is_trusted(folder) else {}
