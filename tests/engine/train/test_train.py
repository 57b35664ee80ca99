"""The training run end to end on a tiny Llama model: real Trainer, real peft, real child process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from engine.run.config import RunConfig
from engine.errors import StudioError
from engine.run.events import CheckpointSaved, Paused, Resumed, RunFinished, RunStarted, StepMetrics
from engine.jobs.summary import list_runs
from engine.jobs.training_job import TrainingJob
from engine.adapters.library import list_adapters
from helpers import ROOT, write_messages_dataset

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
    from engine.chat.session import ChatSession

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
    # Simulate a crash while checkpoint-4 was being written: its trainer state never landed, and the
    # run never finished (a completed run has nothing to resume).
    (job.run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").unlink()
    events_file = job.run_dir / "events.jsonl"
    events_file.write_text("".join(events_file.read_text().splitlines(keepends=True)[:-1]))
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


def test_bad_rows_under_stop_fail_the_run_with_a_readable_error_and_no_adapter(tiny_model_dir, tmp_path,
                                                                              monkeypatch):
    from engine.data import trainable

    # The bad row lies past the rows the parent reads before the start: the child finds it.
    monkeypatch.setattr(trainable, "STOP_SCAN_ROWS", 1)
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


def _learning_rates(events) -> dict[int, float]:
    return {e.step: e.learning_rate for e in events if isinstance(e, StepMetrics)}


def test_train_more_continues_a_finished_run_with_a_fresh_schedule_and_a_new_entry(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=4, name="more"))
    assert _collect(job)[-1].status == "completed"
    # The finished run kept its end state as a checkpoint, so it can go on from there.
    [summary] = list_runs()
    assert summary.checkpoint_step == 4 and not summary.resumable

    events = _collect(TrainingJob.train_more(job.run_dir, steps=3))
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.resumed_from_step == 4 and started.total_steps == 7
    assert events[-1].status == "completed" and events[-1].step == 7
    # The linear schedule ran down to 0 at step 4; the new steps decay from 1e-2 over their own three.
    assert _learning_rates(events) == pytest.approx({5: 1e-2, 6: 1e-2 * 2 / 3, 7: 1e-2 / 3})
    assert sorted(a.name for a in list_adapters()) == ["more", "more-2"]
    newest = json.loads((Path(events[-1].adapter) / "studio.json").read_text())
    assert newest["steps"] == 7 and len(newest["loss_history"]) == 3


def test_a_stopped_run_keeps_a_checkpoint_and_resumes_from_it(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=2000, name="paused-work"))
    step = _wait_for(job, StepMetrics, []).step
    job.stop(save=True)
    finished = job.wait(timeout=TIMEOUT)
    assert finished.status == "stopped" and finished.step >= step
    [summary] = list_runs()
    assert summary.resumable and summary.checkpoint_step == finished.step
    config = json.loads((job.run_dir / "config.json").read_text())
    config["max_steps"] = finished.step + 2
    (job.run_dir / "config.json").write_text(json.dumps(config))
    events = _collect(TrainingJob.resume(job.run_dir))
    assert next(e for e in events if isinstance(e, RunStarted)).resumed_from_step == finished.step
    assert events[-1].status == "completed" and events[-1].step == finished.step + 2


def test_a_second_window_attaches_to_a_running_run_and_sees_it_through(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    job = TrainingJob.start(_config(tiny_model_dir, dataset, max_steps=2000, name="watched"))
    _wait_for(job, StepMetrics, [])
    with pytest.raises(StudioError, match="is being trained by process"):
        TrainingJob.resume(job.run_dir)
    watcher = TrainingJob.attach(job.run_dir)
    replayed = _wait_for(watcher, StepMetrics, [])  # the run's curve so far comes first
    assert replayed.step >= 1
    watcher.stop(save=False)
    assert watcher.wait(timeout=TIMEOUT).status == "stopped" and job.wait(timeout=TIMEOUT).status == "stopped"
    with pytest.raises(StudioError, match="not running"):
        TrainingJob.attach(job.run_dir)


def _long_rows_dataset(path: Path, rows: int = 8) -> Path:
    """Rows of some 256 tokens."""
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(rows):
            answer = "Arr matey, the treasure be buried on the island! " * 15
            handle.write(json.dumps({"messages": [{"role": "user", "content": "Where is the treasure?"},
                                                  {"role": "assistant", "content": answer}]}) + "\n")
    return path


def test_out_of_memory_reports_the_peak_and_a_plan_that_then_fits(tmp_path):
    from tiny_model import build_tiny_model

    from engine.run.events import OutOfMemory
    from engine.memory.planning import config_with_plan

    # 8 rows x 256 tokens through 48 layers keep some 0.8 GiB of activations, against a 1.0 GiB cap
    # of which the training process holds some 0.36 GiB (the libraries) before the model loads. At
    # 1.2 GiB the step's peak fell within a few percent of the cap: it fitted in half the runs.
    deep = build_tiny_model(tmp_path / "deep", layers=48)
    dataset = _long_rows_dataset(tmp_path / "long.jsonl")
    config = _config(deep, dataset, batch_size=8, max_length=256, max_steps=1, memory_limit="1.0GiB", name="fits")
    events = _collect(TrainingJob.start(config))
    finished = events[-1]
    assert finished.status == "failed" and finished.error.startswith("out of memory at step 0 on cpu")
    assert "apply it and retry" in finished.error and list_adapters() == []
    [report] = [e for e in events if isinstance(e, OutOfMemory)]
    assert report.measured_peak_bytes and report.plan is not None
    assert report.plan["batch"] * report.plan["seq"] < 8 * 512 and report.explanations

    retry = config_with_plan(config, report.plan)
    # The effective batch is kept (exactly, or rounded up where no divisor of 8 is near the largest
    # micro-batch that fits: auto-fit's rule); what does not fit goes by gradient checkpointing,
    # which keeps a hidden state per layer instead of its activations, or by a smaller micro-batch.
    assert retry.grad_checkpointing or retry.batch_size < 8
    assert 8 <= retry.batch_size * retry.grad_accum < 8 + retry.batch_size
    retried = _collect(TrainingJob.start(retry))
    assert retried[-1].status == "completed", retried[-1].error
    assert [a.name for a in list_adapters()] == ["fits"]


@pytest.mark.parametrize("sharding", [None, {"version": 2}], ids=["ddp", "fsdp"])
def test_an_exported_run_trains_on_two_processes_under_torchrun_into_one_adapter(sharding, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    from engine.run.events import read_events
    from engine.jobs.export import export_run, launch_commands

    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    run_dir = export_run(_config(tiny_model_dir, dataset, max_steps=4, name="two-ranks", fsdp=sharding),
                         tmp_path / "exported", gpus=2)
    command = launch_commands(run_dir, gpus=2)["torchrun"]
    assert command.startswith("torchrun --standalone --nproc_per_node 2 -m engine.train")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    # Its own session, so that a hang is ended with every rank, not only the launcher.
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *command.split()[1:]], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = launcher.communicate(timeout=TIMEOUT)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 0, output[-2000:]
    events = read_events(run_dir / "events.jsonl")
    # Rank 0 alone speaks and saves: one start, one finish, one adapter.
    assert sum(isinstance(e, RunStarted) for e in events) == 1
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed" and finished.step == 4
    assert [a.name for a in list_adapters()] == ["two-ranks"]
    assert len([e for e in events if isinstance(e, StepMetrics)]) == 4


def test_an_exported_run_trains_on_two_nodes_of_one_process_each_into_one_adapter(tiny_model_dir, tmp_path):
    """launch-nodes.sh as a user starts it on each of two machines, here both on localhost (gloo):
    node 1's process is rank 1 but local rank 0, and still only rank 0 writes and saves."""
    import socket
    import subprocess
    import sys
    import time

    from engine.run.events import read_events
    from engine.jobs.export import export_run

    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    run_dir = export_run(_config(tiny_model_dir, dataset, max_steps=4, name="two-nodes"), tmp_path / "exported",
                         gpus=1, nodes=2)
    with socket.socket() as probe:  # a port free now, for node 0's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # torchrun from this interpreter's environment, as an installed LoRA Studio has it on PATH.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    # Each node in its own session, so that a hang is ended with every rank, not only the launcher.
    nodes = [subprocess.Popen([str(run_dir / "launch-nodes.sh")], env=dict(env, NODE_RANK=str(rank)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=TIMEOUT)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
    print(f"two nodes trained 4 steps in {time.monotonic() - started:.1f} s")
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-2000:]
    events = read_events(run_dir / "events.jsonl")
    assert sum(isinstance(e, RunStarted) for e in events) == 1
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed" and finished.step == 4
    assert [a.name for a in list_adapters()] == ["two-nodes"]
    assert len([e for e in events if isinstance(e, StepMetrics)]) == 4
    assert not (run_dir / ".shared-check").exists()  # the nodes' check that they share the folder, gone
