"""The adapter library: PEFT folders under ``adapters_dir()``, one per trained adapter.

Each entry holds ``adapter_config.json`` + ``adapter_model.safetensors`` (stock PEFT,
loadable by ``PeftModel.from_pretrained``), ``studio.json`` (what the studio knows
about how it was made) and a ``README.md`` model card. The library is the files on
disk: listing reads JSON only and never imports torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.atomic import staged_directory, write_json
from engine.errors import StudioError
from engine.paths import adapters_dir

ADAPTER_META = "studio.json"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_adapter_meta(path: Path) -> dict[str, Any]:
    """The studio's metadata for an adapter folder; empty for adapters made elsewhere."""
    meta_file = Path(path) / ADAPTER_META
    if not meta_file.is_file():
        return {}
    try:
        data = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _damage(path: Path) -> Optional[str]:
    if not (path / PEFT_CONFIG).is_file():
        return f"missing {PEFT_CONFIG}"
    if not (path / PEFT_WEIGHTS).is_file():
        return f"missing {PEFT_WEIGHTS}"
    try:
        json.loads((path / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{PEFT_CONFIG} is not valid JSON"
    return None


def _record(path: Path) -> AdapterRecord:
    meta = read_adapter_meta(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    loss = meta.get("final_loss")
    return AdapterRecord(
        name=path.name,
        path=str(path),
        base_model=meta.get("base_model"),
        method=meta.get("method"),
        rank=meta.get("rank"),
        dataset=meta.get("dataset"),
        created=meta.get("created"),
        steps=meta.get("steps"),
        final_loss=float(loss) if isinstance(loss, (int, float)) else None,
        size_bytes=size,
        damaged=_damage(path),
    )


def list_adapters() -> list[AdapterRecord]:
    """Every adapter in the library, newest first. Staging folders (dot-names) are skipped."""
    folders = [p for p in adapters_dir().iterdir() if p.is_dir() and not p.name.startswith(".")]
    records = [_record(p) for p in folders]
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


def unique_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``... whichever is free in the library."""
    root = adapters_dir()
    name, n = base, 1
    while (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


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
