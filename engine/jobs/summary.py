"""The run record: what a run folder says about its run (``RunSummary``, ``summarize_run``,
``list_runs``), and reading a run's config and the tail of its log."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from engine.core.atomic import read_json_object
from engine.core.choices import RunStatus
from engine.core.fields import text_field, whole_field
from engine.errors import StudioError
from engine.jobs.pidfile import running_child
from engine.paths import folder_entries, runs_dir
from engine.run.checkpoints import last_checkpoint_step, nothing_to_resume_line
from engine.run.config import RunConfig
from engine.run.events import RunFinished, RunStarted, StepMetrics, read_events
from engine.run.rundir import RunDir


@dataclass
class RunSummary:
    run_dir: str
    name: str
    model: str
    dataset: str
    status: str  # a RunStatus (engine.core.choices)
    started: Optional[float]
    steps: int
    total_steps: Optional[int]
    final_loss: Optional[float]
    adapter: Optional[str]
    error: Optional[str]
    method: str = "lora"
    checkpoint_step: int = 0  # the newest complete checkpoint: where a resume or "train more" starts
    steps_per_epoch: Optional[int] = None
    model_output: Optional[str] = None  # full fine-tuning: the new model's folder

    @property
    def loss_is_final(self) -> bool:
        """``final_loss`` (the last step's loss) is the run's final loss: the run no longer trains.
        While it trains it is only its latest."""
        return self.status != RunStatus.RUNNING

    @property
    def resumable(self) -> bool:
        """A run with a checkpoint to go on from that did not end well (a crash, a kill, a full disk
        while saving), or that was stopped before its last step."""
        if not self.checkpoint_step:
            return False
        if self.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
            return True
        return self.status == RunStatus.STOPPED and (self.total_steps is None or self.checkpoint_step < self.total_steps)

    @property
    def nothing_to_resume(self) -> Optional[str]:
        """Why resuming would train nothing, or None: the run ended well at its last step (it
        completed, or was stopped just then), so a resume would only save its adapter again.
        More steps are train-more's, which plans them into the run's config."""
        steps = self.total_steps or self.checkpoint_step
        at_end = self.status == RunStatus.COMPLETED or (
            self.status == RunStatus.STOPPED and bool(self.total_steps) and self.checkpoint_step >= steps)
        if not at_end:
            return None
        return nothing_to_resume_line(self.name, steps)

    def to_dict(self) -> dict:
        return {**asdict(self), "resumable": self.resumable}


def summarize_run(run_dir: Path) -> Optional[RunSummary]:
    """What a run directory says about its run; None if it is not a run directory.

    Its config.json and events.jsonl are files anyone can edit: a field of the wrong type is
    shown as unknown, an event that is not well-formed is skipped (``read_events``)."""
    if not RunDir(run_dir).config.is_file():
        return None
    config = read_json_object(RunDir(run_dir).config)
    if config is None:
        return None
    events = read_events(RunDir(run_dir).events)
    started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
    steps = [e for e in events if isinstance(e, StepMetrics)]
    # A run's RunFinished is its last event; anything after it means the run was resumed.
    finished = events[-1] if events and isinstance(events[-1], RunFinished) else None
    if finished is not None:
        status = finished.status
    else:
        status = RunStatus.RUNNING if running_child(run_dir) is not None else RunStatus.INTERRUPTED
    return RunSummary(
        run_dir=str(run_dir),
        name=run_dir.name,
        model=text_field(config, "model") or "",
        dataset=text_field(config, "dataset") or "",
        status=status,
        started=started.time if started else (events[0].time if events else None),
        steps=steps[-1].step if steps else 0,
        total_steps=started.total_steps if started else None,
        final_loss=steps[-1].loss if steps else None,
        adapter=finished.adapter if finished else None,
        error=finished.error if finished else None,
        method=text_field(config, "method") or "lora",
        checkpoint_step=last_checkpoint_step(run_dir),
        steps_per_epoch=_steps_per_epoch(config, started),
        model_output=finished.model if finished else None,
    )


def _steps_per_epoch(config: dict, started: Optional[RunStarted]) -> Optional[int]:
    per_step = (whole_field(config, "batch_size") or 0) * (whole_field(config, "grad_accum") or 1)
    if started is None or per_step <= 0:
        return None
    return max(1, math.ceil(started.train_examples / per_step))


def list_runs() -> list[RunSummary]:
    """Every run in the app's runs folder, newest first. A folder deleted meanwhile is left out."""
    summaries = []
    for path in folder_entries(runs_dir()):
        try:
            summary = summarize_run(path) if path.is_dir() else None
        except (OSError, StudioError):
            continue  # vanished while being read, or its events cannot be read
        if summary is not None:
            summaries.append(summary)
    return sorted(summaries, key=lambda s: s.name, reverse=True)


def load_config(run_dir: Path) -> RunConfig:
    """The run's config; StudioError when the folder is not a run."""
    if not RunDir(run_dir).config.is_file():
        raise StudioError(f"{run_dir} is not a run directory (no config.json)")
    return RunConfig.load(RunDir(run_dir).config)


def log_tail(run_dir: Path, lines: int = 5) -> str:
    """The last non-empty lines of the run's log, for a crash report; empty when there is no log."""
    try:
        text = RunDir(run_dir).log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    last = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return ("Last log lines: " + " | ".join(last)) if last else ""
