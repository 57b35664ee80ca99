"""Warm starts: a run forked from the standby is the same run as one started cold, in a
process and session of its own, and a standby that dies takes no run with it."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from engine.jobs import launcher
from engine.run.config import RunConfig
from engine.run.events import RunFinished, StepMetrics
from engine.jobs.training_job import TrainingJob
from helpers import write_messages_dataset

pytestmark = pytest.mark.skipif(not launcher.supported(), reason="warm starts need Linux and a CPU build of torch")


def _config(model_dir, dataset, **overrides) -> RunConfig:
    settings = dict(model=str(model_dir), dataset=str(dataset), rank=4, alpha=8, max_steps=4, batch_size=4,
                    max_length=64, lr=1e-2, log_every=1, seed=7, name="warm")
    settings.update(overrides)
    return RunConfig(**settings)


def _losses(job: TrainingJob) -> list[float]:
    events = list(job.events())
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed", events[-1].error
    return [e.loss for e in events if isinstance(e, StepMetrics)]


def test_a_warm_run_is_a_process_of_its_own_and_trains_exactly_like_a_cold_one(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    warm = TrainingJob.start(_config(tiny_model_dir, dataset, name="warm"))
    process = psutil.Process(warm.pid)
    standby = process.parent()
    assert "engine.jobs.launcher" in " ".join(standby.cmdline()) and standby.ppid() == os.getpid()
    first_step = next(e for e in warm.events() if isinstance(e, StepMetrics))
    assert os.getsid(warm.pid) == warm.pid  # its own session: it outlives the window, as a cold run does
    assert process.nice() == 10  # lowered once, not once by the standby and again by the run
    warm_losses = [first_step.loss] + _losses(warm)

    launcher.disable()
    try:
        cold = TrainingJob.start(_config(tiny_model_dir, dataset, name="cold"))
        assert "engine.train" in psutil.Process(cold.pid).cmdline()
        cold_losses = _losses(cold)
    finally:
        launcher.enable(warm_up=False)
    assert len(warm_losses) == 4 and warm_losses == cold_losses


def test_a_killed_standby_leaves_its_run_going_and_the_next_run_gets_a_new_one(tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    first = TrainingJob.start(_config(tiny_model_dir, dataset, name="orphaned", max_steps=8))
    standby = psutil.Process(first.pid).parent()
    for event in first.events():
        if isinstance(event, StepMetrics):
            break
    os.kill(standby.pid, signal.SIGKILL)
    assert len(_losses(first)) >= 7  # the run went on to its end and reported it

    second = TrainingJob.start(_config(tiny_model_dir, dataset, name="next"))
    assert psutil.Process(second.pid).parent().pid not in (standby.pid, os.getpid())
    assert len(_losses(second)) == 4


def test_what_the_standby_imports_is_the_whole_training_stack():
    """The standby imports the training child's module once; a run forked from it starts at once
    only if that import brought in what training uses (transformers' Trainer, peft, torch)."""
    import subprocess
    import sys

    code = ("import sys; import engine.train.recipe; "
            "print(all(name in sys.modules for name in ('torch', 'transformers.trainer', 'peft')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"
