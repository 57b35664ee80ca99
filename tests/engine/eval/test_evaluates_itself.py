"""When a run goes on to evaluate itself: only a completed run with an adapter, asked to, that held rows out."""

from __future__ import annotations

import pytest

from engine.errors import StudioError
from engine.eval.after_run import evaluates_itself
from engine.run.config import RunConfig
from engine.run.events import RunFinished


@pytest.mark.parametrize("status, adapter, asked, share, expected", [
    ("completed", "/lib/pirate", True, 0.2, True),
    ("stopped", "/lib/pirate", True, 0.2, False),  # half-trained: nothing to judge it by
    ("failed", None, True, 0.2, False),
    ("completed", None, True, 0.2, False),  # a full fine-tune saves a model, not an adapter
    ("completed", "/lib/pirate", False, 0.2, False),
    ("completed", "/lib/pirate", True, 0.0, False),  # nothing held out
])
def test_only_a_completed_run_asked_to_with_held_out_rows_evaluates_itself(status, adapter, asked, share, expected):
    config = RunConfig(model="starter", dataset="pirate.jsonl", val_fraction=share, evaluate_at_end=asked)
    assert evaluates_itself(config, RunFinished(status=status, adapter=adapter, step=4)) is expected


def test_the_option_is_on_by_default_and_must_be_true_or_false():
    assert RunConfig(model="starter", dataset="pirate.jsonl").evaluate_at_end is True
    with pytest.raises(StudioError, match="evaluate at end must be true or false"):
        RunConfig.from_dict({"model": "starter", "dataset": "pirate.jsonl", "evaluate_at_end": "yes"})
