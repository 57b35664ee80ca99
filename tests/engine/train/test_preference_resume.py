"""A DPO run stopped after a checkpoint and started again on its run folder goes on from that
checkpoint, through the real child process, as a supervised run does (test_train)."""

from __future__ import annotations

import json
from pathlib import Path

from engine.adapters.library import list_adapters
from engine.jobs.summary import list_runs
from engine.jobs.training_job import TrainingJob
from engine.run.config import RunConfig
from engine.run.events import RunFinished, RunStarted, StepMetrics
from helpers import write_pairs

TIMEOUT = 180


def test_a_stopped_dpo_run_resumes_from_its_checkpoint_and_saves_a_stock_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    config = RunConfig(model=str(tiny_model_dir), dataset=str(pairs), objective="dpo", rank=4, alpha=8,
                       max_steps=2000, batch_size=4, max_length=64, lr=1e-2, log_every=1, val_fraction=0.0,
                       name="pirate-dpo")
    job = TrainingJob.start(config)
    first: list = []
    for event in job.events():
        first.append(event)
        if isinstance(event, StepMetrics) and event.step >= 2:
            job.stop(save=True)
    stopped = first[-1]
    assert isinstance(stopped, RunFinished) and stopped.status == "stopped", stopped
    [summary] = list_runs()
    assert summary.resumable and summary.checkpoint_step == stopped.step
    before = [e for e in first if isinstance(e, StepMetrics)]

    settings = json.loads((job.run_dir / "config.json").read_text())
    settings["max_steps"] = stopped.step + 2
    (job.run_dir / "config.json").write_text(json.dumps(settings))
    events = list(TrainingJob.resume(job.run_dir).events())
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed", finished.error
    assert next(e for e in events if isinstance(e, RunStarted)).resumed_from_step == stopped.step
    after = [e for e in events if isinstance(e, StepMetrics)]
    # The step count and the curve go on from the checkpoint; the reward fields keep coming.
    assert [e.step for e in after] == [stopped.step + 1, stopped.step + 2] and finished.step == stopped.step + 2
    assert all(e.reward_margin is not None for e in after)
    meta = json.loads((Path(finished.adapter) / "studio.json").read_text())
    assert meta["objective"] == "dpo" and meta["steps"] == stopped.step + 2
    # The adapter's loss curve is the whole run's, the steps before the checkpoint included.
    assert meta["loss_history"] == [[e.step, e.loss] for e in before + after]

    # The stop kept its work as an adapter; the resumed run's is a second one beside it.
    saved = {record.path: record for record in list_adapters()}
    assert stopped.adapter in saved and saved[finished.adapter].damaged is None
    ids = torch.tensor([[1, 5, 9, 42, 7, 2]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
        reloaded = PeftModel.from_pretrained(base, finished.adapter).eval()(ids).logits
    assert not torch.allclose(reloaded, base_logits, atol=1e-4)
