"""The real command line, in a subprocess, as a user or a script would run it.

Train (evaluating the run at its end), adapters list, chat, doctor and models add/list with --json
are run from the installed wheel's console script (tests/test_wheel.py), once: each command is a
process start of several seconds. Here: the refusals, a train's and a chat's in a process of their
own, the rest in this one (``helpers.run_cli``): a process start apiece would check nothing more."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT, run_cli, write_messages_dataset


def lora_studio(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio.launch", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
    )


def in_a_process(*args: str) -> tuple[int, str, str]:
    """``lora-studio ARGS`` in a child process: (exit code, stdout, stderr), as ``run_cli`` gives them."""
    result = lora_studio(*args)
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    """A failure told in exactly one ``error:`` line on standard error, and no traceback."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Traceback" not in out
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_give_one_readable_line_and_write_nothing(tiny_model_dir, tmp_path, studio_home, capsys):
    dataset = write_messages_dataset(tmp_path / "data.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    no_config = tmp_path / "not-a-model"
    no_config.mkdir()

    assert_one_line_error(*in_a_process("train", "--model", "no-such-model", "--dataset", str(dataset)),
                          "unknown model")
    assert_one_line_error(*in_a_process("chat", "--model", str(tiny_model_dir), "--adapter", "nope",
                                        "--prompt", "hi"), "unknown adapter")
    assert_one_line_error(*run_cli(["train", "--model", tiny_model_dir, "--dataset", tmp_path / "missing.jsonl"],
                                   capsys), "missing.jsonl")
    assert_one_line_error(*run_cli(["train", "--model", tiny_model_dir, "--dataset", empty], capsys), "empty")
    assert_one_line_error(*run_cli(["train", "--model", no_config, "--dataset", dataset], capsys), "config.json")
    assert_one_line_error(*run_cli(["train", "--model", tiny_model_dir, "--dataset", dataset, "--rank", "0"],
                                   capsys), "rank")
    assert list(studio_home.glob("adapters/*")) == []
    assert list(studio_home.glob("runs/*")) == []
