"""The real command line, in a subprocess, as a user or a script would run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, write_messages_dataset



def lora_studio(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio.launch", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_train_json_streams_events_evaluates_the_run_then_adapters_list_and_chat_use_the_result(tiny_model_dir,
                                                                                                 tmp_path):
    dataset = write_messages_dataset(tmp_path / "data.jsonl")
    result = lora_studio("train", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--max-steps", "3",
                         "--batch", "2", "--rank", "4", "--max-length", "64", "--name", "cli-run",
                         "--val-fraction", "0.25", "--json")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    kinds = [line.get("event") for line in lines[:-2]]
    assert kinds[0] == "LogLine" and "RunStarted" in kinds and "StepMetrics" in kinds
    assert kinds[-1] == "RunFinished"
    summary = lines[-2]
    assert summary["status"] == "completed" and Path(summary["run_dir"]).is_dir()
    assert Path(summary["adapter"]).name == "cli-run"
    # With a validation share the run scores itself against the base on the rows it held out, last.
    evaluation = lines[-1]["evaluation"]
    held_out = json.loads((Path(summary["run_dir"]) / "heldout.json").read_text())["rows"]
    assert re.fullmatch(rf"ROUGE-L \d\.\d\d → \d\.\d\d on {len(held_out)} held-out rows", evaluation["headline"])
    assert len(held_out) == 4 and set(evaluation["scores"]) == {"base", "cli-run"}
    assert 0 <= evaluation["scores"]["cli-run"]["rouge_l"] <= 1

    listed = json.loads(lora_studio("adapters", "list", "--json").stdout)
    assert [a["name"] for a in listed["adapters"]] == ["cli-run"]

    chat = lora_studio("chat", "--model", str(tiny_model_dir), "--adapter", "cli-run", "--prompt", "Hello",
                       "--max-new-tokens", "8", "--json")
    assert chat.returncode == 0, chat.stderr
    reply = json.loads(chat.stdout)
    assert set(reply) >= {"reply", "tokens", "tokens_per_second", "time_to_first_token_s"}
    assert 0 < reply["tokens"] <= 8


def test_doctor_reports_the_cpu_and_versions():
    result = lora_studio("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["devices"][-1]["kind"] == "cpu" and report["devices"][-1]["total_bytes"] > 0
    assert "torch" in report["versions"]


def test_models_add_lists_the_folder(tiny_model_dir):
    added = lora_studio("models", "add", str(tiny_model_dir), "--name", "tiny", "--json")
    assert added.returncode == 0, added.stderr
    listed = json.loads(lora_studio("models", "list", "--json").stdout)
    names = [m["name"] for m in listed["models"]]
    assert "tiny" in names


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_give_one_readable_line_and_write_nothing(tiny_model_dir, tmp_path, studio_home):
    dataset = write_messages_dataset(tmp_path / "data.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_config = tmp_path / "not-a-model"
    no_config.mkdir()

    _assert_one_line_error(lora_studio("train", "--model", "no-such-model", "--dataset", str(dataset)),
                           "unknown model")
    _assert_one_line_error(lora_studio("train", "--model", str(tiny_model_dir), "--dataset",
                                       str(tmp_path / "missing.jsonl")), "missing.jsonl")
    _assert_one_line_error(lora_studio("train", "--model", str(tiny_model_dir), "--dataset", str(empty)), "empty")
    _assert_one_line_error(lora_studio("train", "--model", str(no_config), "--dataset", str(dataset)),
                           "config.json")
    _assert_one_line_error(lora_studio("chat", "--model", str(tiny_model_dir), "--adapter", "nope",
                                       "--prompt", "hi"), "unknown adapter")
    _assert_one_line_error(lora_studio("train", "--model", str(tiny_model_dir), "--dataset", str(dataset),
                                       "--rank", "0"), "rank")
    assert list(studio_home.glob("adapters/*")) == []
    assert list(studio_home.glob("runs/*")) == []
