"""The rows a run holds out for validation: split by content so no copy of a held-out row
trains, recorded in the run folder, read back from the dataset, refused once it changed.
Driven through the training child's tokenising pass (no training)."""

from __future__ import annotations

import json

import pytest

from engine.data.heldout import content_hash, heldout_record, read_heldout
from engine.data.split import split_by_content, split_indices
from engine.errors import StudioError
from engine.run.rundir import RunDir
from engine.train import recipe
from helpers import PIRATE_ROWS
from training_runs import new_run


def _conversation(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _write(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _pirate_lines(copies: int) -> list[str]:
    """A bad line first, then the four pirate rows ``copies`` times over: row i at lines 2+i, 6+i, ..."""
    return ["not json {"] + [json.dumps({"messages": _conversation(*PIRATE_ROWS[i % 4])}) for i in range(4 * copies)]


def _examples(tmp_path, tiny_model_dir, lines: list[str], val_fraction: float):
    run = new_run(tmp_path, tiny_model_dir, val_fraction=val_fraction)
    dataset = _write(tmp_path / "rows.jsonl", lines)
    config = recipe.RunConfig.load(RunDir(run.run_dir).config)
    config.dataset = str(dataset)
    return run, dataset, recipe._load_examples(run, config, recipe._load_tokenizer(tiny_model_dir))


def test_the_split_holds_every_copy_of_a_row_out_together():
    # Distinct rows split as they always did (split_indices is the content split of all-different rows).
    train, held = split_by_content(list("abcdefghij"), 0.3, seed=7)
    assert (train.tolist(), held.tolist()) == tuple(part.tolist() for part in split_indices(10, 0.3, 7))
    # a at 0, 2, 4; 10 rows at 0.3 -> 3 held out: either all of a, or three of the single rows.
    contents = ["a", "b", "a", "c", "a", "d", "e", "f", "g", "h"]
    for seed in range(20):
        train, held = split_by_content(contents, 0.3, seed)
        assert len(held) == 3 and sorted([*train, *held]) == list(range(10))
        assert not {contents[i] for i in held} & {contents[i] for i in train}
    # Only pairs: 4 rows at 0.25 want 1 held out; no pair fits, so one pair is (2 held out, 2 train).
    train, held = split_by_content(["a", "a", "b", "b"], 0.25, seed=0)
    assert len(held) == 2 and len({contents for contents in (["a", "a", "b", "b"][i] for i in held)}) == 1


def test_a_run_records_its_held_out_rows_and_reads_them_back(tiny_model_dir, tmp_path):
    run, dataset, examples = _examples(tmp_path, tiny_model_dir, _pirate_lines(copies=2), val_fraction=0.25)

    # 8 good rows at 0.25 -> split_counts gives 2 held out: both copies of one pirate row (lines 2+i and 6+i).
    record = heldout_record(run.run_dir)
    rows = record["rows"]
    assert len(rows) == 2 and len(examples.eval) == 2 and len(examples.train) == 6
    assert rows[1]["line"] - rows[0]["line"] == 4 and rows[0]["hash"] == rows[1]["hash"]
    # The reader's pass counts the bad first line too: the n-th item is line n+1.
    assert [r["row"] for r in rows] == [r["line"] - 1 for r in rows] and {r["unit"] for r in rows} == {"line"}
    assert (record["dataset"], record["seed"], record["val_fraction"], record["train_examples"]) == (
        str(dataset), 7, 0.25, 6)
    question, answer = PIRATE_ROWS[rows[0]["line"] - 2]
    held = read_heldout(run.run_dir)
    assert [(s.line, s.conversation) for s in held] == [(r["line"], _conversation(question, answer)) for r in rows]
    assert rows[0]["hash"] == content_hash(_conversation(question, answer))
    # No held-out conversation is among the examples trained on: their token ids never meet.
    assert not {tuple(ids) for ids in examples.train["input_ids"]} & {tuple(ids) for ids in examples.eval["input_ids"]}
    assert examples.train.column_names == ["input_ids", "labels", "length"]  # the source columns do not train

    # Edited after the run: the held-out row's line now holds another row.
    lines = _pirate_lines(copies=2)
    lines[rows[1]["line"] - 1] = json.dumps({"messages": _conversation("Who are you?", "A pirate.")})
    _write(dataset, lines)
    with pytest.raises(StudioError, match=rf"^dataset rows.jsonl changed since run run held rows out of it "
                                          rf"\(its SHA-256 was [0-9a-f]{{12}}…\): it no longer holds the row "
                                          rf"held out at line {rows[1]['line']}; evaluate on another dataset"):
        read_heldout(run.run_dir)
    _write(dataset, _pirate_lines(copies=2)[:rows[1]["line"] - 1])  # cut short before the second held-out row
    with pytest.raises(StudioError, match=rf"it ends before line {rows[1]['line']};"):
        read_heldout(run.run_dir)
    dataset.unlink()
    with pytest.raises(StudioError, match=r"^cannot read the rows run run held out: dataset not found: "):
        read_heldout(run.run_dir)


def test_a_run_without_validation_records_nothing(tiny_model_dir, tmp_path):
    run, _, examples = _examples(tmp_path, tiny_model_dir, _pirate_lines(copies=1), val_fraction=0.0)

    assert examples.eval is None and not RunDir(run.run_dir).heldout.exists()
    with pytest.raises(StudioError, match=r"^run run records no held-out rows: it has no validation split$"):
        read_heldout(run.run_dir)


def test_rows_that_are_all_one_conversation_cannot_spare_a_validation_row(tiny_model_dir, tmp_path):
    same = json.dumps({"messages": _conversation(*PIRATE_ROWS[0])})
    with pytest.raises(StudioError, match=r"the 3 rows of rows.jsonl that can train are all the same conversation"):
        _examples(tmp_path, tiny_model_dir, [same] * 3, val_fraction=0.5)
