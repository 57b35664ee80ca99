"""The events a training run emits: plain, JSON-serialisable dataclasses.

The child process appends them as JSON lines to ``RUN_DIR/events.jsonl``; the
parent tails that file. The studio turns them into Qt signals; the CLI prints them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from engine.core.fields import dataclass_from_dict
from engine.errors import StudioError


@dataclass(kw_only=True)
class Event:
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": type(self).__name__, **asdict(self)}


@dataclass(kw_only=True)
class RunStarted(Event):
    run_dir: str
    model: str
    method: str
    device: str
    total_steps: int
    trainable_params: int
    total_params: int
    train_examples: int
    resumed_from_step: int = 0
    # What engine.memory.estimate predicts the memory curve will peak at, in the same terms as
    # StepMetrics.memory_allocated (on a CPU: the process's memory before the model loaded
    # plus the estimate); None when the model's architecture has no estimate.
    predicted_peak_bytes: Optional[int] = None


@dataclass(kw_only=True)
class StepMetrics(Event):
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    grad_norm: Optional[float] = None
    tokens_per_second: Optional[float] = None
    memory_allocated: Optional[int] = None
    memory_reserved: Optional[int] = None
    elapsed_s: float = 0.0
    # Preference objectives (engine.train.preference), averaged over the logged steps: the
    # implicit rewards of the chosen and rejected answers, their margin, and the share of
    # pairs whose chosen answer scores above the rejected one. None for SFT.
    rewards_chosen: Optional[float] = None
    rewards_rejected: Optional[float] = None
    reward_margin: Optional[float] = None
    reward_accuracy: Optional[float] = None


@dataclass(kw_only=True)
class EvalMetrics(Event):
    step: int
    eval_loss: float
    # Preference runs: the share of held-out pairs whose chosen answer the model now scores
    # above the rejected one. None for SFT (and for KTO, which scores single answers).
    reward_accuracy: Optional[float] = None


@dataclass(kw_only=True)
class CheckpointSaved(Event):
    step: int
    path: str


@dataclass(kw_only=True)
class LogLine(Event):
    message: str
    level: str = "info"


@dataclass(kw_only=True)
class Paused(Event):
    step: int


@dataclass(kw_only=True)
class Resumed(Event):
    step: int


@dataclass(kw_only=True)
class OutOfMemory(Event):
    """The device ran out of memory; ``plan`` (an ``engine.memory.plan.Plan`` as a dict, or None when
    nothing fits) is what auto-fit says would fit, with one sentence per choice in ``explanations``."""

    step: int
    device: str
    measured_peak_bytes: Optional[int]
    device_total_bytes: Optional[int]
    plan: Optional[dict[str, Any]] = None
    explanations: list[str] = field(default_factory=list)
    suggestion: Optional[str] = None


@dataclass(kw_only=True)
class RunFinished(Event):
    status: Literal["completed", "stopped", "failed"]  # how a RunStatus (engine.core.choices) ends
    error: Optional[str] = None
    adapter: Optional[str] = None  # the adapter's folder in the library
    model: Optional[str] = None  # full fine-tuning: the new model's folder in the model store
    step: int = 0
    final_loss: Optional[float] = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (RunStarted, StepMetrics, EvalMetrics, CheckpointSaved, LogLine, Paused, Resumed, OutOfMemory,
                RunFinished)
}


def event_from_dict(data: Any) -> Event:
    """The event a JSON line holds; ``ValueError`` unless it is an object naming a known event
    whose every field has its type (a loss is a finite number, a step a whole one...): events.jsonl
    is a file anyone can edit, and the run viewer, the runs commands and the summary rely on it."""
    if not isinstance(data, dict) or not isinstance(data.get("event"), str) or data["event"] not in EVENT_TYPES:
        raise ValueError(f"not a known event: {str(data)[:80]}")
    return dataclass_from_dict(EVENT_TYPES[data["event"]], data)


class EventWriter:
    """Appends events to a JSON-lines file, one flushed line per event."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def emit(self, event: Event) -> None:
        self._handle.write(json.dumps(event.to_dict()) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class EventTail:
    """Reads the events appended to a file since the last call.

    Only complete lines are consumed: a line the writer has not finished yet is
    left for the next call.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self.skipped = 0  # lines that were not a well-formed event

    def read_new(self) -> list[Event]:
        if not self.path.exists():
            return []
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError as exc:  # a folder in its place, no permission: the run's record is unreadable
            raise StudioError(f"the run's events cannot be read ({self.path}): {exc.strerror or exc}") from exc
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            if line.strip():
                try:
                    events.append(event_from_dict(json.loads(line)))
                except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's stack
                    # A line from another writer, or edited: skipped, never trusted half-way.
                    self.skipped += 1
        return events


def read_events(path: Path) -> list[Event]:
    return EventTail(path).read_new()
