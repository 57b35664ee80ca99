"""The first minutes of a user with an installed ``lora-studio``, however it was installed.

Not a test module: the checks of built distributions (the wheel, the wheelhouse, the bundle, the
.deb) call ``run_smoke`` with the program they installed, a console script in a venv or a frozen
binary. It runs that program as a user would, from a folder outside the checkout, with its own
studio home: ``doctor --json``, a 2-step train on the sample dataset that ships with the package,
``chat`` with the adapter the run made, and the window opened offscreen and closed. Each step
asserts what the user would see go wrong, and the times are returned for the reports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STEP_TIMEOUT_S = 240  # one command, a process start included; a train of 2 steps takes seconds
WINDOW_TIMEOUT_S = 120  # the window shown and the training libraries loaded behind it
LIBRARIES_LOADED = "Training libraries loaded in"
# What the log or Qt's messages say when something is missing or broken. (A first start logs a
# warning that there are no settings yet: not a complaint.)
COMPLAINTS = (" ERROR ", " CRITICAL ", "Traceback", "No such file", "Cannot open",  # Qt's, for a missing SVG
              "Error calling Python override")  # PySide's, for a sidebar icon that failed to paint
SAMPLE = "engine/resources/datasets/pirate_persona.jsonl"
# Where the package data lies under an install: a venv's site-packages, PyInstaller's one-folder
# bundle (_internal/), or a tree that holds the packages at its top.
_SAMPLE_PLACES = (f"lib/python3*/site-packages/{SAMPLE}", f"_internal/{SAMPLE}", SAMPLE)


@dataclass
class Smoke:
    """What the smoke saw: the parsed --json output of each command, and how long each took."""

    doctor: dict
    events: list[dict]  # the train's event stream, then its summary and anything printed after
    summary: dict
    reply: dict
    seconds: dict[str, float] = field(default_factory=dict)


def run_smoke(command: list[str], home: Path, cwd: Path, model: Path, env: dict | None = None,
              dataset: Path | None = None, train_options: tuple[str, ...] = (), name: str = "smoke") -> Smoke:
    """Run the installed ``command`` (``[path]``, or a path and leading arguments) as a user.

    ``model`` is a local model folder (the tests' tiny model), ``dataset`` defaults to the sample
    shipped beside the program, ``env`` adds to (or, with None values, removes from) the
    environment; the studio home is ``home`` and the Qt platform offscreen whatever ``env`` says.
    The adapter is saved under ``name``; ``train_options`` are added to the train command."""
    user = _User(command, home, cwd, env)
    seconds = {}

    started = time.monotonic()
    [doctor] = user.json("doctor")
    seconds["doctor"] = time.monotonic() - started
    assert doctor["home"] == str(home), doctor["home"]
    assert doctor["devices"][-1]["kind"] == "cpu" and doctor["devices"][-1]["total_bytes"] > 0, doctor["devices"]
    assert doctor["versions"]["torch"] != "not installed", doctor["versions"]
    assert doctor["window"]["can_open"], doctor["window"]

    dataset = dataset or packaged_sample(Path(command[0]))
    started = time.monotonic()
    events = user.json("train", "--model", str(model), "--dataset", str(dataset), "--max-steps", "2", "--batch", "2",
                       "--rank", "4", "--max-length", "64", "--name", name, *train_options)
    seconds["train"] = time.monotonic() - started
    summary = next(event for event in events if "status" in event and "event" not in event)
    kinds = [event.get("event") for event in events[:events.index(summary)]]  # the events stream first
    assert kinds[0] == "LogLine" and "RunStarted" in kinds and "StepMetrics" in kinds and kinds[-1] == "RunFinished"
    assert summary["status"] == "completed" and Path(summary["run_dir"]).is_dir(), summary
    assert Path(summary["adapter"]).name == name and Path(summary["adapter"]).is_relative_to(home), summary

    started = time.monotonic()
    [reply] = user.json("chat", "--model", str(model), "--adapter", name, "--prompt", "Hello", "--max-new-tokens", "8")
    seconds["chat"] = time.monotonic() - started
    assert set(reply) >= {"reply", "tokens", "tokens_per_second", "time_to_first_token_s"}, reply
    assert 0 < reply["tokens"] <= 8 and isinstance(reply["reply"], str), reply

    started = time.monotonic()
    _open_and_close_the_window(user)
    seconds["window"] = time.monotonic() - started
    return Smoke(doctor, events, summary, reply, seconds)


def packaged_sample(program: Path) -> Path:
    """The sample dataset installed with ``program``: looked for under its folder and the one above."""
    program = program.resolve()
    for root in (program.parent, program.parent.parent):
        for place in _SAMPLE_PLACES:
            found = sorted(root.glob(place))
            if found:
                return found[0]
    raise AssertionError(f"no {SAMPLE} installed beside {program}")


class _User:
    """Runs the installed program in a folder outside the checkout, with its own studio home."""

    def __init__(self, command: list[str], home: Path, cwd: Path, env: dict | None) -> None:
        self.command, self.home, self.cwd = [str(part) for part in command], home, cwd
        # Nothing of the checkout's Python may leak in: the program must find its own packages.
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        for key, value in (env or {}).items():
            if value is None:
                self.env.pop(key, None)
            else:
                self.env[key] = str(value)
        self.env.update(LORA_STUDIO_HOME=str(home), QT_QPA_PLATFORM="offscreen")

    def run(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                                timeout=STEP_TIMEOUT_S)
        assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def json(self, *args: str) -> list:
        """The program's JSON output, one value per line."""
        return [json.loads(line) for line in self.run(*args, "--json").stdout.splitlines() if line.strip()]


def _open_and_close_the_window(user: _User) -> None:
    """No arguments open the window, which loads the training libraries once it is shown and
    complains of nothing; then it is closed as a session logging out closes it (SIGTERM)."""
    log = user.home / "logs" / "studio.log"
    stderr_file = user.home.parent / f"{user.home.name}-window-stderr.txt"
    with open(stderr_file, "w", encoding="utf-8") as stderr:
        window = subprocess.Popen(user.command, cwd=user.cwd, env=user.env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            loaded = _wait_for(lambda: log.is_file() and LIBRARIES_LOADED in log.read_text(encoding="utf-8"),
                               WINDOW_TIMEOUT_S, window)
        finally:
            end_process(window)
    text, errors = log.read_text(encoding="utf-8"), stderr_file.read_text(encoding="utf-8")
    assert loaded, f"the window did not load the training libraries in {WINDOW_TIMEOUT_S} s:\n{text}\n{errors}"
    assert f"Log file: {log}" in text
    for complaint in COMPLAINTS:
        assert complaint not in text and complaint not in errors, f"{complaint!r} in the log:\n{text}\n{errors}"


def _wait_for(condition, timeout_s: float, process: subprocess.Popen) -> bool:
    """Whether ``condition`` came true within the time, the process still running meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


def end_process(process: subprocess.Popen) -> None:
    """The studio has no quit command from outside: SIGTERM, as a session logging out sends."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
