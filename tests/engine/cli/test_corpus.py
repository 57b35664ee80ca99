"""The bad-input corpus (tests/corpus, made by make_corpus.py): every malformed dataset,
model folder, adapter folder, zip and run config, through every command that takes one.
Each is refused with its one-line message and exit code 2; no traceback reaches the user,
and nothing is written to the library, the model store or the runs folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main as cli
from engine.paths import adapters_dir, models_dir, runs_dir
from helpers import TESTS, write_messages_dataset

CORPUS = TESTS / "corpus"
EXPECTED = json.loads((CORPUS / "corpus.json").read_text(encoding="utf-8"))


def _commands(kind: str, entry: Path, tiny: Path, good: Path, out: Path) -> dict[str, list[str]]:
    """The commands that take this kind of input, by the name its expectations use."""
    if kind == "datasets":
        return {"inspect": ["data", "inspect", str(entry)],
                "train": ["train", "--model", str(tiny), "--dataset", str(entry), "--max-steps", "1"]}
    if kind == "models":
        return {"add": ["models", "add", str(entry)],
                "train": ["train", "--model", str(entry), "--dataset", str(good), "--max-steps", "1"],
                "chat": ["chat", "--model", str(entry), "--prompt", "hi", "--max-new-tokens", "1"]}
    if kind == "adapters":
        return {"import": ["adapters", "import", str(entry)],
                "use": ["chat", "--model", str(tiny), "--adapter", str(entry), "--prompt", "hi",
                        "--max-new-tokens", "1"],
                "merge": ["adapters", "merge", str(entry), "--base", str(tiny), "--output", str(out / "merged")]}
    return {"train": ["train", "--config", str(entry)]}


KIND_COMMANDS = {"datasets": ("inspect", "train"), "models": ("add", "train", "chat"),
                 "adapters": ("import", "use", "merge"), "run_configs": ("train",)}


def _cases() -> list[tuple[str, str, str, str]]:
    """(kind, entry, command, message): an entry's one message for all its commands, or one per
    command (an adapter's "use" message stands for chat and merge, which both apply it)."""
    cases = []
    for kind, entries in EXPECTED.items():
        for name, expected in entries.items():
            for command in KIND_COMMANDS[kind]:
                if isinstance(expected, str):
                    message = expected
                else:
                    message = expected.get(command, expected.get("use") if command == "merge" else None)
                if message is not None:
                    cases.append((kind, name, command, message))
    return cases


def test_the_corpus_lists_every_file_it_holds():
    for kind, entries in EXPECTED.items():
        assert sorted(entries) == sorted(p.name for p in (CORPUS / kind).iterdir()), kind


@pytest.mark.parametrize("kind, name, command, message", _cases(),
                         ids=[f"{kind}/{name}/{command}" for kind, name, command, _ in _cases()])
def test_bad_input_gets_its_one_line_message_and_changes_nothing(kind, name, command, message, tiny_model_dir,
                                                                  tmp_path, capsys):
    good = write_messages_dataset(tmp_path / "good.jsonl")
    argv = _commands(kind, CORPUS / kind / name, tiny_model_dir, good, tmp_path)[command]
    code = cli.main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, (code, err[-500:])
    assert "Traceback" not in err and "Traceback" not in out
    assert len(errors) == 1 and "\n" not in errors[0]
    assert message in errors[0], errors[0]
    assert not any(adapters_dir().iterdir()) and not any(models_dir().iterdir()) and not any(runs_dir().iterdir())
