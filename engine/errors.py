"""The one exception type whose message is meant for the user."""

from __future__ import annotations


class StudioError(Exception):
    """A problem the user can act on; its message is one readable line.

    The CLI prints it as-is and exits non-zero; the studio shows it in the window.
    Anything else that escapes is a bug and is reported as such.
    """


# torch refuses a pickle that holds more than tensors, and advises loading it again with
# weights_only=False, which would run whatever the file holds: that advice never reaches a user.
REFUSED_PICKLE = ("a file holds a pickle with more than plain tensors, which could run code as it loads: LoRA "
                  "Studio never loads it")


def is_refused_pickle(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is torch refusing an unsafe pickle."""
    while exc is not None:
        if "weights_only" in str(exc) or type(exc).__name__ == "UnpicklingError":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's first line (or its type's name when it says nothing), for a one-line
    message; cut at a word before ``limit`` characters when given."""
    text = REFUSED_PICKLE if is_refused_pickle(exc) else str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    if limit is None or len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0] + "…"
