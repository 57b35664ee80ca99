"""Fault injection on the tiny model: a full disk while saving, damaged checkpoints, a stop
pressed while the model loads, while it evaluates and while it saves. Whatever fails, the
run ends with exactly one RunFinished that says what happened, the library holds whole
adapters or nothing, and the newest whole checkpoint is where the run goes on from."""

from __future__ import annotations

import errno
import json

import pytest

from engine.run.rundir import RunDir
from engine.run.control import send_command
from engine.run.owner import own_run
from engine.run.events import RunFinished, RunStarted, read_events
from engine.jobs.summary import summarize_run
from engine.jobs.training_job import TrainingJob
from engine.adapters.library import list_adapters
from engine.paths import adapters_dir
from engine.train import recipe
from engine.run.checkpoints import checkpoint_problem
from training_runs import new_run

TIMEOUT = 180


def _finish(run: recipe.Run) -> RunFinished:
    """Train in this process, reporting as the child does."""
    finished = recipe.run_and_report(recipe.Run(run.run_dir))
    assert [type(e) for e in read_events(RunDir(run.run_dir).events)].count(RunFinished) >= 1
    return finished


def _checkpoints(run: recipe.Run) -> list[str]:
    return sorted(p.name for p in (run.run_dir / "checkpoints").glob("checkpoint-*"))


def _fill_the_disk_on(patch: pytest.MonkeyPatch, module, name: str, when) -> None:
    """Make ``module.name`` write half its file and then fail with ENOSPC whenever ``when(path)``."""
    original = getattr(module, name)

    def full(obj, path, *args, **kwargs):
        if when(str(path)):
            with open(path, "wb") as handle:
                handle.write(b"\0" * 64)  # what reached the disk before it filled
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(obj, path, *args, **kwargs)

    patch.setattr(module, name, full)


def test_a_full_disk_while_checkpointing_stops_the_run_and_keeps_the_previous_checkpoint(tiny_model_dir, tmp_path):
    import torch

    run = new_run(tmp_path, tiny_model_dir, max_steps=6, save_every=2, name="full-disk")
    with pytest.MonkeyPatch.context() as disk_full:
        _fill_the_disk_on(disk_full, torch, "save", lambda path: "checkpoint-4" in path)
        finished = _finish(run)
    assert finished.status == "failed"
    assert finished.error.startswith("the disk is full (") and finished.error.endswith("then resume the run")
    # The half-written checkpoint never became one; the one before it is whole.
    assert _checkpoints(run) == ["checkpoint-2"] and checkpoint_problem(run.run_dir / "checkpoints" / "checkpoint-2") \
        is None
    assert not list((run.run_dir / "checkpoints" / ".staging").glob("*"))
    assert list_adapters() == [] and summarize_run(run.run_dir).resumable

    resumed = _finish(run)  # space freed: the run goes on from step 2
    assert resumed.status == "completed" and resumed.step == 6
    started = [e for e in read_events(RunDir(run.run_dir).events) if isinstance(e, RunStarted)]
    assert started[-1].resumed_from_step == 2


def test_a_full_disk_while_saving_the_adapter_leaves_the_library_as_it_was(tiny_model_dir, tmp_path):
    import peft.peft_model

    run = new_run(tmp_path, tiny_model_dir, max_steps=3, name="no-room")
    with pytest.MonkeyPatch.context() as disk_full:
        # peft writes an adapter's weights through safetensors' save_file, under this name.
        _fill_the_disk_on(disk_full, peft.peft_model, "safe_save_file", lambda path: str(adapters_dir()) in path)
        finished = _finish(run)
    assert finished.status == "failed" and finished.error.startswith("the disk is full")
    assert list_adapters() == [] and not any(adapters_dir().iterdir())  # not even a hidden half-entry
    # The end of the run was checkpointed before the adapter: resuming just saves it.
    assert summarize_run(run.run_dir).resumable and _checkpoints(run) == ["checkpoint-3"]
    assert _finish(run).status == "completed"  # space freed
    [record] = list_adapters()
    assert record.name == "no-room" and record.damaged is None


@pytest.mark.parametrize("damage", ["truncated weights", "truncated optimizer", "empty trainer state"])
def test_a_damaged_checkpoint_is_reported_and_never_resumed_from(damage, tiny_model_dir, tmp_path):
    run = new_run(tmp_path, tiny_model_dir, max_steps=4, save_every=2, name="damaged")
    assert _finish(run).status == "completed"
    newest = run.run_dir / "checkpoints" / "checkpoint-4"
    victim = {"truncated weights": "adapter_model.safetensors", "truncated optimizer": "optimizer.pt",
              "empty trainer state": "trainer_state.json"}[damage]
    data = (newest / victim).read_bytes()
    (newest / victim).write_bytes(data[: len(data) // 2] if damage.startswith("truncated") else b"")
    assert checkpoint_problem(newest) is not None

    config = json.loads(RunDir(run.run_dir).config.read_text())
    config["max_steps"] = 6
    RunDir(run.run_dir).config.write_text(json.dumps(config))
    finished = _finish(run)
    assert finished.status == "completed" and finished.step == 6
    events = read_events(RunDir(run.run_dir).events)
    warnings = [e.message for e in events if getattr(e, "level", "") == "warning"]
    assert any(message.startswith("Skipping checkpoint-4: ") for message in warnings), warnings
    assert [e for e in events if isinstance(e, RunStarted)][-1].resumed_from_step == 2


def test_stop_pressed_while_the_model_loads_ends_the_run_cleanly(tiny_model_dir, tmp_path):
    run = new_run(tmp_path, tiny_model_dir, max_steps=2000)
    send_command(run.run_dir, "stop")  # before the child has loaded anything
    with own_run(run.run_dir) as owner:
        job = TrainingJob._spawn(run.run_dir, owner)
    send_command(run.run_dir, "stop")  # _spawn writes "run"; the stop lands while the child starts up
    finished = job.wait(TIMEOUT)
    assert finished.status == "stopped" and finished.adapter is None
    events = read_events(RunDir(run.run_dir).events)
    assert not any(isinstance(e, RunStarted) for e in events) and events.count(finished) == 1
    assert list_adapters() == []


def test_stop_pressed_during_an_evaluation_stops_at_the_next_step_and_saves(tiny_model_dir, tmp_path, monkeypatch):
    from engine.train.trainer import StudioTrainer

    run = new_run(tmp_path, tiny_model_dir, max_steps=2000, val_fraction=0.25, eval_every=2, name="eval-stop")
    evaluate = StudioTrainer.evaluate

    def pressed_meanwhile(self, *args, **kwargs):
        send_command(run.run_dir, "stop")
        return evaluate(self, *args, **kwargs)

    monkeypatch.setattr(StudioTrainer, "evaluate", pressed_meanwhile)
    finished = _finish(run)
    assert finished.status == "stopped" and finished.step == 3  # evaluated at 2, stopped at the next boundary
    [record] = list_adapters()
    assert record.damaged is None and record.eval_loss is not None


def test_stop_pressed_while_the_adapter_is_saved_keeps_the_whole_adapter(tiny_model_dir, tmp_path, monkeypatch):
    from engine.adapters import library

    run = new_run(tmp_path, tiny_model_dir, max_steps=3, name="saving")
    save = library.save_adapter

    def pressed_meanwhile(*args, **kwargs):
        send_command(run.run_dir, "stop")
        return save(*args, **kwargs)

    monkeypatch.setattr(library, "save_adapter", pressed_meanwhile)
    finished = _finish(run)
    assert finished.status == "completed" and finished.adapter
    [record] = list_adapters()
    assert record.damaged is None and record.steps == 3
