"""Training runs as child processes: start, stream events back, pause, resume, stop;
continue a finished run ("train more"); attach to runs a crashed studio left behind.

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

The run record is ``engine.jobs.summary``, the pid file ``engine.jobs.pidfile``, the checks
before a start ``engine.jobs.checks`` and the config of a train-more ``engine.jobs.train_more``.
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

from engine.core.atomic import write_json
from engine.core.child_python import python_module_command
from engine.core.choices import RunStatus
from engine.errors import StudioError, first_line
from engine.jobs import launcher
from engine.jobs.checks import check_can_run
from engine.jobs.child_env import child_environment
from engine.jobs.pidfile import running_child, write_pid_file
from engine.jobs.summary import load_config, log_tail, summarize_run
from engine.jobs.train_more import more_training
from engine.paths import runs_dir
from engine.run.config import RunConfig
from engine.run.control import send_command
from engine.run.events import Event, EventTail, EventWriter, RunFinished, RunStarted
from engine.run.owner import HANDOVER_ENV, RunOwnership, own_run
from engine.run.rundir import RunDir

POLL_S = 0.1
# How long a crash report waits for the run's lock: a child just killed lets go as it exits.
_OWNER_WAIT_S = 2.0


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
        with own_run(run_dir) as owner:
            return cls._spawn(run_dir, owner)

    @classmethod
    def resume(cls, run_dir: Path) -> "TrainingJob":
        """Start the child again on an existing run; it continues from its last checkpoint.

        Refused while another process trains the run, and for a run that trained all its steps."""
        run_dir = Path(run_dir)
        config = load_config(run_dir)  # a folder that is not a run gets refused, and no lock file
        with own_run(run_dir) as owner:
            summary = summarize_run(run_dir)
            if summary is not None and summary.nothing_to_resume:
                raise StudioError(summary.nothing_to_resume)
            check_can_run(config)  # refuse early, in the caller, if it is unusable
            return cls._spawn(run_dir, owner)

    @classmethod
    def train_more(cls, run_dir: Path, *, steps: Optional[int] = None, epochs: Optional[float] = None) -> "TrainingJob":
        """Continue a finished run for ``steps`` more steps or ``epochs`` more epochs.

        It goes on from the run's last checkpoint with its optimizer state; the learning-rate
        schedule (warm-up included) runs again over the new steps, and the result is saved as
        a new library entry beside the first.
        """
        run_dir = Path(run_dir)
        load_config(run_dir)  # a folder that is not a run gets refused, and no lock file
        # Planned under the lock: two train-mores at once would both extend the same end.
        with own_run(run_dir) as owner:
            extended = more_training(run_dir, steps=steps, epochs=epochs)
            check_can_run(extended)
            write_json(RunDir(run_dir).config, extended.to_dict())
            return cls._spawn(run_dir, owner)

    @classmethod
    def attach(cls, run_dir: Path) -> "TrainingJob":
        """Watch a run whose child is still going (started by a studio that has since died).

        Its events so far are replayed first, so a window can redraw the run's curves."""
        run_dir = Path(run_dir)
        found = running_child(run_dir)
        if found is None:
            raise StudioError(f"run {run_dir.name} is not running any more: resume it instead")
        return cls(run_dir, _Child(found=found), history=True)

    @classmethod
    def _spawn(cls, run_dir: Path, owner: RunOwnership) -> "TrainingJob":
        """Start the child on a run this process owns, and hand the run over to it."""
        send_command(run_dir, "run")
        env = dict(child_environment(os.environ), **{HANDOVER_ENV: str(os.getpid())})
        warm = launcher.start_run(run_dir, RunDir(run_dir).log, env)
        if warm is not None:
            child = _Child(warm=warm)
        else:
            with open(RunDir(run_dir).log, "ab") as log:
                child = _Child(popen=subprocess.Popen(
                    python_module_command("engine.train", run_dir),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, which stops the run cleanly
                ))
        owner.hand_over(child.pid)
        write_pid_file(run_dir, child.pid)
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
        """Every event until (and including) the run's RunFinished, blocking between them.

        It never blocks past the supervisor's end: once that thread is gone and nothing is left
        to read, the run's end (or, should the thread have died without one, a failure saying
        so) is the last event."""
        while True:
            try:
                event = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._supervisor.is_alive() or not self._queue.empty():
                    continue
                event = self._finished or RunFinished(status=RunStatus.FAILED,
                                                      error="the run's supervisor ended without reporting its end")
            yield event
            if isinstance(event, RunFinished):
                return

    def wait(self, timeout: Optional[float] = None) -> Optional[RunFinished]:
        self._done.wait(timeout)
        return self._finished

    def _supervise(self) -> None:
        """Follow the child to its end. Whatever fails here (a full disk, an unreadable events
        file, a bug), the run still ends with one RunFinished and ``_done`` set: the CLI and the
        window wait for exactly those."""
        try:
            self._follow_child()
        except Exception as exc:  # noqa: BLE001  (anything: the waiters must hear of it)
            self._child.kill()  # a run nobody watches any more must not train on unseen
            self._publish_crash(self._child.returncode, lost=f"{type(exc).__name__}: {first_line(exc)}")
        finally:
            if self._finished is None:  # even the crash report failed: still end the wait
                self._publish(RunFinished(status=RunStatus.FAILED, error="the run's supervisor failed"))
            try:
                RunDir(self.run_dir).pid.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only folder: the pid file names a process that has ended, which readers check
            self._done.set()

    def _follow_child(self) -> None:
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

    def _publish(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            self._finished = event
        self._queue.put(event)

    def _publish_crash(self, returncode: Optional[int], lost: Optional[str] = None) -> None:
        """The RunFinished the child could not write: it died, was killed, or (``lost``: why)
        the supervisor could not follow it any more and ended it."""
        if lost is not None:
            error = (f"following the run failed ({lost}), so its training process was ended; resume the run to "
                     "continue from its last checkpoint")
            status = RunStatus.FAILED
        elif self._killed:
            error = "the run was ended at once by the user; resume it to continue from its last checkpoint"
            status = RunStatus.STOPPED
        else:
            code = f"exit code {returncode}" if returncode is not None else "it was not started by this window"
            error = f"the training process ended unexpectedly ({code}). {log_tail(self.run_dir)}"
            status = RunStatus.FAILED
        event = RunFinished(status=status, error=error.strip())
        try:
            # Written as the run's owner: a resume started meanwhile owns its events now.
            with own_run(self.run_dir, wait_s=_OWNER_WAIT_S):
                unwritten = _record_event(RunDir(self.run_dir).events, event)
        except StudioError as exc:
            unwritten = first_line(exc)
        if unwritten is not None:
            # The caller still hears how the run ended, and that its folder does not say so.
            event = RunFinished(status=RunStatus.FAILED,
                                error=f"{event.error} (this report could not be written to the run folder: {unwritten})")
        self._publish(event)


def _record_event(path: Path, event: Event) -> Optional[str]:
    """Append ``event`` so the run folder tells the same story as the window did; why it could
    not be written (a full disk, a read-only folder), or None once it is."""
    try:
        _end_last_line(path)
        writer = EventWriter(path)
    except OSError as exc:
        return f"{exc.strerror or exc}"
    try:
        writer.emit(event)
        return None
    except OSError as exc:
        return f"{exc.strerror or exc}"
    finally:
        try:
            writer.close()
        except OSError:
            pass  # the failed write's buffer cannot be flushed either: already reported


def _end_last_line(path: Path) -> None:
    """A child killed in the middle of writing an event leaves half a line: end it, so that the
    report appended next is a line of its own that readers can parse."""
    with open(path, "ab+") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")


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
