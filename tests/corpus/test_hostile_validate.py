"""Class 5 of issue 23, validate before creating anything: data none of whose rows can train is
refused before a run folder or a training process exists, with the real reason (max length is
advised only when length is the reason); the training child, given the same data, fails with
the same words. Every way into a run is tried: flags, ``--config``, train more, resume, the
Train page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.atomic import write_json
from engine.errors import StudioError
from engine.jobs.checks import check_can_run
from engine.paths import runs_dir
from engine.run.config import RunConfig
from engine.run.rundir import RunDir
from helpers import run_cli, training_processes, write_messages_dataset
from refusals import assert_home_unchanged, assert_refused, home_snapshot

GOOD = [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": "Four."}]


def _messages(*roles_and_contents: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in roles_and_contents]}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _train(model: Path, dataset: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(model), "--dataset", str(dataset), "--max-steps", "1", *extra]


def _refused(argv: list[str], capsys, message: str) -> str:
    """Refused with one line holding ``message``, exit 2, and no run folder nor training process."""
    before = home_snapshot()
    code, out, err = run_cli(argv, capsys)
    line = assert_refused(code, out, err, message)
    assert "run directory" not in out
    assert_home_unchanged(before)
    assert training_processes() == []
    return line


# Data whose every row is unusable, and what the refusal says: the count of rows and the first one.
UNUSABLE = {
    "roles in the wrong order": (
        [_messages(("user", "hi"), ("user", "again"))] * 16,
        "no row of data.jsonl can train: 16 of 16 rows have their roles in the wrong order; first at line 1: "
        "the roles go user, user"),
    "an assistant first": (
        [_messages(("assistant", "hello"), ("user", "hi"))] * 4,
        "4 of 4 rows have their roles in the wrong order; first at line 1: the roles go assistant, user"),
    "unknown roles": (
        [_messages(("bot", "hi"), ("assistant", "hello"))] * 5,
        "5 of 5 rows have a role other than system, user or assistant; first at line 1: message 1 has role 'bot'"),
    "sharegpt speakers nobody knows": (
        [{"conversations": [{"from": "alien", "value": "hi"}, {"from": "gpt", "value": "hello"}]}] * 3,
        "3 of 3 rows have a role other than system, user or assistant; first at line 1: message 1 is from 'alien'"),
    "no assistant answer": (
        [_messages(("user", "anyone there?"))] * 6,
        "6 of 6 rows have no assistant reply"),
    "empty answers": (
        [{"question": "Why?", "answer": "   "}] * 4,
        "4 of 4 rows have an empty answer; first at line 1: 'answer' is empty"),
    "empty questions": (
        [_messages(("user", ""), ("assistant", "Four."))] * 4,
        "4 of 4 rows have empty text; first at line 1: message 1 is an empty user message"),
    "a system-only conversation": (
        [_messages(("system", "You are a pirate."))] * 3,
        "3 of 3 rows hold only a system message"),
    "a text column of empty strings": (
        [{"text": ""}, {"text": "   "}, {"text": "\n"}],
        "3 of 3 rows have empty text; first at line 1: 'text' is empty"),
    "several reasons at once": (
        [_messages(("user", "a"), ("user", "b"))] * 3 + [{"messages": [{"role": "bot", "content": "x"}]}] * 2
        + [_messages(("user", "q"), ("assistant", ""))],
        "3 of 6 rows have their roles in the wrong order, 2 have a role other than system, user or assistant, "
        "1 has an empty answer; first at line 1"),
}


@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
def test_data_nothing_of_which_can_train_is_refused_before_a_run_exists(case, tiny_model_dir, tmp_path, capsys):
    rows, message = UNUSABLE[case]
    dataset = _jsonl(tmp_path / "data.jsonl", rows)
    line = _refused(_train(tiny_model_dir, dataset), capsys, message)
    assert "max length" not in line  # length is not why


def test_rows_cut_to_nothing_by_max_length_advise_raising_it(tiny_model_dir, tmp_path, capsys):
    long_question = _messages(("user", "tell me about the sea " * 20), ("assistant", "Arr."))
    dataset = _jsonl(tmp_path / "data.jsonl", [long_question] * 5)
    line = _refused(_train(tiny_model_dir, dataset, "--max-length", "16"), capsys,
                    "no row of data.jsonl can train: 5 of 5 rows have nothing to learn within max length 16; "
                    "first at line 1: its prompt alone takes")
    assert line.endswith("raise max length (now 16)")


def test_max_length_is_advised_beside_other_reasons_when_it_is_one(tiny_model_dir, tmp_path, capsys):
    rows = [_messages(("user", "x " * 80), ("assistant", "Arr."))] * 2 + [_messages(("user", "hi"))] * 3
    line = _refused(_train(tiny_model_dir, _jsonl(tmp_path / "data.jsonl", rows), "--max-length", "8"), capsys,
                    "3 of 5 rows have no assistant reply, 2 have nothing to learn within max length 8")
    assert line.endswith("raise max length (now 8)")


def test_a_validation_share_that_would_hold_out_nothing_is_refused(tiny_model_dir, tmp_path, capsys):
    rows = [{"messages": GOOD}] + [_messages(("user", "hi"))] * 7
    _refused(_train(tiny_model_dir, _jsonl(tmp_path / "data.jsonl", rows), "--val-fraction", "0.25"), capsys,
             "a validation share of 0.25 holds out no row: only 1 row of data.jsonl can train")


def test_bad_rows_set_to_stop_are_refused_at_the_first_one_before_a_run_exists(tiny_model_dir, tmp_path, capsys):
    rows = [{"messages": GOOD}, _messages(("user", "hi"), ("user", "again")), {"messages": GOOD}]
    _refused(_train(tiny_model_dir, _jsonl(tmp_path / "data.jsonl", rows), "--bad-rows", "stop"), capsys,
             "data.jsonl has bad rows; first at line 2: the roles go user, user")


def test_a_run_config_file_with_unusable_data_is_refused_the_same_way(tiny_model_dir, tmp_path, capsys):
    dataset = _jsonl(tmp_path / "data.jsonl", [_messages(("user", "hi"), ("user", "again"))] * 2)
    run_json = tmp_path / "run.json"
    write_json(run_json, RunConfig(model=str(tiny_model_dir), dataset=str(dataset), max_steps=1).to_dict())
    _refused(["train", "--config", str(run_json)], capsys,
             "no row of data.jsonl can train: 2 of 2 rows have their roles in the wrong order")


def _exported_run(tmp_path: Path, config: RunConfig) -> Path:
    """A run folder made without the parent's check, as a run exported to run elsewhere is."""
    run_dir = tmp_path / "exported-run"
    run_dir.mkdir()
    write_json(RunDir(run_dir).config, config.to_dict())
    return run_dir


def test_a_few_good_rows_among_bad_ones_train_when_bad_rows_are_skipped(tiny_model_dir, tmp_path):
    from engine.train.recipe import Run, run_and_report

    rows = [_messages(("user", "hi"))] * 5 + [{"messages": GOOD}] * 2 + [{"text": "stray"}]
    config = RunConfig(model=str(tiny_model_dir), dataset=str(_jsonl(tmp_path / "data.jsonl", rows)), max_steps=1,
                       max_length=64, bad_rows="skip")
    check_can_run(config)  # the parent lets it start

    finished = run_and_report(Run(_exported_run(tmp_path, config)))

    assert finished.status == "completed" and finished.adapter, finished.error


def _stopped_run_with_a_checkpoint(config: RunConfig) -> Path:
    """A run stopped at step 2 of 5 with a complete checkpoint: it can be resumed or trained more."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine.run.events import RunFinished
    from run_folders import T0, started, write_run

    run_dir = write_run("20260101-100000-data-lora", [started(T0, total=5), RunFinished(status="stopped", step=2)],
                        config=config.to_dict())
    checkpoint = RunDir(run_dir).checkpoints / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    save_file({"weight": np.zeros(4, dtype=np.float32)}, str(checkpoint / "adapter_model.safetensors"))
    return run_dir


def test_resume_and_train_more_check_the_data_again(tiny_model_dir, tmp_path, capsys):
    dataset = write_messages_dataset(tmp_path / "data.jsonl", rows=4)
    run_dir = _stopped_run_with_a_checkpoint(RunConfig(model=str(tiny_model_dir), dataset=str(dataset), max_steps=5))
    # The data went bad since the run stopped: going on is refused before the run's config is touched.
    _jsonl(dataset, [_messages(("user", "hi"))] * 4)
    config_before = RunDir(run_dir).config.read_text()
    for extra in (["--more-steps", "1"], []):
        _refused(["train", "--resume", str(run_dir), *extra], capsys, "4 of 4 rows have no assistant reply")
    assert RunDir(run_dir).config.read_text() == config_before


# The child's own failure, on a run folder made without the parent's check, says what the parent's refusal says.
CHILD_CASES = {
    "no usable row": ([_messages(("user", "hi"), ("user", "again"))] * 3, {}),
    "rows cut by max length": ([_messages(("user", "sea " * 40), ("assistant", "Arr."))] * 3, {"max_length": 8}),
    "an empty validation split": ([{"messages": GOOD}, _messages(("user", "hi"))], {"val_fraction": 0.5}),
}


@pytest.mark.parametrize("case", CHILD_CASES, ids=list(CHILD_CASES))
def test_the_training_child_fails_with_the_reason_the_parent_refuses_with(case, tiny_model_dir, tmp_path):
    from engine.train.recipe import Run, run_and_report

    rows, settings = CHILD_CASES[case]
    config = RunConfig(model=str(tiny_model_dir), dataset=str(_jsonl(tmp_path / "data.jsonl", rows)), max_steps=1,
                       **settings)
    with pytest.raises(StudioError) as refused:
        check_can_run(config)

    finished = run_and_report(Run(_exported_run(tmp_path, config)))

    assert finished.status == "failed"
    assert finished.error == str(refused.value)


def test_the_train_page_shows_the_reason_and_starts_nothing(qtbot, tiny_model_dir, tmp_path):
    from PySide6.QtCore import Qt

    from studio.pages.train.page import TrainPage

    page = TrainPage()
    qtbot.addWidget(page)
    page.show()
    page.find_device()
    qtbot.waitUntil(lambda: page._device is not None, timeout=30_000)
    page.model_picker.set_ref(str(tiny_model_dir))
    page.dataset_picker.set_path(str(_jsonl(tmp_path / "data.jsonl", [_messages(("system", "Be brief."))] * 4)))
    page.form.steps_spin.setValue(1)

    with qtbot.waitSignal(page.runStateChanged, timeout=60_000, check_params_cb=lambda state: state == "idle"):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert "no row of data.jsonl can train: 4 of 4 rows hold only a system message" in page.error_label.text()
    assert "max length" not in page.error_label.text()
    assert not page.run_active and page.start_button.isEnabled()
    assert not runs_dir().exists() or list(runs_dir().iterdir()) == []
    assert training_processes() == []


def test_a_good_dataset_is_checked_by_reading_its_first_rows_only(tiny_model_dir, tmp_path):
    """A good first row is enough: the junk after it is the child's to skip, and is not read here."""
    dataset = write_messages_dataset(tmp_path / "data.jsonl", rows=1)
    with open(dataset, "a", encoding="utf-8") as handle:
        handle.write("not json\n" * 50_000)
    from engine.data.dataset import open_dataset
    from engine.data.trainable import check_trainable
    from engine.models.tokenizer import load_tokenizer

    source = open_dataset(dataset)
    tokenizer = load_tokenizer(tiny_model_dir)
    check_trainable(source, tokenizer, max_length=64)
    assert source.fraction_read() < 0.1
