"""Faults leave no wreckage and no hang (issue 23, class 9): a full disk under a crash report, a
supervisor that cannot follow its run, a command killed mid-write, a read-only home.

The faults are real: a small tmpfs that is full, processes killed with SIGKILL, a home bind-mounted
read-only in a mount namespace of its own (``unshare``, so that it works for root, for whom
permission bits stop nothing, and for users alike; a user without namespaces gets a home without
write permission instead)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.atomic import staging_path, sweep_staging
from engine.core.choices import RunStatus
from engine.jobs.training_job import TrainingJob, _Child
from engine.paths import adapters_dir, models_dir, runs_dir, studio_home
from engine.run.events import RunFinished, RunStarted, read_events
from engine.run.rundir import RunDir
from helpers import ROOT, run_cli, training_processes, write_messages_dataset
from refusals import assert_refused

WAIT_S = 20


# helpers ----------------------------------------------------------------------------------------
def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _staged(target: Path, pid: int, kind: str = "partial", size: int = 1024) -> Path:
    """What a writer with ``pid`` leaves beside ``target`` under the staging rule."""
    path = target.with_name(f".{target.name}.{pid}-0123abcd.{kind}")
    if kind == "tmp":
        path.write_bytes(b"\0" * size)
    else:
        path.mkdir(parents=True)
        (path / "weights.bin").write_bytes(b"\0" * size)
    return path


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 256 KiB tmpfs, filled to the last byte (mounting needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root here")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(OSError):
        (disk / "probe").write_bytes(b"x" * 8192)


def _run_folder(parent: Path, tiny_model_dir: Path) -> Path:
    from engine.run.config import RunConfig

    dataset = write_messages_dataset(parent / "pirate.jsonl")
    run_dir = parent / "run"
    run_dir.mkdir()
    config = RunConfig(model=str(tiny_model_dir), dataset=str(dataset), rank=4, max_steps=2, batch_size=4,
                       max_length=64)
    RunDir(run_dir).config.write_text(json.dumps(config.to_dict()))
    started = RunStarted(run_dir=str(run_dir), model=str(tiny_model_dir), method="lora", device="cpu",
                         total_steps=2, trainable_params=1, total_params=2, train_examples=16)
    RunDir(run_dir).events.write_text(json.dumps(started.to_dict()) + "\n")
    return run_dir


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, start_new_session=True)


# every wait has an end, every failure to report is reported -------------------------------------
def test_a_crash_report_on_a_full_disk_still_ends_the_wait_and_says_it_was_not_written(full_disk, tiny_model_dir):
    run_dir = _run_folder(full_disk, tiny_model_dir)
    RunDir(run_dir).events.write_bytes(b"")  # the child died before its first event
    _fill(full_disk)
    job = TrainingJob(run_dir, _Child(popen=_python("import sys; sys.exit(3)")))

    finished = job.wait(WAIT_S)
    assert finished is not None and not job.running, "the supervisor never ended"
    assert finished.status == RunStatus.FAILED
    assert "exit code 3" in finished.error
    assert "this report could not be written to the run folder: the disk is full (" in finished.error
    assert [type(e) for e in job.events()] == [RunFinished]  # and the CLI's loop ends on it


def test_resuming_a_run_on_a_full_disk_is_refused_in_one_line(full_disk, tiny_model_dir, capsys):
    run_dir = _run_folder(full_disk, tiny_model_dir)
    _fill(full_disk)

    assert_refused(*run_cli(["train", "--resume", run_dir], capsys), f"the disk is full ({run_dir})")


def test_a_run_whose_record_cannot_be_read_is_not_started(tmp_path, tiny_model_dir, capsys):
    """The CLI side of a run folder that cannot be followed: its events cannot be read, so it
    is refused in one line before a training process exists (the supervisor's own end, when
    this happens to a run already going, is the next test)."""
    run_dir = _run_folder(tmp_path, tiny_model_dir)
    RunDir(run_dir).events.unlink()
    RunDir(run_dir).events.mkdir()

    assert_refused(*run_cli(["train", "--resume", run_dir], capsys), "the run's events cannot be read (")
    assert not training_processes()


def test_a_supervisor_that_cannot_follow_its_run_ends_it_and_says_so(tmp_path, tiny_model_dir):
    run_dir = _run_folder(tmp_path, tiny_model_dir)
    RunDir(run_dir).events.unlink()
    RunDir(run_dir).events.mkdir()  # unreadable as a file: following the run fails
    child = _python("import time; time.sleep(60)")
    job = TrainingJob(run_dir, _Child(popen=child))

    finished = job.wait(WAIT_S)
    assert finished is not None and not job.running
    assert finished.status == RunStatus.FAILED and finished.error.startswith("following the run failed (")
    assert "could not be written" in finished.error  # the events "file" takes no report either
    assert child.wait(WAIT_S) == -signal.SIGKILL  # no run trains on that nobody watches


def test_a_child_killed_mid_line_still_gets_its_crash_report_on_a_line_of_its_own(tmp_path, tiny_model_dir):
    run_dir = _run_folder(tmp_path, tiny_model_dir)
    with open(RunDir(run_dir).events, "a") as handle:
        handle.write('{"event": "StepMetrics", "step": 1, "lo')  # SIGKILL while writing an event
    finished = TrainingJob(run_dir, _Child(popen=_python("import sys; sys.exit(9)"))).wait(WAIT_S)

    assert finished.status == RunStatus.FAILED and "could not be written" not in finished.error
    recorded = [e for e in read_events(RunDir(run_dir).events) if isinstance(e, RunFinished)]
    assert recorded == [finished]


# stale staging is swept, live staging never -------------------------------------------------------
def test_a_merge_killed_mid_write_leaves_no_staging_once_the_next_merge_starts(tiny_model_dir, tmp_path):
    from lora_adapters import library_adapter

    library_adapter(tiny_model_dir, "pirate")
    out = tmp_path / "out"
    out.mkdir()
    merged = out / "merged"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    merge = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "adapters", "merge", "pirate", "--output",
                              str(merged)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(out.glob(".merged.*.partial")) and merge.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    [staging] = list(out.glob(".merged.*.partial"))

    assert sweep_staging(out) == [] and staging.is_dir()  # its writer is alive: never swept
    merge.send_signal(signal.SIGKILL)
    merge.wait()
    assert staging.is_dir() and not merged.exists()  # the kill's wreckage, and no half output

    code, out_text, err = run_cli(["adapters", "merge", "pirate", "--output", merged], capsys=_NoCapture())
    assert code == 0, err
    assert not staging.exists() and sorted(p.name for p in out.iterdir()) == ["merged"]


class _NoCapture:
    """run_cli's capsys where the output is not inspected."""

    def readouterr(self):
        return "", ""


def test_the_next_command_sweeps_what_killed_writers_left_in_the_home(tiny_model_dir, tmp_path, capsys):
    dead = _dead_pid()
    run = runs_dir() / "20260101-000000-run"
    (run / "checkpoints").mkdir(parents=True)
    stale = [
        _staged(adapters_dir() / "import", dead),  # an adapter import
        _staged(adapters_dir() / "pirate", dead),  # a library save
        _staged(models_dir() / "converted", dead),  # a GGUF conversion into the store
        _staged(adapters_dir() / ".trash" / "20260101-x", dead, "removing"),  # emptying the trash
        _staged(run / "config.json", dead, "tmp"),  # an atomic JSON write
        _staged(run / "checkpoints" / "checkpoint-4", dead, "old"),  # a checkpoint moved aside
        _staged(studio_home() / "settings.json", dead, "tmp"),
    ]
    live = _staged(adapters_dir() / "busy", os.getpid())  # being written by a process that runs
    legacy = adapters_dir() / ".old-entry.0a1b2c3d.partial"  # named before the rule: stale after a day
    legacy.mkdir()
    os.utime(legacy, (time.time() - 2 * 86400,) * 2)
    fresh_legacy = adapters_dir() / ".new-entry.0a1b2c3d.partial"
    fresh_legacy.mkdir()

    code, out, err = run_cli(["adapters", "list"], capsys)

    assert code == 0, err
    assert [p for p in stale if p.exists()] == [] and not legacy.exists()
    assert live.is_dir() and fresh_legacy.is_dir()


def test_a_pid_reused_by_a_later_process_does_not_keep_staging_alive(tmp_path):
    staged = _staged(tmp_path / "entry", os.getpid())
    os.utime(staged, (time.time() - 86400,) * 2)  # staged long before this process started
    assert sweep_staging(tmp_path) == [staged] and not staged.exists()


def test_every_staged_sibling_follows_the_rule_and_names_its_writer(tmp_path):
    for kind in ("tmp", "partial", "removing", "old", "merged"):
        path = staging_path(tmp_path / "entry", kind)
        assert path.parent == tmp_path and path.name.startswith(f".entry.{os.getpid()}-")
        assert path.name.endswith(f".{kind}")


def test_a_killed_save_in_checkpoint_staging_is_cleared_when_the_run_starts_again(tiny_model_dir, tmp_path):
    from engine.train import recipe
    from training_runs import new_run

    run = new_run(tmp_path, tiny_model_dir, max_steps=2, name="staged")
    half = RunDir(run.run_dir).checkpoints / ".staging" / "checkpoint-1"
    half.mkdir(parents=True)
    (half / "optimizer.pt").write_bytes(b"\0" * 4096)  # a save killed halfway

    assert recipe.run_and_report(recipe.Run(run.run_dir)).status == "completed"
    assert not half.exists()


# a read-only home -------------------------------------------------------------------------------
_DRIVER = """
import contextlib, io, json, sys
from engine.cli import main as cli
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""

_MOUNT_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def _read_only_command(home: Path, command: list[str]) -> tuple[list[str], callable]:
    """``command`` run with ``home`` read-only, and what undoes it afterwards."""
    if _unshare_works():
        return ["unshare", "-rm", "sh", "-c", _MOUNT_READ_ONLY, str(home), *command], lambda: None
    if os.geteuid() == 0:
        pytest.skip("a read-only home needs unshare here (root writes through permission bits)")
    modes = {path: path.stat().st_mode for path in [home, *home.rglob("*")]}
    for path in modes:
        path.chmod(modes[path] & ~0o222)
    return command, lambda: [path.chmod(mode) for path, mode in modes.items()]


def _in_read_only_home(home: Path, code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command, undo = _read_only_command(home, [sys.executable, "-c", code, *args])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LORA_STUDIO_HOME": str(home), "QT_QPA_PLATFORM": "offscreen"}
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    finally:
        undo()


@pytest.fixture
def lived_in_home(studio_home, tiny_model_dir, tmp_path) -> Path:
    """A home with a model, an adapter and a run in it."""
    from engine.adapters.library import save_adapter
    from engine.models.store import add_model
    from lora_adapters import write_peft_adapter

    add_model(tiny_model_dir, name="tiny")
    save_adapter("pirate", lambda folder: write_peft_adapter(tiny_model_dir, folder), {"base_model": str(tiny_model_dir)},
                 lambda name: f"# {name}\n")
    _run_folder(runs_dir(), tiny_model_dir).rename(runs_dir() / "20260101-000000-old-run")
    return studio_home


def test_a_read_only_home_lists_and_refuses_every_write_in_one_line(lived_in_home, tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "rows.jsonl")
    zipped = shutil.make_archive(str(tmp_path / "elsewhere"), "zip", adapters_dir() / "pirate")
    listing = [["adapters", "list"], ["models", "list"], ["runs", "list"], ["doctor"], ["adapters", "trash"]]
    writing = [["adapters", "rename", "pirate", "parrot"], ["adapters", "delete", "pirate"],
               ["adapters", "import", zipped], ["adapters", "edit", "pirate", "--tags", "x"],
               ["adapters", "merge", "pirate", "--output", str(lived_in_home / "merged")],
               ["models", "add", str(tiny_model_dir), "--name", "again"],
               ["train", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--max-steps", "1"]]
    before = sorted(str(p.relative_to(lived_in_home)) for p in lived_in_home.rglob("*"))

    done = _in_read_only_home(lived_in_home, _DRIVER, json.dumps(listing + writing))

    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for argv, (code, out, err) in zip(listing, results):
        assert code == 0 and "Traceback" not in err, (argv, err)
    assert "pirate" in results[0][1] and "tiny" in results[1][1] and "old-run" in results[2][1]
    for argv, (code, out, err) in zip(writing, results[len(listing):]):
        line = assert_refused(code, out, err, "is read-only")
        assert str(lived_in_home) in line, (argv, line)
    assert sorted(str(p.relative_to(lived_in_home)) for p in lived_in_home.rglob("*")) == before


def test_an_empty_read_only_home_lists_nothing_rather_than_failing(studio_home):
    shutil.rmtree(studio_home)
    studio_home.mkdir()  # not even the models, adapters and runs folders
    listing = [["adapters", "list"], ["models", "list"], ["runs", "list"], ["adapters", "trash"]]

    done = _in_read_only_home(studio_home, _DRIVER, json.dumps(listing))

    assert done.returncode == 0, done.stderr[-2000:]
    for argv, (code, out, err) in zip(listing, json.loads(done.stdout.splitlines()[-1])):
        assert code == 0 and "Traceback" not in err, (argv, err)
    assert list(studio_home.iterdir()) == []


_STUDIO = """
from PySide6.QtWidgets import QApplication
from studio import app
application, window = app.start([])
for _ in range(20):
    application.processEvents()
print(window.home_problem_label.text())
window.close()
"""


def test_the_studio_opens_on_a_read_only_home_and_says_so(lived_in_home):
    done = _in_read_only_home(lived_in_home, _STUDIO)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith(f"{lived_in_home} is read-only (")
