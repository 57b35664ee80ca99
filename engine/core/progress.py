"""Progress callbacks: the one signature long operations report through, and the one that says nothing."""

from __future__ import annotations

from typing import Callable

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


def quiet(done: int, total: int, message: str) -> None:
    """The progress function when the caller wants none."""
