"""Numbers from users and from files, checked once at the edge: finite, of the right kind, in
range. Every refusal is a ``StudioError`` whose message names the setting and the value."""

from __future__ import annotations

import math
from typing import Any, Optional

from engine.errors import StudioError


def is_number(value: Any) -> bool:
    """A finite int or float (``True`` / ``False`` are not numbers here, nor are nan and inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive(name: str, value: Any, kind: type = int) -> None:
    """Refuse anything but a positive number (a whole one unless ``kind`` is float)."""
    if not is_number(value) or value <= 0:
        raise StudioError(f"{name} must be a positive number, got {value!r}")
    if kind is int and int(value) != value:
        raise StudioError(f"{name} must be a whole number, got {value!r}")


def fraction(name: str, value: Any, *, high_open: bool = False) -> None:
    """Refuse anything outside [0, 1] (or [0, 1) when ``high_open``)."""
    if not is_number(value) or value < 0 or value > 1 or (high_open and value == 1):
        interval = "[0, 1)" if high_open else "[0, 1]"
        raise StudioError(f"{name} must be in {interval}, got {value!r}")


def in_range(name: str, value: Any, low: Optional[float] = None, high: Optional[float] = None) -> float:
    """``value`` as a float when it is a finite number within [low, high] (either end may be open
    by passing None); refused otherwise."""
    if not is_number(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"between {low:g} and {high:g}"
        elif low is not None:
            bounds = f"at least {low:g}"
        elif high is not None:
            bounds = f"at most {high:g}"
        else:
            bounds = "a finite number"
        raise StudioError(f"{name} must be {bounds}, got {value!r}")
    return float(value)
