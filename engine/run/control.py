"""Commands from the supervising process to a training child: pause, resume, stop.

The parent writes ``RUN_DIR/control.json`` atomically; the child polls it at
every step boundary (one ``stat`` call, cheap). A file rather than a signal
works on every platform and for every rank under ``torchrun``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

from engine.core.atomic import write_json
from engine.core.fields import dataclass_from_dict
from engine.run.rundir import RunDir

COMMANDS = ("run", "pause", "stop")
# What the parent writes is a few dozen bytes; a larger file is not one of its commands and is
# not read at every step.
MAX_CONTROL_BYTES = 4096


@dataclass
class Control:
    """The one object control.json holds."""

    command: Literal["run", "pause", "stop"] = "run"
    save: bool = True


def send_command(run_dir: Path, command: str, *, save: bool = True) -> None:
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}")
    write_json(RunDir(run_dir).control, asdict(Control(command, save)))


class ControlReader:
    """Reads the latest command, re-parsing only when the file changed.

    control.json is a file in the run folder like any other: one that is not a ``Control``
    object (not JSON, a list, an unknown command, a ``save`` that is not true or false, far too
    large) is ignored, and the last good command stands; ``problem`` says why it was ignored."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir(run_dir).control
        self._mtime: Optional[int] = None
        self._state = asdict(Control())
        self.problem: Optional[str] = None

    def poll(self) -> dict:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return self._state
        if stat.st_mtime_ns != self._mtime:
            try:
                self._read(stat.st_size)
                self._mtime = stat.st_mtime_ns
            except OSError:
                pass  # caught mid-replace; read again at the next poll
        return self._state

    def _read(self, size: int) -> None:
        if size > MAX_CONTROL_BYTES:
            self.problem = f"{self.path.name} is {size} bytes, not a control command"
            return
        try:
            self._state = asdict(dataclass_from_dict(Control, json.loads(self.path.read_bytes())))
            self.problem = None
        except (ValueError, RecursionError) as exc:
            self.problem = f"{self.path.name} is not a control command: {exc}"

    @property
    def command(self) -> str:
        return self.poll()["command"]
