"""Preference pairs made in Compare, in the window on the tiny model: "A is better" and "B is
better" write exactly that pair to the set, "Tie / skip" writes nothing, a written answer is
chosen over both replies, identical replies are refused with one line, and "Train on my
preferences" opens the Train page on the set."""

from __future__ import annotations

import json
import shutil

import pytest
from PySide6.QtCore import Qt
from chat_steps import load_chat_model, make_adapter

from engine.data.preference_store import DEFAULT_SET, set_path
from engine.paths import adapters_dir
from studio import workers
from studio.pages.chat_preferences import A_BETTER, B_BETTER, TIE


@pytest.fixture(scope="module")
def pirate(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("pref-adapters") / "pirate")


@pytest.fixture
def window(qtbot, tiny_model_dir, pirate):
    from studio.main_window import MainWindow

    shutil.copytree(pirate, adapters_dir() / "pirate")
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    window.show_page("Chat")
    chat = window.chat_page
    load_chat_model(qtbot, chat, tiny_model_dir, 60_000)
    chat.tabs.setCurrentWidget(chat.compare_view)
    chat.settings.max_tokens_box.setValue(12)
    # Sampled with a seed of the test's own: every column draws the same, so base against base repeats
    # itself, and base against pirate differs. (Greedy, this random model answers only newlines.)
    chat.settings.temperature_box.setValue(0.9)
    chat.settings.seed_box.setValue(7)
    yield window
    chat.close_session()
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=10_000)


def _compare(qtbot, chat, prompt: str) -> list:
    view = chat.compare_view
    view.prompt_box.setPlainText(prompt)
    with qtbot.waitSignal(chat.compareFinished, timeout=60_000) as blocker:
        view.compare_button.click()
        bar = view.preferences.bars[0]
        assert not bar.buttons[A_BETTER].isEnabled()  # nothing to judge before both replies are in
    return [result.reply.reply for result in blocker.args[0]]


def _rows() -> list[dict]:
    path = set_path(DEFAULT_SET)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def test_judged_pairs_go_to_the_set_and_train_on_them_opens_the_train_page(qtbot, window):
    chat = window.chat_page
    view = chat.compare_view
    panel, bar = view.preferences, view.preferences.bars[0]
    assert [column.chooser.combo.currentText() for column in view.visible_columns()] == ["Base model", "pirate"]
    assert panel.set_box.currentText() == DEFAULT_SET and not panel.train_button.isEnabled()

    base, pirate = _compare(qtbot, chat, "Hello")
    assert base != pirate and bar.buttons[A_BETTER].isEnabled()
    assert (bar.a_label.text(), bar.b_label.text()) == ("A: Base model", "B: pirate")
    bar.buttons[A_BETTER].click()
    [row] = _rows()
    assert row["prompt"] == [{"role": "user", "content": "Hello"}]
    assert row["chosen"] == [{"role": "assistant", "content": base}]
    assert row["rejected"] == [{"role": "assistant", "content": pirate}]
    made_with = row["made_with"]
    assert made_with["chosen"] == {"column": 1, "answered_by": "base model", "adapter": None}
    assert made_with["rejected"] == {"column": 2, "answered_by": "pirate", "adapter": "pirate"}
    assert made_with["settings"]["max_new_tokens"] == 12 and made_with["model"] == chat.model_picker.current_ref()
    # Judged once: the choice stays pressed, and a second click cannot write the pair again.
    assert bar.buttons[A_BETTER].isChecked() and not bar.buttons[B_BETTER].isEnabled()
    assert view.status_label.text() == \
        f"Recorded (A: Base model against B: pirate): A is better. 1 pair in {DEFAULT_SET}."
    assert panel.count_label.text() == "1 pair"

    # By keyboard: Tab reaches the bar's buttons and Space presses them.
    _compare(qtbot, chat, "Where is the treasure?")
    bar.buttons[TIE].setFocus()
    qtbot.keyClick(bar.buttons[TIE], Qt.Key.Key_Space)
    assert len(_rows()) == 1 and view.status_label.text().endswith(": skipped, nothing written.")
    base, pirate = _compare(qtbot, chat, "Say arr")
    bar.buttons[B_BETTER].setFocus()
    qtbot.keyClick(bar.buttons[B_BETTER], Qt.Key.Key_Space)
    second = _rows()[1]
    assert (second["chosen"][0]["content"], second["rejected"][0]["content"]) == (pirate, base)
    assert panel.count_label.text() == "2 pairs"

    # The pairs were judged against the pirate adapter: DPO starts from it (SFT -> DPO).
    train = window.train_page
    panel.train_button.click()
    assert window.current_title() == "Train"
    assert train.dataset_picker.current_path() == str(set_path(DEFAULT_SET))
    assert train.form.values()["objective"] == "dpo"
    assert train.form.values()["from_adapter"] == "pirate"


def test_a_written_answer_beats_both_replies_and_identical_replies_are_refused(qtbot, window):
    chat = window.chat_page
    view = chat.compare_view
    bar = view.preferences.bars[0]
    # Three columns, two bars: column 1 against each other column.
    view.count_box.setValue(3)
    assert [bar.isVisible() for bar in view.preferences.bars] == [True, True, False]
    view.columns[1].chooser.select(0)  # base against base: the same seed, the same reply twice
    view.columns[2].chooser.select(1)
    reply, same, pirate = _compare(qtbot, chat, "Hello")
    assert reply == same != pirate
    assert view.preferences.bars[1].b_label.text() == "B: pirate"
    assert view.preferences.bars[1].buttons[A_BETTER].isEnabled()

    bar.buttons[B_BETTER].click()
    assert view.status_label.text() == \
        "Not recorded: the two answers are the same: nothing to prefer, so the pair is skipped"
    assert bar.buttons[B_BETTER].isEnabled() and not bar.buttons[B_BETTER].isChecked()
    assert not set_path(DEFAULT_SET).exists()  # nothing written

    bar.write_button.click()
    assert bar.editor.hasFocus() and bar.editor.toPlainText() == reply  # B's reply, to edit or type over
    qtbot.keyClick(bar.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert not set_path(DEFAULT_SET).exists()  # unchanged, it is the same as both replies
    qtbot.keyClicks(bar.editor, "Hello! How can I help?")  # replaces the selected reply
    qtbot.keyClick(bar.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    [row] = _rows()  # one pair: the two replies it beats are the same
    assert row["chosen"] == [{"role": "assistant", "content": "Hello! How can I help?"}]
    assert row["rejected"] == [{"role": "assistant", "content": reply}]
    assert row["made_with"]["chosen"] == {"written_by": "the user"}
    assert view.status_label.text().endswith(f": your answer is better than both. 1 pair in {DEFAULT_SET}.")

    # Another set, named in the chooser, gets the next pairs; the count follows the name.
    panel = view.preferences
    panel.set_box.setEditText("polite")
    assert panel.count_label.text() == "new set" and not panel.train_button.isEnabled()
    panel.set_box.setEditText("not a name!")
    assert "may only use letters" in panel.count_label.toolTip() and not panel.train_button.isEnabled()
