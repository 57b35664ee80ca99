"""``lora-studio train`` with a preference objective, through the real command line."""

from __future__ import annotations

import json

from helpers import write_messages_dataset, write_pairs
from test_cli import _assert_one_line_error, lora_studio


def test_train_method_dpo_streams_reward_fields_and_refuses_an_sft_file(tiny_model_dir, tmp_path, studio_home):
    pairs = write_pairs(tmp_path / "pairs.jsonl", repeats=2)
    result = lora_studio("train", "--model", str(tiny_model_dir), "--dataset", str(pairs), "--method", "dpo",
                         "--beta", "0.2", "--sft-weight", "0.5", "--max-steps", "3", "--batch", "4", "--lr", "1e-2", "--log-every", "1",
                         "--max-length", "64", "--val-fraction", "0.25", "--eval-every", "3", "--name", "cli-dpo",
                         "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    steps = [line for line in lines if line.get("event") == "StepMetrics"]
    assert len(steps) == 3 and all(step["reward_margin"] is not None and step["reward_accuracy"] is not None
                                   for step in steps)
    # The held-out pairs are scored as it trains: how many the model prefers rightly.
    evals = [line for line in lines if line.get("event") == "EvalMetrics"]
    assert evals and all(0 <= line["reward_accuracy"] <= 1 for line in evals)
    assert lines[-1]["status"] == "completed" and not any("evaluation" in line for line in lines)
    meta = json.loads((studio_home / "adapters" / "cli-dpo" / "studio.json").read_text())
    assert (meta["objective"], meta["beta"], meta["sft_weight"], meta["method"]) == ("dpo", 0.2, 0.5, "lora")
    shown = lora_studio("adapters", "show", "cli-dpo").stdout.splitlines()
    assert [line.split() for line in shown[1:5]] == [["base_model", str(tiny_model_dir)], ["method", "lora"],
                                                     ["objective", "dpo"], ["beta", "0.2"]]

    # An SFT file given to DPO: one line before any run exists, nothing in the library.
    sft = write_messages_dataset(tmp_path / "sft.jsonl")
    runs_before = sorted((studio_home / "runs").iterdir())
    _assert_one_line_error(lora_studio("train", "--model", str(tiny_model_dir), "--dataset", str(sft),
                                       "--objective", "dpo", "--max-steps", "1"), "DPO")
    assert sorted((studio_home / "runs").iterdir()) == runs_before
    assert [path.name for path in (studio_home / "adapters").iterdir()] == ["cli-dpo"]
