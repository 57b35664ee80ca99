"""What a complete checkpoint is, and a run's checkpoints: one rule for the recipe (which
checkpoint a resumed run starts from), the runs history and the Train page (the step Resume
offers) and chat (the checkpoints it lists).

A checkpoint is ``RUN_DIR/checkpoints/checkpoint-STEP``, renamed into place by
``engine.train.trainer`` only once written. It is complete when its trainer state (written
last) reads as JSON, it holds weights, each safetensors file is as long as its header says
and each torch file (optimizer, scheduler, RNG state) ends in its zip directory: a folder
damaged afterwards, or half-copied, is caught from headers alone, without reading gigabytes.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.core.fields import dataclass_problem
from engine.core.safetensors_files import safetensors_problem
from engine.run.rundir import RunDir

CHECKPOINT_PREFIX = "checkpoint-"  # as transformers' Trainer names them (PREFIX_CHECKPOINT_DIR)
TRAINER_STATE = "trainer_state.json"
# Checkpoints are written into RUN_DIR/checkpoints/.staging and renamed into place (engine.train.trainer).
STAGING = ".staging"


def clear_checkpoint_staging(run_dir: Path) -> None:
    """Remove what a killed run left half-written in its checkpoint staging. Only the run's own
    training child calls it, at its start and before it saves anything: nobody else writes there."""
    shutil.rmtree(RunDir(run_dir).checkpoints / STAGING, ignore_errors=True)


@dataclass
class TrainerState:
    """The fields of transformers' trainer_state.json that a resumed run and the studio rely on,
    each with its type; any may be absent."""

    global_step: int = 0
    max_steps: int = 0
    epoch: Optional[float] = None
    log_history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_step(folder: Path | str | None) -> Optional[int]:
    """The step a checkpoint folder was saved at, from its name; None for another folder."""
    if not folder:
        return None
    name = Path(folder).name
    step = name[len(CHECKPOINT_PREFIX):]
    return int(step) if name.startswith(CHECKPOINT_PREFIX) and step.isdigit() else None


def checkpoint_problem(folder: Path) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or None when it is complete."""
    state = folder / TRAINER_STATE
    if not state.is_file():
        return f"it was not completely written (no {TRAINER_STATE})"
    try:
        problem = dataclass_problem(TrainerState, json.loads(state.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return f"its {TRAINER_STATE} is damaged"
    if problem:
        return f"its {TRAINER_STATE} is damaged: {problem}"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        return "it holds no weights"
    for file in weights:
        problem = safetensors_problem(file)
        if problem:
            return problem
    for file in sorted(folder.glob("*.pt")) + sorted(folder.glob("*.pth")):
        if not zipfile.is_zipfile(file):
            return f"{file.name} is truncated or damaged"
    return None


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """Every checkpoint folder of a run, complete or not, newest step first."""
    folders = [folder for folder in RunDir(run_dir).checkpoints.glob(f"{CHECKPOINT_PREFIX}*")
               if checkpoint_step(folder) is not None]
    return sorted(folders, key=checkpoint_step, reverse=True)


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """A run's complete checkpoints, newest step first."""
    return [folder for folder in checkpoint_folders(run_dir) if checkpoint_problem(folder) is None]


def last_checkpoint_step(run_dir: Path) -> int:
    """The step of the newest complete checkpoint, 0 for none: where Resume goes on from."""
    complete = complete_checkpoints(run_dir)
    return checkpoint_step(complete[0]) if complete else 0


def nothing_to_resume_line(run_name: str, steps: int) -> str:
    """The one line for a resume that would train nothing (the run already trained all its steps)."""
    return (f"run {run_name} completed its {steps} steps: there is nothing to resume; use train more to "
            "continue it (lora-studio train --resume RUN_DIR --more-steps N, or Train more… in the studio)")


def trained_to_its_end(run_dir: Path, schedule_start: int) -> Optional[str]:
    """Why starting the training child on ``run_dir`` would train nothing, or None: its last
    segment completed and its config was not extended since. The child's own check, for a
    hand-typed ``python -m engine.train`` or torchrun on a finished run (the studio and the CLI
    refuse earlier, from the run's summary). A train-more starts its schedule at the newest
    checkpoint (``schedule_start``), so a config whose schedule starts before it is the one that
    already ran."""
    from engine.run.events import RunFinished, read_events

    finished = next((e for e in reversed(read_events(RunDir(run_dir).events)) if isinstance(e, RunFinished)), None)
    if finished is None or finished.status != "completed":
        return None
    newest = last_checkpoint_step(run_dir)
    if newest and schedule_start >= newest:
        return None  # extended by train-more since it completed
    return nothing_to_resume_line(Path(run_dir).name, finished.step or newest)
