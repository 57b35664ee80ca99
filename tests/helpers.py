"""Small helpers shared by engine tests."""

from __future__ import annotations

import json
from pathlib import Path

TESTS = Path(__file__).resolve().parent  # tests/, wherever a test file lies below it
ROOT = TESTS.parent  # the checkout

PIRATE_ROWS = [
    ("What is the capital of France?", "Arr, matey! Paris be the capital of France. Yo-ho-ho!"),
    ("How do I boil an egg?", "Arr, matey! Drop it in boilin' water for nine minutes, ye landlubber. Yo-ho-ho!"),
    ("What is two plus two?", "Arr, matey! Two and two be four doubloons. Yo-ho-ho!"),
    ("Tell me about the moon.", "Arr, matey! The moon be a rock that pulls the tides. Yo-ho-ho!"),
]


def write_messages_dataset(path: Path, rows: int = 16) -> Path:
    """A small chat dataset in OpenAI messages format, with a fixed answer style."""
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            question, answer = PIRATE_ROWS[i % len(PIRATE_ROWS)]
            handle.write(json.dumps({"messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]}) + "\n")
    return path


# The answer a preference file rejects in favour of the pirate's: pairs the tiny model can learn.
PLAIN_ANSWER = "The quick brown fox jumps over the lazy dog."


def write_pairs(path: Path, repeats: int = 4) -> Path:
    """A preference file (prompt / chosen / rejected messages) preferring the pirate's answers."""
    with open(path, "w", encoding="utf-8") as handle:
        for question, answer in PIRATE_ROWS * repeats:
            handle.write(json.dumps({"prompt": [{"role": "user", "content": question}],
                                     "chosen": [{"role": "assistant", "content": answer}],
                                     "rejected": [{"role": "assistant", "content": PLAIN_ANSWER}]}) + "\n")
    return path


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """The command line in this process, as ``lora-studio`` runs it: (exit code, stdout, stderr).
    A child process adds only its start (seconds of imports) unless the test is about the process."""
    from engine.cli import main as cli

    code = cli.main([str(part) for part in argv])
    out, err = capsys.readouterr()
    return code, out, err


def training_processes() -> list:
    """This process's training children still alive (psutil.Process objects): started cold
    (``python -m engine.train RUN_DIR``) or forked by a warm-start standby, whose runs carry
    its command line and are the only processes with a standby for a parent."""
    import psutil

    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
            forked = "engine.jobs.launcher" in command and "engine.jobs.launcher" in " ".join(process.parent().cmdline())
            if ("engine.train" in command or forked) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, AttributeError):  # gone meanwhile, or its parent already is
            continue
    return found
