"""``python -m engine.train RUN_DIR``: take the run folder, refuse a run that another process
trains or that has nothing left to train, and only then import the training stack and train.

The refusals come first because they need nothing of the stack: a second ``python -m engine.train``
(or torchrun) typed on a busy or finished run is told so at once, not after the 10-15 s that
importing torch, transformers and peft takes on two cores. The run is held from the check to
the end of training, so nobody can take it in between.
"""

from __future__ import annotations

import gc
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional

from engine.errors import StudioError
from engine.run.checkpoints import trained_to_its_end
from engine.run.config import RunConfig
from engine.run.owner import take_over_run
from engine.run.rundir import RunDir
from engine.train import distributed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.train RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0]).resolve()
    try:
        owner = _own(run_dir)
    except StudioError as exc:  # trained by another process: this one leaves the run as it is
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with owner:
        ended = _trained_to_its_end(run_dir)
        if ended:  # a finished run started again by hand: nothing to train, no second adapter
            print(f"error: {ended}", file=sys.stderr)
            return 2
        from engine.train import recipe  # the training stack (already imported in a warm start)

        gc.freeze()  # the stack's objects live as long as the run: no full collection need scan them (0.5 s each)
        return recipe.train_owned(run_dir)


def _trained_to_its_end(run_dir: Path) -> Optional[str]:
    """Why this run has nothing left to train (``engine.run.checkpoints.trained_to_its_end``), or None."""
    try:
        return trained_to_its_end(run_dir, RunConfig.load(RunDir(run_dir).config).schedule_start)
    except StudioError:
        return None  # an unreadable config or record: the run reports it as it starts, as an event


def _own(run_dir: Path) -> Any:
    """This process's hold on the run folder (``engine.run.owner``), before anything is written
    to it. Under torchrun the ranks share the folder and rank 0 alone writes to it: it holds
    the lock for them all."""
    return take_over_run(run_dir) if distributed.is_main() else nullcontext()
