"""The real command line, in a subprocess, as a user or a script would run it.

Train (evaluating the run at its end), adapters list, chat, doctor and models add/list with --json
are run from the installed wheel's console script (tests/test_wheel.py), once: each command is a
process start of several seconds. Here: the refusals."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT, write_messages_dataset


def lora_studio(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio.launch", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


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
