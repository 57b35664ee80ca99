"""What every hostile-input test checks the same way: a command is refused with one readable
line and exit code 2 (never the CLI's "unexpected" bug path, never a traceback), and the studio's
home is left as it was."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

from engine.paths import adapters_dir, models_dir, runs_dir
from helpers import ROOT


def run_cli_process(argv: list[str], timeout: float = 60, env: Optional[dict] = None) -> tuple[int, str, str]:
    """The command line as a user runs it, in a child process with a time limit (for what could
    hang or must run in a process of its own)."""
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", *[str(part) for part in argv]],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    return done.returncode, done.stdout, done.stderr


def assert_refused(code: int, out: str, err: str, message: str) -> str:
    """Exit code 2 and exactly one ``error:`` line, holding ``message``; the line is returned."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, (code, err[-800:])
    assert "Traceback" not in err and "Traceback" not in out, err[-800:]
    assert len(errors) == 1, err[-800:]
    assert "unexpected" not in errors[0], errors[0]
    assert message in errors[0], errors[0]
    return errors[0]


def home_snapshot() -> dict[str, list[str]]:
    """Every entry (hidden ones included) in the library, the model store and the runs folder."""
    return {folder.name: sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            for folder in (adapters_dir(), models_dir(), runs_dir())}


def assert_home_unchanged(before: dict[str, list[str]]) -> None:
    assert home_snapshot() == before


def library_entries(root: Optional[Path] = None) -> list[str]:
    return sorted(p.name for p in (root or adapters_dir()).iterdir())
