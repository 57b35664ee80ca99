"""Runs set up and trained in the test's own process: a run directory for some settings, the
engine's set-up of it (model loading, quantisation, the PEFT method) and its Trainer."""

from __future__ import annotations

from engine.core.atomic import write_json
from engine.run.config import RunConfig
from engine.run.rundir import RunDir
from engine.train import recipe
from helpers import write_messages_dataset


def new_run(tmp_path, model_dir, **settings) -> recipe.Run:
    """A run directory for these settings, on the pirate sample rows."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    values = dict(model=str(model_dir), dataset=str(dataset), rank=4, alpha=8, max_steps=4, batch_size=4,
                  max_length=64, lr=1e-2, log_every=1, seed=7)
    values.update(settings)
    config = RunConfig(**values)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(RunDir(run_dir).config, config.to_dict())
    return recipe.Run(run_dir)


def prepare(tmp_path, model_dir, **settings):
    """A run directory for these settings and the engine's set-up of it."""
    run = new_run(tmp_path, model_dir, **settings)
    ready = recipe.setup(run)
    assert ready is not None
    return run, ready


def fit(run, ready):
    trainer, callback = recipe.build_trainer(run, ready, lambda total_steps: None)
    trainer.train()
    return trainer, callback
