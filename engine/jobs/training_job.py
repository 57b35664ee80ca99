"""Training runs as child processes: start, stream events back, pause, resume, stop;
continue a finished run ("train more"); find runs a crash left behind.

A run is a child process (``python -m engine.train RUN_DIR``) so that a crash or an
out-of-memory in training never takes the caller down, stop is immediate and the
GPU's memory is fully returned when it ends. A supervisor thread tails
``events.jsonl`` into a queue; callers drain the queue (the studio on a timer, the
CLI in a loop). If the child dies without its final event, the supervisor writes
one, with the last lines of its log, so every run ends with exactly one
``RunFinished``.

The child runs in its own session: if the studio itself dies, training goes on, and
the next studio start finds the run still going and attaches to it (``attach``).

Where warm starts are enabled (``engine.jobs.launcher``: the studio, on Linux with a CPU build
of torch) the child is forked from a standby that has imported the training stack already,
rather than started cold; it is the same run either way.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

from engine.core.choices import ENDED_WELL, RunStatus
from engine.run.rundir import RunDir
from engine.run.checkpoints import last_checkpoint_step
from engine.jobs import launcher
from engine.jobs.child_env import child_environment
from engine.core.atomic import write_json
from engine.run.config import RunConfig
from engine.run.control import send_command
from engine.errors import StudioError
from engine.run.events import Event, EventTail, EventWriter, RunFinished, RunStarted, StepMetrics, read_events
from engine.paths import runs_dir

POLL_S = 0.1


class _Child:
    """The training process: one we started (a Popen), one the warm-start standby forked for
    us (a ``launcher.WarmChild``) or one found running (a psutil.Process)."""

    def __init__(self, popen: Optional[subprocess.Popen] = None, warm: Any = None, found: Any = None) -> None:
        self._popen, self._warm, self._found = popen, warm, found

    @property
    def pid(self) -> int:
        return (self._popen or self._warm or self._found).pid

    def exited(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is not None
        if self._warm is not None:
            return self._warm.exited()
        import psutil

        try:
            return not self._found.is_running() or self._found.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    @property
    def returncode(self) -> Optional[int]:
        if self._popen is not None:
            return self._popen.returncode
        return self._warm.returncode if self._warm is not None else None

    def kill(self) -> None:
        import psutil

        try:
            (self._popen or self._warm or self._found).kill()
        except (ProcessLookupError, psutil.Error):
            pass  # already gone


class TrainingJob:
    def __init__(self, run_dir: Path, child: _Child, *, history: bool = False) -> None:
        self.run_dir = run_dir
        self._child = child
        self._queue: "queue.Queue[Event]" = queue.Queue()
        self._finished: Optional[RunFinished] = None
        self._done = threading.Event()
        self._killed = False
        self._history = history
        self._supervisor = threading.Thread(target=self._supervise, name=f"run-{run_dir.name}", daemon=True)
        self._supervisor.start()

    @classmethod
    def start(cls, config: RunConfig) -> "TrainingJob":
        """Check the config can run here, create a run directory for it and start the child.

        The checks import torch and resolve the model (converting the starter on first use),
        so they take seconds: the studio calls this from a background task.
        """
        check_can_run(config)
        run_dir = _new_run_dir(config)
        write_json(RunDir(run_dir).config, config.to_dict())
        return cls._spawn(run_dir)

    @classmethod
    def resume(cls, run_dir: Path) -> "TrainingJob":
        """Start the child again on an existing run; it continues from its last checkpoint."""
        run_dir = Path(run_dir)
        check_can_run(_load_config(run_dir))  # refuse early, in the caller, if it is unusable
        if _still_training(run_dir):
            raise StudioError(f"run {run_dir.name} is still running: watch it instead of starting it again")
        return cls._spawn(run_dir)

    @classmethod
    def train_more(cls, run_dir: Path, *, steps: Optional[int] = None, epochs: Optional[float] = None) -> "TrainingJob":
        """Continue a finished run for ``steps`` more steps or ``epochs`` more epochs.

        It goes on from the run's last checkpoint with its optimizer state; the learning-rate
        schedule (warm-up included) runs again over the new steps, and the result is saved as
        a new library entry beside the first.
        """
        run_dir = Path(run_dir)
        extended = more_training(run_dir, steps=steps, epochs=epochs)
        check_can_run(extended)
        if _still_training(run_dir):
            raise StudioError(f"run {run_dir.name} is still running: let it finish first")
        write_json(RunDir(run_dir).config, extended.to_dict())
        return cls._spawn(run_dir)

    @classmethod
    def attach(cls, run_dir: Path) -> "TrainingJob":
        """Watch a run whose child is still going (started by a studio that has since died).

        Its events so far are replayed first, so a window can redraw the run's curves."""
        run_dir = Path(run_dir)
        found = _running_child(run_dir)
        if found is None:
            raise StudioError(f"run {run_dir.name} is not running any more: resume it instead")
        return cls(run_dir, _Child(found=found), history=True)

    @classmethod
    def _spawn(cls, run_dir: Path) -> "TrainingJob":
        send_command(run_dir, "run")
        env = child_environment(os.environ)
        warm = launcher.start_run(run_dir, RunDir(run_dir).log, env)
        if warm is not None:
            child = _Child(warm=warm)
        else:
            with open(RunDir(run_dir).log, "ab") as log:
                child = _Child(popen=subprocess.Popen(
                    [sys.executable, "-m", "engine.train", str(run_dir)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops the run cleanly
                ))
        _write_pid_file(run_dir, child.pid)
        return cls(run_dir, child)

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
        self._child.kill()

    # Observation -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def finished(self) -> Optional[RunFinished]:
        return self._finished

    @property
    def pid(self) -> int:
        return self._child.pid

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
        tail = EventTail(RunDir(self.run_dir).events)
        if self._history:
            # An attached run: what it did before it lost its window, from its last start on.
            history = tail.read_new()
            last_start = max((i for i, e in enumerate(history) if isinstance(e, RunStarted)), default=0)
            for event in history[last_start:]:
                self._publish(event)
        else:
            tail.read_new()  # a resumed run's earlier events are history, not news
        while True:
            exited = self._child.exited()
            for event in tail.read_new():
                self._publish(event)
            if self._finished is not None and exited:
                break
            if exited:
                self._publish_crash(self._child.returncode)
                break
            time.sleep(POLL_S)
        RunDir(self.run_dir).pid.unlink(missing_ok=True)
        self._done.set()

    def _publish(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self._finished = event
        self._queue.put(event)

    def _publish_crash(self, returncode: Optional[int]) -> None:
        if self._killed:
            error = "the run was ended at once by the user; resume it to continue from its last checkpoint"
            status = RunStatus.STOPPED
        else:
            code = f"exit code {returncode}" if returncode is not None else "it was not started by this window"
            error = f"the training process ended unexpectedly ({code}). {_log_tail(self.run_dir)}"
            status = RunStatus.FAILED
        event = RunFinished(status=status, error=error.strip())
        # Record it so the run directory tells the same story as the window did.
        writer = EventWriter(RunDir(self.run_dir).events)
        writer.emit(event)
        writer.close()
        self._publish(event)


def _write_pid_file(run_dir: Path, pid: int) -> None:
    """The child's pid and start time: together they name the process even once the number
    has been reused, whichever way it was started."""
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None  # already gone: the supervisor reports how it ended
    RunDir(run_dir).pid.write_text(f"{pid} {started}" if started is not None else str(pid))


def check_can_run(config: RunConfig) -> None:
    """Everything that can be refused before a run directory or a process exists."""
    from engine.data.dataset import DataOptions, open_dataset
    from engine.models.store import resolve_model
    from engine.train import preflight

    config.validate()
    preflight.check(config, resolve_model(config.model))
    open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))


def more_training(run_dir: Path, *, steps: Optional[int] = None, epochs: Optional[float] = None) -> RunConfig:
    """The config that continues ``run_dir`` for ``steps`` more steps or ``epochs`` more epochs."""
    if (steps is None) == (epochs is None):
        raise StudioError("say how much more to train: a number of steps or of epochs")
    config = _load_config(run_dir)
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


def _load_config(run_dir: Path) -> RunConfig:
    if not RunDir(run_dir).config.is_file():
        raise StudioError(f"{run_dir} is not a run directory (no config.json)")
    return RunConfig.load(RunDir(run_dir).config)


def _log_tail(run_dir: Path, lines: int = 5) -> str:
    try:
        text = RunDir(run_dir).log.read_text(encoding="utf-8", errors="replace")
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


# the record of runs ------------------------------------------------------------------------------
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
    def resumable(self) -> bool:
        """A run with a checkpoint to go on from that did not end well (a crash, a kill, a full disk
        while saving), or that was stopped before its last step."""
        if not self.checkpoint_step:
            return False
        if self.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
            return True
        return self.status == RunStatus.STOPPED and (self.total_steps is None or self.checkpoint_step < self.total_steps)

    def to_dict(self) -> dict:
        return {**asdict(self), "resumable": self.resumable}


def summarize_run(run_dir: Path) -> Optional[RunSummary]:
    """What a run directory says about its run; None if it is not a run directory."""
    try:
        config = json.loads(RunDir(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    events = read_events(RunDir(run_dir).events)
    started = next((e for e in reversed(events) if isinstance(e, RunStarted)), None)
    steps = [e for e in events if isinstance(e, StepMetrics)]
    # A run's RunFinished is its last event; anything after it means the run was resumed.
    finished = events[-1] if events and isinstance(events[-1], RunFinished) else None
    if finished is not None:
        status = finished.status
    else:
        status = RunStatus.RUNNING if _running_child(run_dir) is not None else RunStatus.INTERRUPTED
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
        method=str(config.get("method", "lora")),
        checkpoint_step=last_checkpoint_step(run_dir),
        steps_per_epoch=_steps_per_epoch(config, started),
        model_output=finished.model if finished else None,
    )


def _steps_per_epoch(config: dict, started: Optional[RunStarted]) -> Optional[int]:
    try:
        per_step = int(config.get("batch_size", 0)) * int(config.get("grad_accum", 1))
    except (TypeError, ValueError):
        return None
    if started is None or per_step <= 0:
        return None
    return max(1, math.ceil(started.train_examples / per_step))


def _running_child(run_dir: Path) -> Any:
    """The run's training process if it is still alive (a psutil.Process), else None.

    The pid file can outlive its process and the number be reused, so the process must also
    have the start time the file recorded, or (in a file from before start times were kept)
    be an ``engine.train`` child of this very run directory.
    """
    import psutil

    try:
        fields = RunDir(run_dir).pid.read_text().split()
        process = psutil.Process(int(fields[0]))
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if len(fields) > 1:
            return process if abs(process.create_time() - float(fields[1])) < 0.01 else None
        command = process.cmdline()
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    if "engine.train" in command and str(Path(run_dir).resolve()) in [str(Path(a).resolve()) for a in command
                                                                       if a.startswith(os.sep)]:
        return process
    return None


def _still_training(run_dir: Path, exit_grace_s: float = 30.0) -> bool:
    """Whether the run's child is alive and not merely exiting: one that has written its
    RunFinished is given a moment to end before the run counts as free to start again."""
    import psutil

    process = _running_child(run_dir)
    if process is None:
        return False
    events = read_events(RunDir(run_dir).events)
    if not (events and isinstance(events[-1], RunFinished)):
        return True
    try:
        process.wait(exit_grace_s)
    except psutil.TimeoutExpired:
        return True
    except psutil.Error:
        pass
    return False


def list_runs() -> list[RunSummary]:
    """Every run in the app's runs folder, newest first. A folder deleted meanwhile is left out."""
    summaries = []
    for path in runs_dir().iterdir():
        try:
            summary = summarize_run(path) if path.is_dir() else None
        except OSError:
            continue  # vanished while being read
        if summary is not None:
            summaries.append(summary)
    return sorted(summaries, key=lambda s: s.name, reverse=True)


# running a run elsewhere ------------------------------------------------------------------------
def launch_commands(run_dir: Path, gpus: int = 1) -> dict[str, str]:
    """The command lines that run this run's config on another machine (or this one, headless)."""
    folder = shlex.quote(str(run_dir))
    return {
        "one process": f"python -m engine.train {folder}",
        "torchrun": f"torchrun --standalone --nproc_per_node {gpus} -m engine.train {folder}",
        "accelerate": f"accelerate launch --num_processes {gpus} -m engine.train {folder}",
        "command line": f"lora-studio train --config {shlex.quote(str(Path(run_dir) / 'config.json'))}",
    }


def export_run(config: RunConfig, out_dir: Path, gpus: int = 1) -> Path:
    """Write ``config.json`` and ``launch.sh`` into a new folder: a run directory that
    ``python -m engine.train``, ``torchrun`` or ``accelerate launch`` run as it is."""
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise StudioError(f"{out_dir} is not empty: export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    for key in ("dataset", "model"):
        path = Path(data[key]).expanduser()
        if path.exists():
            data[key] = str(path.resolve())  # the same files on the other machine, or edit config.json there
    data["schedule_start"] = 0
    write_json(RunDir(out_dir).config, data)
    commands = launch_commands(out_dir.resolve(), gpus)
    script = ["#!/usr/bin/env bash",
              "# Runs this LoRA Studio run headless. The model and dataset paths in config.json must exist here.",
              "# Pick one of the lines below; progress goes to events.jsonl beside this file.",
              "set -euo pipefail", 'cd "$(dirname "$0")"',
              f"# {commands['one process']}", f"# {commands['accelerate']}", commands["torchrun"], ""]
    launch = out_dir / "launch.sh"
    launch.write_text("\n".join(script), encoding="utf-8")
    launch.chmod(0o755)
    return out_dir
