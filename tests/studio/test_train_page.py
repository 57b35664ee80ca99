"""The Train page driven like a user would: pick the tiny model and a dataset, press Start."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.library import list_adapters
from engine.paths import runs_dir
from helpers import write_messages_dataset
from studio.pages.train import TrainPage

RUN_TIMEOUT_MS = 120_000


@pytest.fixture
def page(qtbot) -> TrainPage:
    page = TrainPage()
    qtbot.addWidget(page)
    page.resize(1100, 760)
    page.show()
    return page


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_messages_dataset(tmp_path / "pirate-chat.jsonl", rows=8)


def _configure(page: TrainPage, model_dir: Path, dataset: Path, steps: int) -> None:
    page.model_picker.set_ref(str(model_dir))
    page.dataset_picker.set_path(str(dataset))
    page.rank_spin.setValue(4)
    page.alpha_spin.setValue(8)
    page.lr_spin.setValue(1e-2)
    page.steps_spin.setValue(steps)
    page.batch_spin.setValue(2)
    page.max_length_spin.setValue(64)


def test_defaults_suit_a_cpu_demo(page):
    assert page.rank_spin.value() == 16
    assert page.alpha_spin.value() == 32
    assert page.lr_spin.value() == pytest.approx(1e-3)
    assert page.lr_spin.text() == "0.001"
    assert page.by_steps_radio.isChecked() and page.steps_spin.value() == 60
    assert page.batch_spin.value() == 4
    assert page.max_length_spin.value() == 256
    assert page.start_button.isEnabled()
    assert not page.pause_button.isEnabled() and not page.stop_button.isEnabled()
    for widget in (page.rank_spin, page.alpha_spin, page.lr_spin, page.steps_spin, page.batch_spin,
                   page.max_length_spin, page.method_combo):
        assert widget.toolTip(), widget.accessibleName()


def test_epochs_toggle_trains_by_epochs(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    qtbot.mouseClick(page.by_epochs_radio, Qt.MouseButton.LeftButton)
    assert page.epochs_spin.isEnabled() and not page.steps_spin.isEnabled()
    page.epochs_spin.setValue(2)
    config = page.build_config()
    assert config.max_steps is None and config.epochs == 2


def test_training_run_completes_and_lands_in_the_library(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    page.name_edit.setText("tiny-pirate")
    saved: list[str] = []
    page.adapterSaved.connect(saved.append)

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
        assert not page.start_button.isEnabled()
        assert page.stop_button.isEnabled()

    event = finished.args[0]
    assert event.status == "completed", event.error
    assert page.loss_plot.point_count() >= 1
    assert page.progress_bar.maximum() == 4
    assert page.progress_bar.value() == 4
    assert page.progress_bar.text().startswith("step 4 / 4")
    library = {record.path: record for record in list_adapters()}
    assert event.adapter in library
    assert library[event.adapter].name == "tiny-pirate"
    assert saved == [event.adapter]
    assert page.error_label.isHidden()
    assert "Finished at step 4" in page.log_view.toPlainText()
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()


def test_missing_dataset_shows_an_error_and_starts_nothing(qtbot, page, tiny_model_dir, tmp_path):
    _configure(page, tiny_model_dir, tmp_path / "no-such-file.jsonl", steps=4)

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert page.error_label.isVisible()
    assert "Dataset file not found" in page.error_label.text()
    assert "Dataset file not found" in page.log_view.toPlainText()
    assert not page.run_active and page.start_button.isEnabled()
    assert list_adapters() == []
    assert list(runs_dir().iterdir()) == []


def test_invalid_setting_is_reported_in_the_page(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=4)
    page.name_edit.setText("no spaces allowed")

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert page.error_label.isVisible()
    assert "adapter name" in page.error_label.text()
    assert not page.run_active


def test_failed_run_shows_its_error(qtbot, page, tiny_model_dir, tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not json\n{\"neither\": 1}\n", encoding="utf-8")
    _configure(page, tiny_model_dir, garbage, steps=4)

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    assert finished.args[0].status == "failed"
    assert page.error_label.isVisible()
    assert page.error_label.text().startswith("Training failed:")
    assert list_adapters() == []
    assert page.start_button.isEnabled()


def test_pause_resume_and_stop_with_the_buttons(qtbot, page, tiny_model_dir, dataset):
    _configure(page, tiny_model_dir, dataset, steps=5000)

    # Wait for real progress, so the pause interrupts a run that is training.
    with qtbot.waitSignal(page.progressChanged, timeout=RUN_TIMEOUT_MS,
                          check_params_cb=lambda text: text.startswith("step ") and not text.startswith("step 0 ")):
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)

    with qtbot.waitSignal(page.runStateChanged, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "paused"):
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
        assert page.pause_button.text() == "Pausing…"
    assert page.pause_button.text() == "Resume" and page.pause_button.isEnabled()
    assert "Paused at step" in page.log_view.toPlainText()

    with qtbot.waitSignal(page.runStateChanged, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda s: s == "running"):
        qtbot.mouseClick(page.pause_button, Qt.MouseButton.LeftButton)
    assert page.pause_button.text() == "Pause"

    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
        assert page.stop_button.text() == "Stopping…"

    event = finished.args[0]
    assert event.status == "stopped", event.error
    assert 0 < event.step < 5000
    assert "Stopped at step" in page.log_view.toPlainText()
    assert page.start_button.isEnabled() and not page.pause_button.isEnabled()
