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
        raise StudioError(f"{name} must be a positive number, got {shown(value)}")
    if kind is int and int(value) != value:
        raise StudioError(f"{name} must be a whole number, got {shown(value)}")


def fraction(name: str, value: Any, *, high_open: bool = False) -> None:
    """Refuse anything outside [0, 1] (or [0, 1) when ``high_open``)."""
    if not is_number(value) or value < 0 or value > 1 or (high_open and value == 1):
        interval = "[0, 1)" if high_open else "[0, 1]"
        raise StudioError(f"{name} must be in {interval}, got {shown(value)}")


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
        raise StudioError(f"{name} must be {bounds}, got {shown(value)}")
    return float(value)


def whole(name: str, value: Any, low: int = 1, high: Optional[int] = None) -> int:
    """``value`` when it is a whole number (an int, not a bool nor 16.0) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudioError(f"{name} must be a whole number, got {shown(value)}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low:,} and {high:,}" if high is not None else f"at least {low:,}"
        raise StudioError(f"{name} must be {bounds}, got {value:,}")
    return value


# The text a user typed for a number: Python's float() also takes "nan", "inf" and "1e999"
# (which is inf), and int() takes "1_000"; what reaches the engine is a finite number.
def parse_number(name: str, text: str) -> float:
    """The finite number ``text`` spells; refused with a line naming ``name`` otherwise."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise StudioError(f"{name} must be a number, got {shown(text)}") from None
    if not math.isfinite(value):
        raise StudioError(f"{name} must be a finite number, got {shown(text)}")
    return value


def parse_whole(name: str, text: str) -> int:
    """The whole number ``text`` spells (digits, an optional sign); refused otherwise."""
    stripped = str(text).strip()
    digits = stripped[1:] if stripped[:1] in "+-" else stripped
    if not digits.isascii() or not digits.isdigit() or len(digits) > 30:
        raise StudioError(f"{name} must be a whole number, got {shown(text)}")
    return int(stripped)


# Ceilings no real run reaches, shared by the run config and the memory plan: a value past one
# is a typo or an attack, and would only fail later (out of memory, an overflow) or run for ever.
MAX_RANK = 4096
MAX_BATCH = 1 << 14  # the batch size, and the gradient accumulation
MAX_LENGTH = 1 << 21  # tokens in a row
MAX_VIRTUAL_TOKENS = 4096
MAX_STEPS = 10 ** 9  # steps, and step counts such as warm-up or checkpoint intervals
MAX_SEED = 2 ** 32 - 1  # numpy's seeds stop here
MAX_TEXT = 4096  # characters in a path or a short setting (PATH_MAX on Linux)


def text(name: str, value: Any, *, limit: int = MAX_TEXT, lines: bool = False) -> str:
    """``value`` when it is a string of at most ``limit`` characters with no control characters
    (line breaks and tabs too when ``lines``): what a path or a setting read from a file must be."""
    if not isinstance(value, str):
        raise StudioError(f"{name} must be text, got {shown(value)}")
    if len(value) > limit:
        raise StudioError(f"{name} is {len(value):,} characters long; at most {limit:,} are allowed")
    allowed = "\n\t" if lines else ""
    if any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value):
        raise StudioError(f"{name} must not hold control characters, got {shown(value)}")
    return value


def shown(value: Any) -> str:
    """A value as a message quotes it: its repr, cut short."""
    quoted = repr(value)
    return quoted if len(quoted) <= 80 else quoted[:77] + "..."
