"""A model that brings its own Python code: the studio names its files and asks before that code
runs, at Start and at Load; Cancel starts nothing, a yes is remembered and not asked again."""

from __future__ import annotations

from typing import Optional

from chat_steps import load_chat_model
from helpers import write_messages_dataset
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.models import trust
from engine.jobs.summary import list_runs
from studio import workers
from studio.pages.chat import ChatPage
from studio.pages.train.page import TrainPage
from studio.widgets.trust_dialog import RUN_CODE

TIMEOUT_MS = 120_000


class Answerer:
    """Answers the next question the studio asks (or notes that none came), as a user would:
    by pressing one of the box's own buttons."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def press(self, button: Optional[str]) -> None:
        """``button``: the text of the button to press, or None for Cancel."""
        def answer() -> None:
            box = QApplication.activeModalWidget()
            if not isinstance(box, QMessageBox):
                QTimer.singleShot(10, answer)  # exec() has not shown it yet
                return
            self.asked.append(f"{box.text()} {box.informativeText()}")
            wanted = [b for b in box.buttons() if b.text() == button] if button else [box.button(
                QMessageBox.StandardButton.Cancel)]
            wanted[0].click()

        QTimer.singleShot(0, answer)


def test_start_asks_before_the_models_code_runs_and_remembers_the_yes(qtbot, shown, custom_model, tmp_path):
    folder, marker = custom_model
    page = shown(TrainPage())
    page.model_picker.set_ref(str(folder))
    page.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "chat.jsonl", rows=8)))
    page.form.steps_spin.setValue(2)
    page.form.max_length_spin.setValue(64)
    answers = Answerer()

    answers.press(None)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert len(answers.asked) == 1 and "custom-model brings its own Python code: modeling_custom.py" in answers.asked[0]
    assert page.start_button.isEnabled() and not page.busy and not list_runs()
    assert not trust.is_trusted(folder) and not marker.exists()

    answers.press(RUN_CODE)
    with qtbot.waitSignal(page.runFinished, timeout=TIMEOUT_MS) as finished:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert finished.args[0].status == "completed", finished.args[0].error
    assert len(answers.asked) == 2 and trust.is_trusted(folder)
    assert marker.read_text() == "the model's own code ran"  # in the training process

    with qtbot.waitSignal(page.runFinished, timeout=TIMEOUT_MS) as again:
        qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)  # trusted: no question
    assert again.args[0].status == "completed" and len(answers.asked) == 2


def test_load_asks_too_and_cancel_loads_nothing(qtbot, shown, custom_model):
    folder, marker = custom_model
    page = shown(ChatPage())
    page.model_picker.set_ref(str(folder))
    answers = Answerer()

    answers.press(None)
    page.load_button.click()
    assert len(answers.asked) == 1 and "modeling_custom.py" in answers.asked[0]
    assert page.session is None and not page.busy and not marker.exists()

    answers.press(RUN_CODE)
    load_chat_model(qtbot, page, folder, TIMEOUT_MS)
    assert page.session is not None, page.transcript.toPlainText()
    assert len(answers.asked) == 2 and marker.read_text() == "the model's own code ran"
    page.close_session()
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=10_000)
