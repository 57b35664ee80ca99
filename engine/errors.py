"""The one exception type whose message is meant for the user."""

from __future__ import annotations


class StudioError(Exception):
    """A problem the user can act on; its message is one readable line.

    The CLI prints it as-is and exits non-zero; the studio shows it in the window.
    Anything else that escapes is a bug and is reported as such.
    """


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's first line (or its type's name when it says nothing), for a one-line
    message; cut at a word before ``limit`` characters when given."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if limit is None or len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + "…"
