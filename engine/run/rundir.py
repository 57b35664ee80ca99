"""A run folder and every file in it: the one place their names are spelled.

    RUN_DIR/config.json      the whole run configuration (engine.run.config.RunConfig)
    RUN_DIR/events.jsonl     what the training child reports, one JSON event a line
    RUN_DIR/control.json     what the parent asks of the child: run, pause or stop
    RUN_DIR/train.log        the child's own output (warnings, tracebacks)
    RUN_DIR/pid              the child's pid and start time, while it runs
    RUN_DIR/lock             the OS lock its one owner holds, and that owner's pid (engine.run.owner)
    RUN_DIR/checkpoints/     checkpoint-STEP folders (engine.run.checkpoints)
    RUN_DIR/heldout.json     the dataset rows held out for validation, when any (engine.data.heldout)
    RUN_DIR/tensorboard/     TensorBoard's event files, when the run reports to it (engine.train.trackers)
    RUN_DIR/mlruns/          MLflow's local store, when the run reports to MLflow without a tracking URI
    RUN_DIR/wandb/           Weights & Biases' run files (offline-run-* unless the user is logged in)
    RUN_DIR/.shared-check    rank 0's token, for a moment as a run on several processes starts, that every
                             rank reads back to show the folder is shared (engine.train.distributed)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: "os.PathLike[str] | str") -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def events(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def control(self) -> Path:
        return self.path / "control.json"

    @property
    def log(self) -> Path:
        return self.path / "train.log"

    @property
    def pid(self) -> Path:
        return self.path / "pid"

    @property
    def lock(self) -> Path:
        return self.path / "lock"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def heldout(self) -> Path:
        return self.path / "heldout.json"

    @property
    def shared_check(self) -> Path:
        return self.path / ".shared-check"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def mlruns(self) -> Path:
        return self.path / "mlruns"

    @property
    def wandb(self) -> Path:
        """The folder W&B writes its ``wandb/`` folder into is the run folder itself (``WANDB_DIR``)."""
        return self.path / "wandb"

    def tracker_folders(self) -> dict[str, Path]:
        """The experiment trackers' folders this run has written, by tracker (engine.core.choices.TRACKERS)."""
        folders = {"tensorboard": self.tensorboard, "mlflow": self.mlruns, "wandb": self.wandb}
        return {name: folder for name, folder in folders.items() if folder.is_dir()}
