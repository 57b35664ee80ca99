"""Safetensors files read by their header alone: what tensors they hold, and whether they are whole.

Models in the store and adapters in the library are both checked this way, without torch and
without reading gigabytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from engine.errors import StudioError

# A safetensors header is JSON describing the tensors; anything bigger is not one.
_MAX_HEADER_BYTES = 100 << 20


def safetensors_header(file: Path) -> dict[str, Any]:
    """The tensors a whole safetensors file describes (name -> dtype, shape, offsets); a StudioError
    says what is wrong with one that is not whole."""
    problem, header = _read_safetensors_header(file)
    if problem:
        raise StudioError(problem)
    return {key: value for key, value in header.items() if key != "__metadata__"}


def tensor_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a whole safetensors file, from its header (no weights read)."""
    return {name: tuple(info["shape"]) for name, info in safetensors_header(file).items()
            if isinstance(info, dict) and isinstance(info.get("shape"), list)}


def safetensors_problem(file: Path) -> Optional[str]:
    """Why ``file`` is not a complete safetensors file, or None when it is.

    Reads the header only: its tensor offsets say how long the file must be, so a
    half-copied file is caught without reading gigabytes.
    """
    return _read_safetensors_header(file)[0]


def _read_safetensors_header(file: Path) -> tuple[Optional[str], dict[str, Any]]:
    try:
        size = file.stat().st_size
        with open(file, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{file.name} is truncated ({size} bytes)", {}
            header_bytes = int.from_bytes(prefix, "little")
            if header_bytes < 2 or header_bytes > min(_MAX_HEADER_BYTES, size - 8):
                return f"{file.name} is truncated or is not a safetensors file", {}
            header = json.loads(handle.read(header_bytes))
    except OSError as exc:
        return f"{file.name} cannot be read: {exc.strerror or exc}", {}
    except ValueError:
        return f"{file.name} has a damaged header (not a safetensors file)", {}
    if not isinstance(header, dict):
        return f"{file.name} has a damaged header (not a safetensors file)", {}
    try:
        end = max((int(info["data_offsets"][1]) for key, info in header.items() if key != "__metadata__"),
                  default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return f"{file.name} has a damaged header (bad tensor offsets)", {}
    expected = 8 + header_bytes + end
    if size < expected:
        return f"{file.name} is truncated: {size:,} of {expected:,} bytes", {}
    return None, header
