"""The names people give to what the studio keeps (adapters, model-store entries, runs): one rule,
checked against the whole string."""

from __future__ import annotations

import re

MAX_NAME = 80
# Safe as a folder name on every platform. Always matched whole (``fullmatch``): ``^...$`` with
# ``match`` would also take a name ending in a newline.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_plain_name(text: str) -> bool:
    """Whether ``text`` reads as a name rather than a path: letters, digits, '.', '_' and '-',
    starting with a letter or digit (any length)."""
    return _PLAIN_NAME.fullmatch(text) is not None


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may name an adapter, a model-store entry or a run: a plain name of at
    most ``MAX_NAME`` characters."""
    return isinstance(name, str) and len(name) <= MAX_NAME and is_plain_name(name)
