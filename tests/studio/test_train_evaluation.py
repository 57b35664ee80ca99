"""Train, then evaluate, in one flow on the Train page: a run with held-out rows scores its adapter
against the base when it completes, and the finished-run notice says by how much."""

from __future__ import annotations

import json
import re
from pathlib import Path

from PySide6.QtCore import Qt

from engine.run.config import RunConfig
from engine.run.rundir import RunDir
from helpers import write_messages_dataset
from studio.pages.train.page import TrainPage

RUN_TIMEOUT_MS = 120_000
HEADLINE = re.compile(r"ROUGE-L \d\.\d\d → \d\.\d\d on (\d+) held-out rows")


def _hold_out(page: TrainPage, dataset: Path, share: float) -> None:
    """Choose the dataset and its validation share on the Data page, as the window passes them on."""
    page.set_data_settings({"dataset": str(dataset), "data_format": None, "columns": {}, "text_split": "auto",
                            "train_on": "assistant", "val_fraction": share})


def _run(qtbot, page: TrainPage):
    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert finished.args[0].status == "completed", finished.args[0].error
    return finished.args[0]


def test_a_run_with_held_out_rows_scores_itself_against_the_base_unless_asked_not_to(qtbot, train_page, tiny_model_dir,
                                                                                     tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl", rows=8)
    train_page.model_picker.set_ref(str(tiny_model_dir))
    _hold_out(train_page, dataset, 0.5)
    form = train_page.form
    form.rank_spin.setValue(4)
    form.steps_spin.setValue(2)
    form.batch_spin.setValue(2)
    form.max_length_spin.setValue(64)
    assert train_page.evaluate_check.isEnabled() and train_page.evaluate_check.isChecked()  # on by default

    ended: list[str] = []
    train_page.evaluationFinished.connect(ended.append)
    _run(qtbot, train_page)
    # The run is over; its evaluation shows where its progress did, with a Stop.
    assert train_page.evaluating and train_page.monitor.stop_evaluation_button.isVisible()
    assert train_page.progress_bar.text().startswith("Evaluating")
    assert train_page.start_button.isEnabled()
    qtbot.waitUntil(lambda: bool(ended), timeout=RUN_TIMEOUT_MS)

    held_out = json.loads(RunDir(train_page._last_run).heldout.read_text())["rows"]
    match = HEADLINE.fullmatch(ended[0])
    assert match and int(match.group(1)) == len(held_out) == 4, ended
    notice = train_page.monitor.notice
    assert notice.isVisible() and notice.text().startswith("Finished at step 2, final loss")
    assert notice.text().endswith(ended[0])
    assert train_page.progress_bar.text() == "step 2 / 2 · done"
    assert not train_page.monitor.stop_evaluation_button.isVisible()
    assert not train_page.evaluating and train_page.error_label.isHidden()

    # Asked not to: the run ends with its loss alone.
    qtbot.mouseClick(train_page.evaluate_check, Qt.MouseButton.LeftButton)
    assert not train_page.evaluate_check.isChecked()
    _run(qtbot, train_page)
    assert not train_page.evaluating and not train_page.monitor.stop_evaluation_button.isVisible()
    assert "→" not in train_page.monitor.notice.text() and "held-out rows" not in train_page.log_view.toPlainText()
    assert RunConfig.load(RunDir(train_page._last_run).config).evaluate_at_end is False
    assert len(ended) == 1


def test_without_a_validation_split_the_option_is_off_and_says_why(train_page, tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl", rows=8)
    train_page.model_picker.set_ref(str(tiny_model_dir))
    check = train_page.evaluate_check
    _hold_out(train_page, dataset, 0.0)
    assert not check.isEnabled() and not check.isChecked()
    assert "validation" in check.toolTip() and "Data page" in check.toolTip()

    _hold_out(train_page, dataset, 0.25)
    assert check.isEnabled() and check.isChecked() and "held out" in check.toolTip()
    check.setChecked(False)
    assert train_page.build_config().evaluate_at_end is False
    # The choice is kept through a change of the validation share.
    _hold_out(train_page, dataset, 0.0)
    _hold_out(train_page, dataset, 0.25)
    assert check.isEnabled() and not check.isChecked()
