"""Commands from the supervising process to a training child: pause, resume, stop.

The parent writes ``RUN_DIR/control.json`` atomically; the child polls it at
every step boundary (one ``stat`` call, cheap). A file rather than a signal
works on every platform and for every rank under ``torchrun``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from engine.run.rundir import RunDir
from engine.core.atomic import write_json

COMMANDS = ("run", "pause", "stop")


def send_command(run_dir: Path, command: str, *, save: bool = True) -> None:
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}")
    write_json(RunDir(run_dir).control, {"command": command, "save": save})


class ControlReader:
    """Reads the latest command, re-parsing only when the file changed."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunDir(run_dir).control
        self._mtime: Optional[int] = None
        self._state = {"command": "run", "save": True}

    def poll(self) -> dict:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return self._state
        if mtime != self._mtime:
            try:
                self._state = json.loads(self.path.read_text(encoding="utf-8"))
                self._mtime = mtime
            except (OSError, ValueError):
                pass  # caught mid-replace; read again at the next poll
        return self._state

    @property
    def command(self) -> str:
        return self.poll().get("command", "run")
