"""``lora-studio train`` with a preference objective, through the command line's own ``main``.

In this process: a child process would add only its start (the CLI's imports, then a cold training
child's), and the run is forked from the suite's standby as the studio's runs are. The real
process is run by test_cli (its refusals) and test_wheel (train, from the installed console script)."""

from __future__ import annotations

import json

from helpers import run_cli, write_messages_dataset, write_pairs
from test_cli import assert_one_line_error


def test_train_method_dpo_streams_reward_fields_and_refuses_an_sft_file(tiny_model_dir, tmp_path, studio_home,
                                                                        capsys):
    pairs = write_pairs(tmp_path / "pairs.jsonl", repeats=2)
    code, out, err = run_cli(["train", "--model", tiny_model_dir, "--dataset", pairs, "--method", "dpo",
                              "--beta", "0.2", "--sft-weight", "0.5", "--max-steps", "3", "--batch", "4", "--lr",
                              "1e-2", "--log-every", "1", "--max-length", "64", "--val-fraction", "0.25",
                              "--eval-every", "3", "--name", "cli-dpo", "--json"], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    steps = [line for line in lines if line.get("event") == "StepMetrics"]
    assert len(steps) == 3 and all(step["reward_margin"] is not None and step["reward_accuracy"] is not None
                                   for step in steps)
    # The held-out pairs are scored as it trains: how many the model prefers rightly.
    evals = [line for line in lines if line.get("event") == "EvalMetrics"]
    assert evals and all(0 <= line["reward_accuracy"] <= 1 for line in evals)
    assert lines[-1]["status"] == "completed" and not any("evaluation" in line for line in lines)
    meta = json.loads((studio_home / "adapters" / "cli-dpo" / "studio.json").read_text())
    assert (meta["objective"], meta["beta"], meta["sft_weight"], meta["method"]) == ("dpo", 0.2, 0.5, "lora")
    code, out, err = run_cli(["adapters", "show", "cli-dpo"], capsys)
    assert code == 0, err
    assert [line.split() for line in out.splitlines()[1:5]] == [["base_model", str(tiny_model_dir)],
                                                                ["method", "lora"], ["objective", "dpo"],
                                                                ["beta", "0.2"]]

    # An SFT file given to DPO: one line before any run exists, nothing in the library.
    sft = write_messages_dataset(tmp_path / "sft.jsonl")
    runs_before = sorted((studio_home / "runs").iterdir())
    assert_one_line_error(*run_cli(["train", "--model", tiny_model_dir, "--dataset", sft, "--objective", "dpo",
                                    "--max-steps", "1"], capsys), "DPO")
    assert sorted((studio_home / "runs").iterdir()) == runs_before
    assert [path.name for path in (studio_home / "adapters").iterdir()] == ["cli-dpo"]
