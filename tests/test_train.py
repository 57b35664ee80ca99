"""The training run end to end on a tiny Llama model: real Trainer, real peft, real child process."""

from __future__ import annotations

import json
import os
import signal

import pytest

from engine.config import RunConfig
from engine.errors import StudioError
from engine.events import CheckpointSaved, Paused, Resumed, RunFinished, RunStarted, StepMetrics
from engine.jobs import TrainingJob, list_runs
from engine.library import list_adapters
from helpers import write_messages_dataset

TIMEOUT = 180


def _config(model_dir, dataset, **overrides) -> RunConfig:
    settings = dict(model=str(model_dir), dataset=str(dataset), rank=4, alpha=8, max_steps=6, batch_size=4,
                    max_length=64, lr=1e-2, log_every=1, name="tiny-pirate")
    settings.update(overrides)
    return RunConfig(**settings)


def _collect(job: TrainingJob) -> list:
    events = list(job.events())
    assert isinstance(events[-1], RunFinished)
    return events


def _wait_for(job: TrainingJob, kind: type, seen: list, where=lambda event: True) -> object:
    for event in job.events():
        seen.append(event)
        if isinstance(event, kind) and where(event):
            return event
    raise AssertionError(f"run finished before a {kind.__name__} event: {seen[-1]}")


def test_lora_run_trains_saves_a_stock_peft_adapter_and_matches_engine_logits(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, save_every=3))
    events = _collect(job)

    finished = events[-1]
    assert finished.status == "completed", finished.error
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.total_steps == 6 and 0 < started.trainable_params < started.total_params
    losses = [e.loss for e in events if isinstance(e, StepMetrics)]
    assert len(losses) >= 5 and losses[-1] < losses[0]  # it learned something
    assert [e.step for e in events if isinstance(e, CheckpointSaved)] == [3, 6]

    [record] = list_adapters()
    assert record.path == finished.adapter and record.name == "tiny-pirate" and record.damaged is None
    meta = json.loads((job.run_dir.parent.parent / "adapters" / "tiny-pirate" / "studio.json").read_text())
    assert meta["steps"] == 6 and meta["rank"] == 4 and len(meta["loss_history"]) == len(losses)
    assert meta["chat_template"]  # chat uses the template training used

    # Stock peft loads the folder, and its logits equal the engine's chat model with the adapter.
    from engine.chat import ChatSession

    ids = torch.tensor([[1, 5, 9, 42, 7, 2]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
    stock = PeftModel.from_pretrained(base, finished.adapter).eval()
    session = ChatSession(str(tiny_model_dir))
    session.load()
    session.set_adapter("tiny-pirate")
    with torch.no_grad():
        stock_logits = stock(ids).logits
        engine_logits = session.base_model(ids).logits  # peft injected the adapter into it
    assert torch.allclose(stock_logits, engine_logits, atol=1e-5)
    assert not torch.allclose(stock_logits, base_logits, atol=1e-3)  # the adapter really changes the model


def test_pause_holds_the_run_resume_continues_and_stop_saves(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=2000, name="long"))
    seen: list = []
    _wait_for(job, StepMetrics, seen)
    job.pause()
    paused = _wait_for(job, Paused, seen)
    # Held at a step boundary: nothing trains while paused.
    assert job.wait(timeout=1.0) is None
    assert not [e for e in job.drain() if isinstance(e, StepMetrics)]
    job.resume_training()
    resumed = _wait_for(job, Resumed, seen)
    assert resumed.step == paused.step
    # The paused step's own metrics may arrive after the resume; training then moves on.
    _wait_for(job, StepMetrics, seen, where=lambda e: e.step > paused.step)
    job.stop(save=True)
    finished = _wait_for(job, RunFinished, seen)
    assert finished.status == "stopped" and finished.step < 2000
    assert finished.adapter and [a.name for a in list_adapters()] == ["long"]


def test_stop_without_saving_leaves_the_library_empty(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=2000))
    _wait_for(job, StepMetrics, [])
    job.stop(save=False)
    finished = job.wait(timeout=TIMEOUT)
    assert finished.status == "stopped" and finished.adapter is None
    assert list_adapters() == []


def test_killed_run_is_reported_and_resumes_from_its_last_checkpoint(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=2000, save_every=2, name="crashy"))
    checkpoint = _wait_for(job, CheckpointSaved, [])
    os.kill(job.pid, signal.SIGKILL)  # a crash, not a user action
    finished = job.wait(timeout=TIMEOUT)
    assert finished.status == "failed" and "ended unexpectedly" in finished.error
    assert list_adapters() == []
    [summary] = list_runs()
    assert summary.status == "failed" and summary.steps >= checkpoint.step

    # The child may have saved more checkpoints before the kill landed, and the kill may have cut
    # the newest one short: resume from the newest complete one (its trainer state is written last).
    last = max(int(p.parent.name.split("-")[1])
               for p in (job.run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    config = json.loads((job.run_dir / "config.json").read_text())
    config["max_steps"] = last + 2
    (job.run_dir / "config.json").write_text(json.dumps(config))
    resumed = TrainingJob.resume(job.run_dir)
    events = _collect(resumed)
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.resumed_from_step == last
    steps = [e.step for e in events if isinstance(e, StepMetrics)]
    assert steps and min(steps) > last  # the curve continues, it does not restart
    assert events[-1].status == "completed" and events[-1].step == last + 2
    assert [a.name for a in list_adapters()] == ["crashy"]


def test_a_checkpoint_cut_short_by_a_crash_is_skipped_on_resume(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=4, save_every=2, name="partial"))
    assert _collect(job)[-1].status == "completed"
    # Simulate a crash while checkpoint-4 was being written: its trainer state never landed.
    (job.run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    config = json.loads((job.run_dir / "config.json").read_text())
    config["max_steps"], config["name"] = 6, "partial-resumed"
    (job.run_dir / "config.json").write_text(json.dumps(config))
    events = _collect(TrainingJob.resume(job.run_dir))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.resumed_from_step == 2
    assert events[-1].status == "completed" and events[-1].step == 6


def test_an_empty_dataset_is_refused_before_a_run_starts(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(StudioError, match="empty"):
        TrainingJob.start(_config(tiny_model_dir, empty))
    assert list_runs() == [] and list_adapters() == []


def test_bad_rows_under_stop_fail_the_run_with_a_readable_error_and_no_adapter(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    with open(dataset, "a", encoding="utf-8") as handle:
        handle.write('{"messages": "not a list"}\n')
    job = TrainingJob.start(_config(tiny_model_dir, dataset, bad_rows="stop"))
    finished = job.wait(timeout=TIMEOUT)
    assert finished.status == "failed"
    assert "1 of 17 rows are bad" in finished.error and "\n" not in finished.error
    assert list_adapters() == []


@pytest.mark.parametrize("field, value, message", [
    ("rank", 0, "rank must be a positive number"),
    ("method", "magic", "unknown method"),
    ("lr", -1.0, "learning rate must be a positive number"),
])
def test_invalid_settings_are_refused_before_a_run_starts(tiny_model_dir, tmp_path, field, value, message):
    config = _config(tiny_model_dir, tmp_path / "x.jsonl", **{field: value})
    with pytest.raises(StudioError, match=message):
        TrainingJob.start(config)
    assert list_runs() == []
