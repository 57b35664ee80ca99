"""The Train page's run controller: the run's state, the job it follows, and what the run's
events said about it (enough for Resume and Train more, with no file read on the UI thread)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, Signal

from engine.core.choices import ENDED_WELL, RunStatus
from engine.jobs.summary import RunSummary
from engine.run.events import CheckpointSaved, Event, Paused, Resumed, RunFinished, RunStarted, StepMetrics
from studio.workers import TrainingRunner


class RunState(str, Enum):
    """Where the page's run stands; compares equal to its value, the string ``runStateChanged`` emits."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    STOPPING = "stopping"


class _RunRecord:
    """The events of the run followed last, folded into the facts a run summary holds."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started: Optional[RunStarted] = None
        self.last_step: Optional[StepMetrics] = None
        self.total_steps: Optional[int] = None
        self.checkpoint_step = 0
        self.finished: Optional[RunFinished] = None

    def see(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started = event
            self.total_steps = event.total_steps
            # A resumed run starts from a complete checkpoint, saved before these events.
            self.checkpoint_step = max(self.checkpoint_step, event.resumed_from_step)
        elif isinstance(event, StepMetrics):
            self.last_step = event
            self.total_steps = event.total_steps or self.total_steps
        elif isinstance(event, CheckpointSaved):
            # Sent once the checkpoint is renamed into place, so it is a complete one.
            self.checkpoint_step = max(self.checkpoint_step, event.step)
        elif isinstance(event, RunFinished):
            self.finished = event

    def summary(self) -> RunSummary:
        """The run as its events tell it, in the engine's terms, so that Resume and Train more
        follow the engine's own rules (``RunSummary.resumable``)."""
        started, last, finished = self.started, self.last_step, self.finished
        return RunSummary(
            run_dir=str(self.run_dir),
            name=self.run_dir.name,
            model=started.model if started else "",
            dataset="",  # not in the events, and nothing here needs it
            status=finished.status if finished else RunStatus.RUNNING,
            started=started.time if started else None,
            steps=last.step if last else 0,
            total_steps=self.total_steps,
            final_loss=last.loss if last else None,
            adapter=finished.adapter if finished else None,
            error=finished.error if finished else None,
            method=started.method if started else "lora",
            checkpoint_step=self.checkpoint_step,
            model_output=finished.model if finished else None,
        )


class RunController(QObject):
    """Owns the run state and the ``TrainingRunner`` of the run being followed.

    ``events`` passes each batch on before the state follows it (the page logs "Paused at
    step N" before the state says paused); ``finished`` is the run's end, after which the
    page sets the state back to idle."""

    stateChanged = Signal(str)  # a RunState's value
    events = Signal(list)
    finished = Signal(object)  # the RunFinished event

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._state = RunState.IDLE
        self._runner: Optional[TrainingRunner] = None
        self._record: Optional[_RunRecord] = None

    @property
    def state(self) -> RunState:
        return self._state

    @property
    def runner(self) -> Optional[TrainingRunner]:
        return self._runner

    @property
    def last_run(self) -> Optional[Path]:
        """The run this page showed last, for resume / train more."""
        return self._record.run_dir if self._record is not None else None

    def set_state(self, state: RunState) -> None:
        self._state = state
        self.stateChanged.emit(state.value)

    def last_run_summary(self) -> Optional[RunSummary]:
        """What the last run's events said, once it has ended (None while it goes on or before any)."""
        record = self._record
        return record.summary() if record is not None and record.finished is not None else None

    def can_resume(self) -> bool:
        summary = self.last_run_summary()
        return bool(summary and summary.resumable)

    def can_train_more(self) -> bool:
        summary = self.last_run_summary()
        return bool(summary and summary.status in ENDED_WELL and summary.checkpoint_step)

    def follow(self, job: Any) -> None:
        """Follow a started (or attached) ``TrainingJob`` until its RunFinished."""
        self._record = _RunRecord(Path(job.run_dir))
        self._runner = TrainingRunner(job, parent=self)
        self._runner.events.connect(self._on_events)
        self._runner.finished.connect(self._on_finished)
        self.set_state(RunState.RUNNING)

    def stop(self, save: bool) -> None:
        """Ask the run to stop after the current step, keeping its work or not."""
        if self._runner is None:
            return
        self._runner.job.stop(save=save)
        self.set_state(RunState.STOPPING)

    def pause_or_resume(self) -> None:
        if self._runner is None:
            return
        if self._state == RunState.PAUSED:
            self._runner.job.resume_training()
            self.set_state(RunState.RESUMING)
        elif self._state == RunState.RUNNING:
            self._runner.job.pause()
            self.set_state(RunState.PAUSING)

    def _on_events(self, batch: list[Event]) -> None:
        self.events.emit(batch)
        for event in batch:
            if self._record is not None:
                self._record.see(event)
            if isinstance(event, Paused) and self._state != RunState.STOPPING:
                self.set_state(RunState.PAUSED)
            elif isinstance(event, Resumed) and self._state != RunState.STOPPING:
                self.set_state(RunState.RUNNING)

    def _on_finished(self, event: RunFinished) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.deleteLater()
        self.finished.emit(event)
