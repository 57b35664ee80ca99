"""Regular expressions from users' files (an adapter's ``target_modules``): matched with the
``regex`` package under a time bound, never handed to Python's ``re``.

``re`` cannot be interrupted: a pattern such as ``(\\w|.)*q_pro`` backtracks for minutes
against one module name. ``regex`` takes a timeout; what does not compile, or runs past
``REGEX_SECONDS`` over all the names it is matched against, is refused in one line.
"""

from __future__ import annotations

import re
import time
from typing import Iterable

import regex

from engine.core.checks import shown
from engine.errors import StudioError

# For one pattern over all the names it is matched against. ``regex`` looks at the clock only now
# and then, so a refusal can take a few times this long; tests lower it.
REGEX_SECONDS = 0.5
MAX_PATTERN = 1000  # characters: a module pattern is a line, not a program
# A "simple" pattern, where peft builds its own regex around a user's text (modules_to_save,
# layers_pattern, rank_pattern keys): no groups, alternation or counted repeats, and at most
# two quantifiers, so matching it is at worst quadratic in the name's length.
_SIMPLE = regex.compile(r"[\w.\-^$*+?\\\[\]]{1,200}")


def matching_names(what: str, pattern: str, names: Iterable[str]) -> list[str]:
    """The ``names`` that ``pattern`` matches whole (as peft matches a string ``target_modules``),
    found within ``REGEX_SECONDS``; StudioError when it is no pattern, or too slow to be one."""
    compiled = _compile(what, pattern)
    deadline = time.monotonic() + REGEX_SECONDS
    matched = []
    for name in names:
        left = deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            if compiled.fullmatch(name, timeout=left):
                matched.append(name)
        except TimeoutError:
            raise StudioError(f"{what} {shown(pattern)} takes too long to match module names (over "
                              f"{REGEX_SECONDS:g} s): write it as a list of module names") from None
    return matched


def is_simple_pattern(pattern: object) -> bool:
    """Whether ``pattern`` is a plain name or a simple pattern (see ``_SIMPLE``)."""
    return (isinstance(pattern, str) and _SIMPLE.fullmatch(pattern) is not None
            and sum(pattern.count(q) for q in "*+?") <= 2)


def _compile(what: str, pattern: object) -> "regex.Pattern[str]":
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise StudioError(f"{what} must be a module pattern of 1 to {MAX_PATTERN} characters, got {shown(pattern)}")
    try:
        re.compile(pattern)  # what peft would accept, so that the two agree on what is a pattern
        return regex.compile(pattern)
    except (re.error, regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise StudioError(f"{what} {shown(pattern)} is not a valid regular expression: {exc}") from None
