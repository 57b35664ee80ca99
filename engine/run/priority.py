"""The CPU priority of training processes."""

from __future__ import annotations

import os

TRAINING_NICENESS = 10


def yield_cpu_to_the_desktop() -> None:
    """Run at a lower CPU priority: training takes every cycle that is free, but the
    studio's window (and the rest of the desktop) gets the CPU first when it needs it.

    Absolute, not relative: a run forked by the warm-start standby, which already lowered
    its own priority, must not drop a second notch."""
    if not hasattr(os, "nice"):
        return
    try:
        current = os.nice(0)
        if current < TRAINING_NICENESS:
            os.nice(TRAINING_NICENESS - current)
    except OSError:
        pass  # not permitted here; training still runs, at normal priority
