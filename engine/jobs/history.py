"""The runs history: what each run folder says about its run, for the Home page and anyone
else who lists runs.

Built on ``engine.jobs.summary.summarize_run`` (status, steps, final loss); the curves are read
from the same ``events.jsonl`` by a leaner pass than ``engine.run.events.read_events``.
``RunHistory`` remembers what it read of each finished run together with the size and
modification time of its ``events.jsonl``, so a refresh of hundreds of runs reads only
the runs that changed (usually the one running) and merely looks at the others. A folder deleted between the listing and the reading is
left out: a refresh never fails because a run vanished behind its back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from engine.core.choices import RunStatus
from engine.core.fields import has_fields, number_field
from engine.run.rundir import RunDir
from engine.errors import StudioError
from engine.run.events import EvalMetrics, RunStarted, StepMetrics
from engine.jobs.summary import RunSummary, summarize_run
from engine.paths import runs_dir

SPARK_BUCKETS = 32  # a row's mini loss curve: the lowest and highest loss of each of 32 stretches


@dataclass(frozen=True)
class RunRecord:
    """One row of the runs history."""

    summary: RunSummary
    duration_s: Optional[float]  # time spent training, summed over the run's sessions (resumes)
    spark: tuple[float, ...]  # the loss curve reduced to at most 2 * SPARK_BUCKETS values, peaks kept

    @property
    def run_dir(self) -> str:
        return self.summary.run_dir


@dataclass
class Curve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


# A preference run's step metrics beyond the loss (engine.run.events.StepMetrics), plotted beside it.
REWARD_FIELDS = ("rewards_chosen", "rewards_rejected", "reward_margin", "reward_accuracy")


@dataclass
class RunCurves:
    """Everything a run plotted: training loss, eval loss and learning rate, by step; and for a
    preference run its rewards, margin and accuracy (``REWARD_FIELDS``; empty curves for SFT)."""

    loss: Curve
    eval_loss: Curve
    learning_rate: Curve
    rewards: dict[str, Curve] = field(default_factory=dict)


def spark_line(values: list[float], buckets: int = SPARK_BUCKETS) -> tuple[float, ...]:
    """``values`` reduced for a drawing a few dozen pixels wide.

    Each stretch contributes its lowest and highest value in the order they came, so a
    spike in the loss still shows; short curves are kept whole.
    """
    if len(values) <= 2 * buckets:
        return tuple(values)
    reduced: list[float] = []
    size = len(values) / buckets
    for bucket in range(buckets):
        stretch = values[int(bucket * size): int((bucket + 1) * size)]
        low = min(range(len(stretch)), key=stretch.__getitem__)
        high = max(range(len(stretch)), key=stretch.__getitem__)
        reduced.extend(stretch[i] for i in sorted({low, high}))
    return tuple(reduced)


def format_duration(seconds: Optional[float]) -> str:
    """"45 s", "12 min 05 s", "3 h 20 min"; empty when unknown."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def read_curves(run_dir: Path) -> RunCurves:
    """The run's curves, one value per step. A resumed run repeats the steps after its last
    checkpoint; the values of the later session are the ones kept."""
    return _scan(RunDir(run_dir).events, running=False).curves


def read_config(run_dir: Path) -> dict:
    """The run's ``config.json``; StudioError says in one line why it cannot be read."""
    path = RunDir(run_dir).config
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudioError(f"{Path(run_dir).name} has no config.json (was the folder deleted?)") from None
    except (OSError, ValueError) as exc:
        raise StudioError(f"the config.json of {Path(run_dir).name} cannot be read: {exc}") from None
    if not isinstance(config, dict):
        raise StudioError(f"the config.json of {Path(run_dir).name} is not a JSON object")
    return config


def read_record(run_dir: Path) -> Optional[RunRecord]:
    """What the history shows of one run folder; None when it is not (or no longer) a run."""
    run_dir = Path(run_dir)
    try:
        summary = summarize_run(run_dir)
        if summary is None:
            return None
        scan = _scan(RunDir(run_dir).events, running=summary.status == RunStatus.RUNNING)
    except (OSError, StudioError):  # the folder went away while it was being read, or is unreadable
        return None
    return RunRecord(summary, scan.duration_s, spark_line(scan.curves.loss.values))


class RunHistory:
    """The runs folder, newest run first, re-reading only what changed since the last look.

    ``known`` answers without reading any events (a listing and a ``stat`` per run, a few
    milliseconds for hundreds of runs) when no run is new, changed or running; ``refresh``
    reads what must be read. Not thread-safe: one call at a time (the Home page makes sure).
    """

    def __init__(self, folder: Optional[Path] = None) -> None:
        self._folder = folder
        # folder -> (its stamp, its record), for runs that ended and for folders that are no run.
        self._settled: dict[Path, tuple[tuple[int, ...], Optional[RunRecord]]] = {}

    def known(self) -> Optional[list[RunRecord]]:
        """Every run, when none needs reading; None when some do (call ``refresh``)."""
        records = []
        for run_dir in self._run_dirs():
            settled = self._settled.get(run_dir)
            if settled is None or settled[0] != _stamp(run_dir):
                return None
            if settled[1] is not None:
                records.append(settled[1])
        return records

    def refresh(self, progress: Optional[Callable[[int, int], None]] = None) -> list[RunRecord]:
        """Every run, newest first; ``progress(done, total)`` after each folder."""
        run_dirs = self._run_dirs()
        records = []
        for done, run_dir in enumerate(run_dirs, start=1):
            record = self._record(run_dir)
            if record is not None:
                records.append(record)
            if progress is not None:
                progress(done, len(run_dirs))
        present = set(run_dirs)
        self._settled = {path: entry for path, entry in self._settled.items() if path in present}
        return records

    def _run_dirs(self) -> list[Path]:
        folder = self._folder or runs_dir()
        try:
            return sorted((path for path in folder.iterdir() if path.is_dir()), reverse=True)
        except OSError:
            return []

    def _record(self, run_dir: Path) -> Optional[RunRecord]:
        stamp = _stamp(run_dir)
        settled = self._settled.get(run_dir)
        if settled is not None and settled[0] == stamp:
            return settled[1]
        record = read_record(run_dir)
        if record is None or record.summary.status != RunStatus.RUNNING:
            # A run that ended changes only when it is resumed, which appends to its events.
            self._settled[run_dir] = (stamp, record)
        return record


def _stamp(run_dir: Path) -> tuple[int, ...]:
    """What tells that a folder changed: its events' size and time, its config's time."""
    return (*_file_stamp(RunDir(run_dir).events), *_file_stamp(RunDir(run_dir).config))


def _file_stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


# The event names as they appear in events.jsonl, to pick out the few lines a curve needs.
_STEP, _EVAL, _START = (f'"{cls.__name__}"'.encode() for cls in (StepMetrics, EvalMetrics, RunStarted))


@dataclass
class _Scan:
    curves: RunCurves
    duration_s: Optional[float]


def _scan(path: Path, running: bool) -> _Scan:
    """One pass over an events file for its curves and its training time.

    ``read_events`` builds an event object for every line, which is most of the cost
    of reading a long run; here only the metric lines (and the session starts) are
    parsed, and only into the fields the curves need.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    loss: dict[int, float] = {}
    learning_rate: dict[int, float] = {}
    eval_loss: dict[int, float] = {}
    rewards: dict[str, dict[int, float]] = {name: {} for name in REWARD_FIELDS}
    sessions = _Sessions()
    previous = b""
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        if _STEP in line:
            event = _parse(line, StepMetrics, ("step", "loss", "learning_rate"))
            if event is not None:
                loss[event["step"]] = event["loss"]
                learning_rate[event["step"]] = event["learning_rate"]
                for name in REWARD_FIELDS:
                    value = number_field(event, name)  # None for SFT, and for anything not a number
                    if value is not None:
                        rewards[name][event["step"]] = value
        elif _EVAL in line:
            event = _parse(line, EvalMetrics, ("step", "eval_loss"))
            if event is not None:
                eval_loss[event["step"]] = event["eval_loss"]
        elif _START in line:
            event = _parse(line, RunStarted, ("time",))
            if event is not None:
                sessions.start(event["time"], _event_time(previous))
        previous = line
    curves = RunCurves(_by_step(loss), _by_step(eval_loss), _by_step(learning_rate),
                       {name: _by_step(values) for name, values in rewards.items()})
    return _Scan(curves, sessions.total(time.time() if running else _event_time(previous)))


class _Sessions:
    """Training time: from each session's start (a RunStarted) to its last event, summed."""

    def __init__(self) -> None:
        self._done = 0.0
        self._current: Optional[float] = None

    def start(self, when: float, previous_end: Optional[float]) -> None:
        if self._current is not None and previous_end is not None:
            self._done += max(0.0, previous_end - self._current)
        self._current = when

    def total(self, end: Optional[float]) -> Optional[float]:
        """None when the run never started."""
        if self._current is None:
            return None
        return self._done + (max(0.0, end - self._current) if end is not None else 0.0)


def _parse(line: bytes, cls: type, keys: tuple[str, ...]) -> Optional[dict]:
    """The line as a dict when it is a ``cls`` event whose ``keys`` have their types (a loss a
    finite number, a step a whole one); None for anything else (a line still being written, one
    from a writer this reader does not know, one edited by hand)."""
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict) or event.get("event") != cls.__name__ or not has_fields(cls, event, keys):
        return None
    return event


def _event_time(line: bytes) -> Optional[float]:
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return number_field(event, "time") if isinstance(event, dict) else None


def _by_step(values: dict[int, float]) -> Curve:
    steps = sorted(values)
    return Curve(steps, [values[step] for step in steps])
