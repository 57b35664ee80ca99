"""The engine's deliberate garbage collections, and the thread they run on.

The engine collects on purpose where a model's reference cycles hold memory that is wanted back at
once: a chat session closed (its model, before a training run needs the GPU) and a merge checked.
Code that can run in a program with a Qt window calls ``collect()`` here rather than
``gc.collect()``: by default the same thing, where it is called; a windowed program routes it to its
UI thread (``route``, ``studio.garbage``), because a collection deletes every piece of garbage it
finds, the Qt objects of closed windows and finished tasks included, and Qt objects deleted on a
worker thread can deadlock the window. Training children and the warm-start standby have no window
and call ``gc.collect()`` themselves.
"""

from __future__ import annotations

import gc
from typing import Callable

_collector: Callable[[], object] = gc.collect


def collect() -> None:
    """A full collection, on the thread the program chose (this one unless routed)."""
    _collector()


def route(collector: Callable[[], object] | None) -> None:
    """Run ``collect()`` through ``collector`` from now on; None: back to ``gc.collect`` here."""
    global _collector
    _collector = collector or gc.collect
