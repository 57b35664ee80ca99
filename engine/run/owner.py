"""One owner per run: the process training a run folder holds an OS lock on ``RUN_DIR/lock``.

Two processes training one run folder would both append to its events, both write its
checkpoints and both save an adapter. So whoever is about to train a run takes its lock first,
and anyone else is refused at once with one line naming the holder:

- the parent (``engine.jobs.training_job``) holds it while it plans the run (a start, a resume, a
  train-more) and starts the child, then hands it over to the child;
- the child (``python -m engine.train RUN_DIR``, started cold or forked by the warm-start standby)
  holds it for as long as it trains. Under torchrun / accelerate the ranks share the one folder
  and rank 0 alone writes to it, so rank 0 alone holds the lock.

The lock is ``flock`` (through ``filelock.lock_descriptor``): the kernel lets go of it when the
holder's process ends, however it ends, SIGKILL included, so a crash leaves no stale lock.

The file also names its holder (pid and start time), for the refusal and for the hand-over:
the parent writes the child's pid there and lets go, and whoever takes the lock in the instant
before the child does finds a live owner named and backs off, while the child, told by
``HANDOVER_ENV`` that its parent is handing it the run, waits for the lock. A name is only
believed while that very process is alive (same pid, same start time): a dead holder's note is
no lock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from engine.core.atomic import write_refused
from engine.errors import StudioError
from engine.run.rundir import RunDir

# Set in the child's environment by the parent that hands it the run: "wait for me to let go".
HANDOVER_ENV = "LORA_STUDIO_RUN_HANDOVER"
HANDOVER_WAIT_S = 60.0  # the parent lets go once the child has a pid: milliseconds, unless the machine stalls
_POLL_S = 0.02


class RunOwnership:
    """This process's hold on a run folder. As a context manager it lets go on exit, unless it
    was handed over meanwhile."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self._fd: Optional[int] = fd

    def hand_over(self, pid: int) -> None:
        """Name ``pid`` (the child just started) the owner, and let go for it to take the lock."""
        if self._fd is not None:
            _write_note(self._fd, pid)
            self._close()

    def release(self) -> None:
        """Let go; the note naming this process goes too, so that nobody takes it for a live owner."""
        if self._fd is not None:
            _clear_note(self._fd)
            self._close()

    def _close(self) -> None:
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> "RunOwnership":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def own_run(run_dir: Path, wait_s: float = 0.0) -> RunOwnership:
    """Take the run folder for this process, or refuse with one line naming the process that has
    it. ``wait_s``: how long to wait for the holder to let go (a child being handed the run)."""
    from filelock import lock_descriptor

    run_dir = Path(run_dir)
    path = RunDir(run_dir).lock
    try:
        # Never through a link: a planted ``lock -> ~/somefile`` must not get that file truncated.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise _cannot_take(run_dir, path, exc) from exc
    deadline = time.monotonic() + wait_s
    try:
        while not lock_descriptor(fd, blocking=False):
            if time.monotonic() >= deadline:
                raise StudioError(_busy(run_dir, _live_owner(fd)))
            time.sleep(_POLL_S)
        holder = _live_owner(fd)
        if holder not in (None, os.getpid()):  # handed over to a child that has not taken it yet
            raise StudioError(_busy(run_dir, holder))
        _write_note(fd, os.getpid())
    except OSError as exc:
        os.close(fd)
        raise _cannot_take(run_dir, path, exc) from exc
    except BaseException:
        os.close(fd)
        raise
    return RunOwnership(run_dir, fd)


def take_over_run(run_dir: Path) -> RunOwnership:
    """The training child's hold: waits for the parent's hand-over when it was started by one,
    refuses at once when someone else trains the run (a second torchrun, a hand-typed command)."""
    return own_run(run_dir, HANDOVER_WAIT_S if os.environ.get(HANDOVER_ENV) else 0.0)


def _cannot_take(run_dir: Path, path: Path, exc: OSError) -> StudioError:
    """A full disk or a read-only folder in the words every write uses; anything else as it is."""
    return write_refused(run_dir, exc) or StudioError(
        f"cannot take run {run_dir.name} for training: {exc.strerror or exc} ({path})")


def _busy(run_dir: Path, holder: Optional[int]) -> str:
    who = f"process {holder}" if holder is not None else "another process"
    return f"run {run_dir.name} is being trained by {who}: watch it, or stop it before starting it again"


def _write_note(fd: int, pid: int) -> None:
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = 0.0  # already gone: a note no process matches
    _clear_note(fd)
    os.pwrite(fd, f"{pid} {started!r}\n".encode(), 0)


def _clear_note(fd: int) -> None:
    os.ftruncate(fd, 0)


def _live_owner(fd: int) -> Optional[int]:
    """The pid the lock file names, if that very process (same start time) is still alive."""
    import psutil

    try:
        pid, started = os.pread(fd, 100, 0).decode().split()
        process = psutil.Process(int(pid))
        if process.status() == psutil.STATUS_ZOMBIE or abs(process.create_time() - float(started)) > 0.01:
            return None
    except (OSError, ValueError, UnicodeDecodeError, psutil.Error):
        return None  # no note, a half-written one, or a process long gone
    return int(pid)
