"""The studio's Python children start as ``-m MODULE ARGS`` with ``sys.executable``, which in the
desktop bundle is the ``lora-studio`` binary: its entry point runs the module as Python's ``-m``
does (arguments, exit status), before anything of its own."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.core.child_python import python_module_command
from helpers import ROOT


def _entry_point(*args: str, cwd) -> subprocess.CompletedProcess:
    """``lora-studio ARGS``, as the bundle's binary runs it (studio.launch's main)."""
    return subprocess.run([sys.executable, "-m", "studio.launch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_the_entry_point_runs_a_module_with_its_arguments(tmp_path):
    (tmp_path / "in.json").write_text('{"b": 1, "a": [2]}')
    command = python_module_command("json.tool", "--sort-keys", tmp_path / "in.json")
    assert command[:3] == [sys.executable, "-m", "json.tool"]
    done = _entry_point(*command[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"a": [2], "b": 1} and done.stdout.startswith('{\n    "a"')


def test_the_module_exit_status_is_the_process_status(tmp_path):
    done = _entry_point("-m", "json.tool", str(tmp_path / "missing.json"), cwd=tmp_path)
    assert done.returncode == 2 and "missing.json" in done.stderr
