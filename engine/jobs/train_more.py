"""Train more: the config that continues a finished run for more steps or epochs."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Optional

from engine.core.choices import ENDED_WELL
from engine.errors import StudioError
from engine.jobs.summary import load_config, summarize_run
from engine.run.config import RunConfig


def more_training(run_dir: Path, *, steps: Optional[int] = None, epochs: Optional[float] = None) -> RunConfig:
    """The config that continues ``run_dir`` for ``steps`` more steps or ``epochs`` more epochs."""
    if (steps is None) == (epochs is None):
        raise StudioError("say how much more to train: a number of steps or of epochs")
    config = load_config(run_dir)
    summary = summarize_run(run_dir)
    if summary is None or summary.status not in ENDED_WELL:
        state = summary.status if summary else "unreadable"
        raise StudioError(f"run {run_dir.name} is {state}: only a completed or stopped run can train more "
                          "(resume an interrupted one)")
    last = summary.checkpoint_step
    if not last:
        raise StudioError(f"run {run_dir.name} kept no checkpoint to continue from")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise StudioError(f"more steps must be a whole number of at least 1, got {steps!r}")
        return replace(config, max_steps=last + steps, schedule_start=last)
    if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0:
        raise StudioError(f"more epochs must be a positive number, got {epochs!r}")
    if config.max_steps is None:
        return replace(config, epochs=config.epochs + epochs, schedule_start=last)
    per_epoch = summary.steps_per_epoch
    if not per_epoch:
        raise StudioError(f"run {run_dir.name} does not record its epoch length: ask for more steps instead")
    return replace(config, max_steps=last + math.ceil(epochs * per_epoch), schedule_start=last)
