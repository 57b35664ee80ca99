"""Training runs as child processes: start, stream events back, pause, resume, stop.

A run is a child process (``python -m engine.train RUN_DIR``) so that a crash or an
out-of-memory in training never takes the caller down, stop is immediate and the
GPU's memory is fully returned when it ends. A supervisor thread tails
``events.jsonl`` into a queue; callers drain the queue (the studio on a timer, the
CLI in a loop). If the child dies without its final event, the supervisor writes
one, with the last lines of its log, so every run ends with exactly one
``RunFinished``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from engine.atomic import write_json
from engine.config import RunConfig
from engine.control import send_command
from engine.events import EVENTS_FILE, Event, EventTail, EventWriter, RunFinished, RunStarted, StepMetrics, read_events
from engine.paths import runs_dir

LOG_FILE = "train.log"
PID_FILE = "pid"
POLL_S = 0.1


class TrainingJob:
    def __init__(self, run_dir: Path, process: subprocess.Popen) -> None:
        self.run_dir = run_dir
        self._process = process
        self._queue: "queue.Queue[Event]" = queue.Queue()
        self._finished: Optional[RunFinished] = None
        self._done = threading.Event()
        self._killed = False
        self._supervisor = threading.Thread(target=self._supervise, name=f"run-{run_dir.name}", daemon=True)
        self._supervisor.start()

    @classmethod
    def start(cls, config: RunConfig) -> "TrainingJob":
        """Validate the config, create a run directory for it and start the child."""
        config.validate()
        run_dir = _new_run_dir(config)
        write_json(run_dir / "config.json", config.to_dict())
        return cls._spawn(run_dir)

    @classmethod
    def resume(cls, run_dir: Path) -> "TrainingJob":
        """Start the child again on an existing run; it continues from its last checkpoint."""
        run_dir = Path(run_dir)
        RunConfig.load(run_dir / "config.json")  # refuse early, in the caller, if it is unusable
        return cls._spawn(run_dir)

    @classmethod
    def _spawn(cls, run_dir: Path) -> "TrainingJob":
        send_command(run_dir, "run")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # The child must import this very engine, wherever the caller was started from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                          env.get("PYTHONPATH")]))
        with open(run_dir / LOG_FILE, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "engine.train", str(run_dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops the run cleanly
            )
        (run_dir / PID_FILE).write_text(str(process.pid))
        return cls(run_dir, process)

    # Control -----------------------------------------------------------------------------
    def pause(self) -> None:
        send_command(self.run_dir, "pause")

    def resume_training(self) -> None:
        send_command(self.run_dir, "run")

    def stop(self, save: bool = True) -> None:
        """Ask the run to stop at the next step boundary, saving the adapter unless ``save`` is False."""
        send_command(self.run_dir, "stop", save=save)

    def kill(self) -> None:
        """End the child at once; the run stays resumable from its last checkpoint."""
        self._killed = True
        self._process.kill()

    # Observation -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def finished(self) -> Optional[RunFinished]:
        return self._finished

    @property
    def pid(self) -> int:
        return self._process.pid

    def drain(self) -> list[Event]:
        """Events that arrived since the last call; never blocks."""
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events

    def events(self) -> Iterator[Event]:
        """Every event until (and including) the run's RunFinished, blocking between them."""
        while True:
            try:
                event = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
            yield event
            if isinstance(event, RunFinished):
                return

    def wait(self, timeout: Optional[float] = None) -> Optional[RunFinished]:
        self._done.wait(timeout)
        return self._finished

    def _supervise(self) -> None:
        tail = EventTail(self.run_dir / EVENTS_FILE)
        tail.read_new()  # a resumed run's earlier events are history, not news
        while True:
            exited = self._process.poll() is not None
            for event in tail.read_new():
                self._publish(event)
            if self._finished is not None and exited:
                break
            if exited:
                self._publish_crash(self._process.returncode)
                break
            time.sleep(POLL_S)
        (self.run_dir / PID_FILE).unlink(missing_ok=True)
        self._done.set()

    def _publish(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self._finished = event
        self._queue.put(event)

    def _publish_crash(self, returncode: int) -> None:
        if self._killed:
            error = "the run was ended at once by the user; resume it to continue from its last checkpoint"
            status = "stopped"
        else:
            error = f"the training process ended unexpectedly (exit code {returncode}). {_log_tail(self.run_dir)}"
            status = "failed"
        event = RunFinished(status=status, error=error.strip())
        # Record it so the run directory tells the same story as the window did.
        writer = EventWriter(self.run_dir / EVENTS_FILE)
        writer.emit(event)
        writer.close()
        self._publish(event)


def _log_tail(run_dir: Path, lines: int = 5) -> str:
    try:
        text = (run_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    last = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return ("Last log lines: " + " | ".join(last)) if last else ""


def _new_run_dir(config: RunConfig) -> Path:
    stem = config.name or f"{Path(config.dataset).stem}-{config.method}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "run"
    base = f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{stem}"
    name, n = base, 1
    while (runs_dir() / name).exists():
        n += 1
        name = f"{base}-{n}"
    path = runs_dir() / name
    path.mkdir(parents=True)
    return path


@dataclass
class RunSummary:
    run_dir: str
    name: str
    model: str
    dataset: str
    status: str  # running | completed | stopped | failed | interrupted
    started: Optional[float]
    steps: int
    total_steps: Optional[int]
    final_loss: Optional[float]
    adapter: Optional[str]
    error: Optional[str]

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_run(run_dir: Path) -> Optional[RunSummary]:
    """What a run directory says about its run; None if it is not a run directory."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    events = read_events(run_dir / EVENTS_FILE)
    started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
    steps = [e for e in events if isinstance(e, StepMetrics)]
    # A run's RunFinished is its last event; anything after it means the run was resumed.
    finished = events[-1] if events and isinstance(events[-1], RunFinished) else None
    if finished is not None:
        status = finished.status
    else:
        status = "running" if _alive(run_dir) else "interrupted"
    return RunSummary(
        run_dir=str(run_dir),
        name=run_dir.name,
        model=str(config.get("model", "")),
        dataset=str(config.get("dataset", "")),
        status=status,
        started=started.time if started else (events[0].time if events else None),
        steps=steps[-1].step if steps else 0,
        total_steps=started.total_steps if started else None,
        final_loss=steps[-1].loss if steps else None,
        adapter=finished.adapter if finished else None,
        error=finished.error if finished else None,
    )


def _alive(run_dir: Path) -> bool:
    import psutil

    try:
        pid = int((run_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return False
    return psutil.pid_exists(pid)


def list_runs() -> list[RunSummary]:
    """Every run in the app's runs folder, newest first."""
    summaries = [summarize_run(p) for p in runs_dir().iterdir() if p.is_dir()]
    return sorted((s for s in summaries if s), key=lambda s: s.name, reverse=True)
