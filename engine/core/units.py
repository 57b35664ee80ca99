"""Byte units: reading a memory size a user typed, and writing one for people to read."""

from __future__ import annotations

import math
from typing import Optional

from engine.errors import StudioError

GiB = 1 << 30
MAX_DEVICE_BYTES = 1 << 50  # a petabyte: no single device has that much
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3, "gb": 1000 ** 3,
          "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_bytes(text: str | int) -> int:
    """'24GiB', '24GB', '8000MiB' or a plain number of bytes; GB is 10^9 and GiB 2^30."""
    if isinstance(text, int) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        raw = str(text).strip().lower().replace(" ", "")
        number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
        value_text, unit = number, raw[len(number):]
        try:
            value = float(value_text)
        except ValueError:
            raise StudioError(f"cannot read {text!r} as a memory size: write it like 24GiB, 24GB or 8000MiB") from None
    if unit not in _UNITS:
        raise StudioError(f"unknown memory unit {unit!r} in {text!r}: use B, MB, GB, MiB or GiB")
    size = value * _UNITS[unit]
    if not math.isfinite(size) or size <= 0:
        raise StudioError(f"memory size must be positive, got {text!r}")
    if size > MAX_DEVICE_BYTES:
        raise StudioError(f"memory size {text!r} is beyond any device")
    return int(size)


def human_bytes(value: Optional[float]) -> str:
    """The size in the largest binary unit under 1024 of it: '512 B', '1.5 GiB'; 'n/a' for None."""
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: TiB takes any size")


def gib(value: float, digits: int = 1) -> str:
    """The size in GiB, for figures read side by side (a device's memory, a limit): '7.6 GiB'."""
    return f"{value / GiB:.{digits}f} GiB"
