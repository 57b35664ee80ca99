"""Runs have one owner (issue 23, class 8): a run folder is locked by the process training it.

A second ``train --resume`` (or train-more, or a hand-typed ``python -m engine.train``) on a run
being trained is refused with one line naming the process, and the first run ends at the step
count it announced with one adapter; a killed child leaves no stale lock; a completed run has
nothing to resume; two train-mores racing extend the run once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from engine.adapters.library import list_adapters
from engine.errors import StudioError
from engine.jobs.training_job import TrainingJob
from engine.run.config import RunConfig
from engine.run.events import CheckpointSaved, Paused, RunFinished, RunStarted, read_events
from engine.run.owner import own_run
from engine.run.rundir import RunDir
from helpers import ROOT, run_cli, write_messages_dataset
from refusals import assert_refused, run_cli_process

TIMEOUT = 180


def _start(model_dir, tmp_path, **overrides) -> TrainingJob:
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    settings = dict(model=str(model_dir), dataset=str(dataset), rank=4, alpha=8, max_steps=4, batch_size=4,
                    max_length=64, lr=1e-2, log_every=1, name="owned")
    settings.update(overrides)
    return TrainingJob.start(RunConfig(**settings))


def _wait_for(job: TrainingJob, kind: type) -> object:
    for event in job.events():
        if isinstance(event, kind):
            return event
    raise AssertionError(f"the run finished before a {kind.__name__} event")


def _finish(job: TrainingJob) -> RunFinished:
    finished = job.wait(timeout=TIMEOUT)
    assert finished is not None, "the run did not end in time"
    return finished


def _events(job: TrainingJob) -> bytes:
    return RunDir(job.run_dir).events.read_bytes()


def test_a_second_resume_while_a_run_trains_is_refused_and_the_run_ends_at_its_step_count(tiny_model_dir, tmp_path,
                                                                                         capsys):
    from engine.train import command

    job = _start(tiny_model_dir, tmp_path, max_steps=6)
    # Held mid-run, whatever the machine's speed: asked before the first step ends, the pause holds
    # the run at that step's end (the child reads its commands at every step's end). Asked only once
    # the parent had read a step, it once came after all six tiny steps.
    job.pause()
    _wait_for(job, Paused)
    before = _events(job)

    code, out, err = run_cli_process(["train", "--resume", job.run_dir])  # a second terminal
    assert_refused(code, out, err, f"run {job.run_dir.name} is being trained by process {job.pid}")
    code, out, err = run_cli(["train", "--resume", job.run_dir, "--more-steps", "5"], capsys)
    assert_refused(code, out, err, f"is being trained by process {job.pid}")
    with pytest.raises(StudioError, match=f"is being trained by process {job.pid}"):
        TrainingJob.resume(job.run_dir)  # the studio's Resume, from another window
    # What ``python -m engine.train RUN_DIR`` (or a second torchrun's rank 0) runs: it refuses at once.
    assert command.main([str(job.run_dir)]) == 2
    assert f"error: run {job.run_dir.name} is being trained by process {job.pid}" in capsys.readouterr().err
    assert _events(job) == before  # nothing written into the run by the refused ones
    assert json.loads(RunDir(job.run_dir).config.read_text())["max_steps"] == 6  # no train-more planned

    job.resume_training()
    finished = _finish(job)
    events = read_events(RunDir(job.run_dir).events)
    [started] = [e for e in events if isinstance(e, RunStarted)]
    assert finished.status == "completed" and finished.step == started.total_steps == 6
    assert [e for e in events if isinstance(e, RunFinished)] == [finished]
    assert [a.name for a in list_adapters()] == ["owned"]


def test_a_killed_child_leaves_no_stale_lock_and_the_run_resumes(tiny_model_dir, tmp_path, capsys):
    job = _start(tiny_model_dir, tmp_path, max_steps=2000, save_every=2, name="killed")
    checkpoint = _wait_for(job, CheckpointSaved)
    job.pause()
    _wait_for(job, Paused)
    os.kill(job.pid, signal.SIGKILL)  # no chance to let go of anything
    assert _finish(job).status == "failed"
    # The supervisor wrote the crash report as the run's owner, and let go: no note is left behind
    # (a note left by a dead holder is no lock either: the next test).
    assert RunDir(job.run_dir).lock.read_text() == ""

    config = json.loads(RunDir(job.run_dir).config.read_text())
    last = max(int(p.parent.name.split("-")[1])
               for p in RunDir(job.run_dir).checkpoints.glob("checkpoint-*/trainer_state.json"))
    assert last >= checkpoint.step
    config["max_steps"] = last + 1
    RunDir(job.run_dir).config.write_text(json.dumps(config))
    code, out, err = run_cli(["train", "--resume", job.run_dir, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["status"] == "completed"
    assert [a.name for a in list_adapters()] == ["killed"]


def test_a_completed_run_has_nothing_to_resume_and_two_train_mores_racing_extend_it_once(tiny_model_dir, tmp_path,
                                                                                            capsys):
    first = _start(tiny_model_dir, tmp_path, max_steps=2, name="done")
    assert _finish(first).status == "completed"
    before = _events(first)

    code, out, err = run_cli(["train", "--resume", first.run_dir], capsys)
    line = assert_refused(code, out, err, f"run {first.run_dir.name} completed its 2 steps")
    assert "nothing to resume" in line and "--more-steps" in line
    with pytest.raises(StudioError, match="completed its 2 steps"):
        TrainingJob.resume(first.run_dir)  # the studio's Resume
    # A hand-typed ``python -m engine.train RUN_DIR`` (or torchrun) on it: the child refuses too.
    child = subprocess.run([sys.executable, "-m", "engine.train", str(first.run_dir)], capture_output=True,
                           text=True, timeout=TIMEOUT, cwd=ROOT)
    assert child.returncode == 2 and child.stderr.strip().endswith("use train more to continue it (lora-studio "
                                                                  "train --resume RUN_DIR --more-steps N, or "
                                                                  "Train more… in the studio)"), child.stderr
    assert f"run {first.run_dir.name} completed its 2 steps" in child.stderr
    assert _events(first) == before and [a.name for a in list_adapters()] == ["done"]

    # Train more is the way on, and two of them at once extend the run once.
    results: list = []
    go = threading.Barrier(2)

    def train_more(steps: int) -> None:
        go.wait()
        try:
            results.append(TrainingJob.train_more(first.run_dir, steps=steps))
        except StudioError as exc:
            results.append(exc)

    threads = [threading.Thread(target=train_more, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    [job] = [r for r in results if isinstance(r, TrainingJob)]
    [refusal] = [r for r in results if isinstance(r, StudioError)]
    # "by process N", or "by another process" when it lost the race before the holder wrote its name
    assert f"run {first.run_dir.name} is being trained by " in str(refusal)
    finished = _finish(job)
    planned = json.loads(RunDir(first.run_dir).config.read_text())["max_steps"]
    assert planned in (3, 4) and finished.status == "completed" and finished.step == planned
    assert sorted(a.name for a in list_adapters()) == ["done", "done-2"]
    # The continued run completed its own steps: nothing to resume there either.
    code, out, err = run_cli(["train", "--resume", first.run_dir], capsys)
    assert_refused(code, out, err, f"completed its {planned} steps")
    assert sorted(a.name for a in list_adapters()) == ["done", "done-2"]


def test_a_lock_file_naming_a_dead_or_other_process_is_no_lock(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock = RunDir(run_dir).lock
    for note in ("", "garbage", "1 12.5", f"{os.getpid()} 1.0", "999999999 1.0\n", "\x00\xff" * 40):
        lock.write_bytes(note.encode("utf-8", "surrogateescape") if isinstance(note, str) else note)
        with own_run(run_dir):
            with pytest.raises(StudioError, match=f"is being trained by process {os.getpid()}"):
                own_run(run_dir)  # a second hold, even in the same process, is refused
        assert lock.read_text() == ""  # let go cleanly: its note went with it


def test_a_planted_lock_link_is_refused_and_its_target_left_intact(tiny_model_dir, tmp_path, capsys):
    from engine.core.atomic import write_json
    from engine.paths import runs_dir

    run_dir = runs_dir() / "linked"
    run_dir.mkdir(parents=True)
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    write_json(RunDir(run_dir).config, RunConfig(model=str(tiny_model_dir), dataset=str(dataset)).to_dict())
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    RunDir(run_dir).lock.symlink_to(precious)
    code, out, err = run_cli(["train", "--resume", run_dir], capsys)
    assert_refused(code, out, err, "cannot take run linked for training")
    assert precious.read_text() == "keep me" and not RunDir(run_dir).events.exists()


def test_the_home_page_says_why_a_completed_run_has_no_resume(qtbot):
    from run_folders import T0, completed_run, started, step, write_run

    from engine.run.events import RunFinished as Finished
    from studio.pages.home import RESUME_TIP, HomePage

    completed_run("20260101-100000-done", steps=5)
    stopped = write_run("20260102-100000-stopped", [started(T0, total=20), step(T0 + 1, 1, 2.0),
                                                    Finished(time=T0 + 2, status="stopped", step=1)])
    (RunDir(stopped).checkpoints / "checkpoint-1").mkdir(parents=True)
    (RunDir(stopped).checkpoints / "checkpoint-1" / "trainer_state.json").write_text("{}")
    page = HomePage()
    qtbot.addWidget(page)
    page.show()
    qtbot.waitExposed(page)
    with qtbot.waitSignal(page.runsLoaded, timeout=60_000):
        page.refresh_runs()
    page.runs_view.selectRow(1)  # newest first: the completed run is the second row
    assert not page.resume_button.isEnabled() and page.more_button.isEnabled()
    assert page.resume_button.toolTip().startswith("run 20260101-100000-done completed its 5 steps")
    page.runs_view.selectRow(0)  # a run stopped half-way resumes as before
    assert page.resume_button.toolTip() == RESUME_TIP


def test_a_crash_report_is_not_written_into_a_run_someone_else_has_started_again(tmp_path, monkeypatch):
    """A supervisor whose child died writes the run's last word only as the run's owner: when
    another process resumed the run meanwhile, the events are that run's now."""
    from engine.jobs import training_job
    from engine.jobs.training_job import _Child

    monkeypatch.setattr(training_job, "_OWNER_WAIT_S", 0.1)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    RunDir(run_dir).events.write_bytes(b"")
    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.DEVNULL)
    with own_run(run_dir):  # the run started again, by this test
        job = TrainingJob(run_dir, _Child(popen=dead))
        finished = job.wait(TIMEOUT)
    assert finished is not None and finished.status == "failed"
    assert f"could not be written to the run folder: run {run_dir.name} is being trained by process" in finished.error
    assert RunDir(run_dir).events.read_bytes() == b""
