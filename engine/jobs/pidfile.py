"""The run's pid file: written when its child starts, read to find the child still alive
(by the supervisor's callers and the run record). Whether anyone may start the run again is
the run's lock's to say (``engine.run.owner``), which dies with its process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.run.rundir import RunDir


def write_pid_file(run_dir: Path, pid: int) -> None:
    """The child's pid and start time: together they name the process even once the number
    has been reused, whichever way it was started."""
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None  # already gone: the supervisor reports how it ended
    RunDir(run_dir).pid.write_text(f"{pid} {started}" if started is not None else str(pid))


def running_child(run_dir: Path) -> Any:
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
