"""The training checkpoints the adapter picker offers: every run's complete adapter checkpoints,
less those whose weights the library already holds as the adapter their run saved.

What makes a checkpoint complete is ``engine.run.checkpoints``' rule, used here as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

from engine.adapters.library import PEFT_CONFIG, same_weights, saved_by_run
from engine.run.checkpoints import checkpoint_step, complete_checkpoints
from engine.run.rundir import RunDir


@dataclass
class CheckpointRecord:
    """A complete checkpoint of a training run: a PEFT folder that chat can load."""

    run: str
    step: int
    path: str
    model: str  # the run's base model reference

    @property
    def label(self) -> str:
        return f"{self.run} · step {self.step}"


def list_checkpoints(model: Optional[str] = None) -> list[CheckpointRecord]:
    """Complete checkpoints of every run (of runs on ``model`` when given), newest first.

    A checkpoint that is not complete (``engine.run.checkpoints``) is not listed, nor one whose
    weights are those of an adapter its run saved into the library (a run's last checkpoint
    usually is): the library lists that one. Reads JSON and file headers, and weights only where
    a checkpoint's are as large as its run's saved adapter's.
    """
    from engine.paths import runs_dir

    saved = saved_by_run()
    found = []
    for run in runs_dir().iterdir():
        try:
            config = json.loads(RunDir(run).config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        run_model = config.get("model") if isinstance(config, dict) else None
        if not isinstance(run_model, str) or (model is not None and run_model != model):
            continue
        for folder in complete_checkpoints(run):
            if not (folder / PEFT_CONFIG).is_file():  # a full fine-tune's, not an adapter's
                continue
            if not any(same_weights(folder, adapter) for adapter in saved.get(run.name, ())):
                found.append((folder.stat().st_mtime,
                              CheckpointRecord(run.name, checkpoint_step(folder), str(folder), run_model)))
    return [record for _mtime, record in sorted(found, key=lambda item: (item[0], item[1].step), reverse=True)]
