"""The Chat page on the tiny model: load, stream, stop, regenerate, copy, save and open,
swap adapters and checkpoints, compare side by side, make room for training, and a
window that stays responsive while replies stream."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication
from chat_steps import load_chat_model, make_adapter

from engine.chat.blends import Blend
from engine.run.config import RunConfig
from engine.paths import adapters_dir, runs_dir
from studio import workers
from studio.pages.chat import ChatPage

STATUS_LINE = re.compile(r"^\d+ tokens · [\d.]+ tok/s · first token [\d.]+ s( · seed \d+)?$")
RED = "#c0392b"


def _words(text: str) -> str:
    # Sampled replies from a random tiny model contain control characters that a text
    # document does not keep; the words are what the user reads.
    return re.sub(r"\W", "", text)


def _send(qtbot, page: ChatPage, text: str, *, max_new_tokens: int = 40, click=None):
    page.settings.max_tokens_box.setValue(max_new_tokens)
    page.message_box.setPlainText(text)
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        (click or page.send_button.click)()
    return blocker.args[0]


@pytest.fixture(scope="module")
def made_adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("page-adapters")
    return {name: make_adapter(tiny_model_dir, root / name, seed) for name, seed in (("pirate", 1), ("poet", 2))}


@pytest.fixture
def library(made_adapters) -> list[str]:
    """The two adapters, in this test's library."""
    for name, folder in made_adapters.items():
        shutil.copytree(folder, adapters_dir() / name)
    return list(made_adapters)


@pytest.fixture
def page(qtbot, shown, tiny_model_dir):
    page = shown(ChatPage())
    load_chat_model(qtbot, page, tiny_model_dir, 60_000)
    assert page.session is not None, page.transcript.toPlainText()
    yield page
    page.close_session()
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=10_000)


class Heartbeat:
    """A 10 ms timer on the UI thread: the longest gap between its ticks is the worst stall."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def worst_stall_s(self) -> float:
        assert len(self.ticks) > 20
        return max(later - earlier for earlier, later in zip(self.ticks, self.ticks[1:])) - 0.010


# loading ------------------------------------------------------------------------------------------
def test_after_load_the_keys_typed_go_to_the_message_box(qtbot, shown, tiny_model_dir):
    page = shown(ChatPage())
    page.activateWindow()
    page.model_picker.set_ref(str(tiny_model_dir))
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        qtbot.mouseClick(page.load_button, Qt.MouseButton.LeftButton)  # a click focuses the button
    try:
        assert page.message_box.hasFocus(), QApplication.focusWidget()
        qtbot.keyClicks(QApplication.focusWidget(), "Ahoy")
        assert page.message_box.toPlainText() == "Ahoy"
        assert page.settings.system_messages() == []
    finally:
        page.close_session()
        qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=10_000)


# chatting -----------------------------------------------------------------------------------------
def test_a_reply_streams_into_the_transcript(qtbot, page):
    assert "Loaded:" in page.session_label.text()
    assert page.send_button.isEnabled() and not page.load_button.isEnabled()
    lengths: list[int] = []
    live: list[str] = []
    page.transcript.textChanged.connect(lambda: lengths.append(len(page.transcript.toPlainText())))
    page.transcript.textChanged.connect(lambda: live.append(page.status_label.text()))
    page.settings.temperature_box.setValue(0.0)  # greedy: this random model then talks on for all 300 tokens

    def ctrl_enter() -> None:
        qtbot.keyClick(page.message_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)

    reply = _send(qtbot, page, "Hello there", max_new_tokens=300, click=ctrl_enter)

    text = page.transcript.toPlainText()
    assert "You\nHello there" in text
    assert "Assistant · base model" in text
    assert reply.tokens == 300 and reply.seed is None
    assert _words(reply.reply) in _words(text.split("Assistant · base model", 1)[1])
    assert len(set(lengths)) > 3, "the reply should appear piece by piece, not all at once"
    assert any(re.match(r"Generating… \d+ tokens · [\d.]+ tok/s$", line) for line in live), live[-5:]
    assert STATUS_LINE.match(page.status_label.text()), page.status_label.text()
    assert "seed" not in page.status_label.text()
    assert page.message_box.toPlainText() == ""
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()


def test_stop_ends_a_long_reply(qtbot, page):
    page.settings.max_tokens_box.setValue(1000)
    # Greedy: this random model then talks on for all its tokens. A sampled reply could draw the
    # end token before the status first showed a count, and this wait would never be met.
    page.settings.temperature_box.setValue(0.0)
    page.message_box.setPlainText("Tell me a very long story")
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        page.send_button.click()
        assert page.stop_button.isEnabled() and not page.send_button.isEnabled()
        assert not page.model_picker.isEnabled() and not page.settings.isEnabled()
        heading_end = len(page.transcript.toPlainText())
        qtbot.waitUntil(lambda: len(page.transcript.toPlainText()) > heading_end, timeout=30_000)
        page.stop_button.click()
    reply = blocker.args[0]
    assert reply.stopped
    assert 0 < reply.tokens < 1000
    assert "[stopped]" in page.transcript.toPlainText()
    assert page.send_button.isEnabled()


def test_multi_turn_keeps_the_whole_conversation_and_the_system_prompt(qtbot, page):
    sent: list[list[dict]] = []
    generate = page.session.generate

    def recording_generate(messages, **kwargs):
        sent.append(list(messages))
        return generate(messages, **kwargs)

    page.session.generate = recording_generate
    page.settings.temperature_box.setValue(0.0)
    page.settings.system_box.setPlainText("Answer like a pirate.")
    first = _send(qtbot, page, "First question", max_new_tokens=5)
    _send(qtbot, page, "Second question", max_new_tokens=5)
    assert [m["role"] for m in sent[1]] == ["system", "user", "assistant", "user"]
    assert sent[1][0]["content"] == "Answer like a pirate."
    assert sent[1][2]["content"] == first.reply
    page.clear_button.click()
    assert page.transcript.toPlainText() == ""
    page.settings.system_box.clear()
    _send(qtbot, page, "Fresh start", max_new_tokens=5)
    assert [m["content"] for m in sent[2]] == ["Fresh start"]


def test_regenerate_replaces_the_last_reply_and_copy_takes_it(qtbot, page):
    page.settings.temperature_box.setValue(1.0)
    page.settings.seed_box.setValue(11)
    first = _send(qtbot, page, "Say something", max_new_tokens=12)
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        page.regenerate_button.click()
    assert blocker.args[0].reply == first.reply  # a fixed seed and the same settings: the same reply

    page.settings.seed_box.setValue(page.settings.seed_box.minimum())  # "random"
    assert page.settings.seed_box.text() == "random"
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        page.regenerate_button.click()
    second = blocker.args[0]
    text = page.transcript.toPlainText()
    assert text.count("You\nSay something") == 1 and text.count("Assistant ·") == 1
    assert second.seed != 11 and f"seed {second.seed}" in page.status_label.text()

    page.copy_button.click()
    assert QGuiApplication.clipboard().text() == second.reply
    assert "Copied" in page.status_label.text()


def test_a_conversation_saved_as_markdown_opens_again_and_goes_on(qtbot, page, tmp_path):
    page.settings.temperature_box.setValue(0.0)
    page.settings.system_box.setPlainText("Be brief.")
    first = _send(qtbot, page, "First question", max_new_tokens=6)
    saved = page.save_transcript_to(str(tmp_path / "chat.md"))
    assert saved is not None and f"Saved the chat to {saved}" == page.status_label.text()
    assert "## User\n\nFirst question\n" in saved.read_text(encoding="utf-8")

    page.clear_button.click()
    page.settings.system_box.clear()
    page.settings.temperature_box.setValue(1.5)
    assert page.open_transcript_from(str(saved))
    assert page.settings.system_box.toPlainText() == "Be brief."
    assert page.settings.temperature_box.value() == 0.0
    text = page.transcript.toPlainText()
    assert "You\nFirst question" in text and "Opened chat.md, a chat with tiny-llama" in text

    sent: list[list[dict]] = []
    generate = page.session.generate
    page.session.generate = lambda messages, **kwargs: sent.append(list(messages)) or generate(messages, **kwargs)
    _send(qtbot, page, "Second question", max_new_tokens=4)
    assert [m["content"] for m in sent[0]] == ["Be brief.", "First question", first.reply, "Second question"]

    page.save_transcript_to(str(tmp_path / "chat.json"))
    assert [m["role"] for m in json.loads((tmp_path / "chat.json").read_text())["messages"]] == \
        ["system", "user", "assistant", "user", "assistant"]


def test_a_file_that_is_not_a_chat_is_refused_in_red(page, tmp_path):
    bad = tmp_path / "notes.json"
    bad.write_text('{"shopping": ["eggs"]}', encoding="utf-8")
    assert not page.open_transcript_from(str(bad))
    assert "Could not open the chat: notes.json is not a LoRA Studio chat" in page.transcript.toPlainText()
    assert RED in page.transcript.toHtml()


# adapters and checkpoints -------------------------------------------------------------------------
def test_switching_adapter_changes_the_reply_without_reloading_the_base(qtbot, page, library):
    page.refresh()
    page.settings.temperature_box.setValue(0.0)
    session, base = page.session, page.session.base_model
    base_reply = _send(qtbot, page, "Hello", max_new_tokens=20)

    page.clear_button.click()
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref("pirate")
    assert page.session is session and session.base_model is base
    assert session.adapter == "pirate"
    assert "chat adapter: pirate" in page.session_label.text()
    adapter_reply = _send(qtbot, page, "Hello", max_new_tokens=20)
    assert adapter_reply.reply != base_reply.reply
    assert "Assistant · pirate" in page.transcript.toPlainText()

    page.clear_button.click()
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref(None)
    assert page.session is session and session.base_model is base
    assert _send(qtbot, page, "Hello", max_new_tokens=20).reply == base_reply.reply


def test_a_checkpoint_of_a_training_run_can_be_chatted_with(qtbot, page, made_adapters, tiny_model_dir):
    run = runs_dir() / "pirate-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "dataset": "d.jsonl"}))
    checkpoint = shutil.copytree(made_adapters["pirate"], run / "checkpoints" / "checkpoint-40")
    (checkpoint / "trainer_state.json").write_text("{}")
    page.refresh()
    labels = [page.adapter_picker.itemText(i) for i in range(page.adapter_picker.count())]
    assert "pirate-run · step 40 (checkpoint)" in labels
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref(str(checkpoint))
    assert "chat adapter: pirate-run · step 40 (checkpoint)" in page.session_label.text()
    assert _send(qtbot, page, "Hello", max_new_tokens=5).tokens > 0


def test_a_runs_saved_adapter_is_offered_once_and_compare_tells_long_names_apart(qtbot, shown, made_adapters,
                                                                                 tiny_model_dir):
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication

    # What a run stopped at step 48 leaves (engine.train.recipe): its checkpoints, and in the library the
    # adapter saved from the last one's weights (test_chat trains a run to see that they are the same bytes).
    name = "20260101-120000-pirate_persona-lora"
    run = runs_dir() / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": str(tiny_model_dir), "dataset": "d.jsonl"}))
    for step, weights in ((24, "poet"), (48, "pirate")):
        checkpoint = shutil.copytree(made_adapters[weights], run / "checkpoints" / f"checkpoint-{step}")
        (checkpoint / "trainer_state.json").write_text("{}")
    saved = shutil.copytree(made_adapters["pirate"], adapters_dir() / name)
    meta = json.loads((saved / "studio.json").read_text())
    (saved / "studio.json").write_text(json.dumps({**meta, "run_dir": str(run), "steps": 48}))

    page = shown(ChatPage())
    page.resize(1024, 680)
    page.model_picker.set_ref(str(tiny_model_dir))
    page.refresh()
    checkpoint_label = f"{name} · step 24 (checkpoint)"
    assert [page.adapter_picker.itemText(i) for i in range(page.adapter_picker.count())] == \
        ["No adapter (base model)", name, checkpoint_label, "GGUF file (llama.cpp)…"]  # no "step 48 (checkpoint)"

    view = page.compare_view
    page.tabs.setCurrentWidget(view)
    view.count_box.setValue(3)
    view.columns[2].chooser.select(2)
    combos = [column.chooser.combo for column in view.visible_columns()]
    assert [combo.currentText() for combo in combos] == ["Base model", name, checkpoint_label]
    # Too long for its column, the checkpoint's name is shortened in the middle: its step still shows.
    adapter_shown, checkpoint_shown = combos[1].shown_text(), combos[2].shown_text()
    assert "…" in checkpoint_shown and checkpoint_shown.endswith("step 24 (checkpoint)")
    assert checkpoint_shown != adapter_shown and combos[2].fontMetrics().horizontalAdvance(checkpoint_shown) < \
        combos[2].width()
    # Pointing at it gives the whole name.
    QApplication.sendEvent(combos[2], QHelpEvent(QEvent.Type.ToolTip, combos[2].rect().center(),
                                                  combos[2].mapToGlobal(combos[2].rect().center())))
    assert combos[2].toolTip().startswith(checkpoint_label)


def test_an_empty_message_is_not_sent(qtbot, page):
    page.message_box.setPlainText("   \n ")
    with qtbot.assertNotEmitted(page.replyFinished):
        page.send_button.click()
    assert not page.busy
    assert "Type a message first" in page.transcript.toPlainText()
    assert RED in page.transcript.toHtml()


def test_picking_another_model_unloads_the_session(qtbot, page, tmp_path):
    other = tmp_path / "not-a-model"
    other.mkdir()
    with qtbot.waitSignal(page.sessionChanged, timeout=30_000):
        page.model_picker.set_ref(str(other))
    assert page.session is None
    assert page.load_button.isEnabled() and not page.send_button.isEnabled()
    with qtbot.waitSignal(page.sessionChanged, timeout=30_000):
        page.load_button.click()
    assert page.session is None
    assert "Could not load not-a-model" in page.transcript.toPlainText()
    assert "config.json" in page.transcript.toPlainText()
    assert RED in page.transcript.toHtml()


# compare ------------------------------------------------------------------------------------------
def test_compare_streams_each_column_with_one_seed(qtbot, page, library):
    page.refresh()
    view = page.compare_view
    page.tabs.setCurrentWidget(view)
    first, second = (page.adapter_picker.itemText(index) for index in (1, 2))  # the library's order
    assert {first, second} == set(library)
    assert [column.chooser.combo.currentText() for column in view.visible_columns()] == \
        ["Base model", first, second]
    view.count_box.setValue(4)
    combination = view.columns[3].chooser
    assert combination.blend_row.isVisible()
    combination.weights[1].setValue(0.5)
    assert view.choices()[3] == Blend(((first, 1.0), (second, 0.5)))

    page.settings.temperature_box.setValue(0.9)
    page.settings.max_tokens_box.setValue(12)
    # A seed of the test's own: with a drawn one, now and then all four columns sampled the same short
    # reply (']{' in one run of the suite), which says nothing about whether the adapters differ.
    page.settings.seed_box.setValue(7)
    view.prompt_box.setPlainText("Hello")
    with qtbot.waitSignal(page.compareFinished, timeout=60_000) as blocker:
        view.compare_button.click()
        assert view.stop_button.isEnabled() and not view.compare_button.isEnabled()
        assert not page.send_button.isEnabled()
    results = blocker.args[0]
    assert [result.error for result in results] == [None] * 4
    assert len({result.reply.seed for result in results}) == 1
    assert len({result.reply.reply for result in results}) > 1  # the adapters answer differently
    for column, result in zip(view.columns, results):
        shown = column.output.toPlainText()
        assert shown.startswith(column.chooser.label())
        assert _words(result.reply.reply) in _words(shown)
        assert STATUS_LINE.match(column.stats_label.text())
    assert view.columns[3].output.toPlainText().startswith(f"{first} + 0.5×{second}")
    assert f"Compared 4 columns with seed {results[0].reply.seed}" in view.status_label.text()
    assert page.session.adapter is None  # the chat's own adapter is untouched
    view.columns[2].copy_button.click()
    assert QGuiApplication.clipboard().text() == results[2].reply.reply


def test_compare_needs_a_prompt(page):
    page.compare_view.prompt_box.setPlainText("  ")
    page.compare_view.compare_button.click()
    assert not page.busy
    assert "Type a prompt first" in page.compare_view.status_label.text()


# sharing the device with training -----------------------------------------------------------------
def test_a_run_that_would_not_fit_beside_the_chat_unloads_it_with_a_notice(qtbot, page, tiny_model_dir):
    fits = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=1, max_length=64, device="cpu")
    page.make_room_for_training(fits)
    assert not page.busy and page.session is not None

    too_big = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=4096, max_length=1 << 20,
                        device="cpu")
    page.settings.max_tokens_box.setValue(1000)
    # Greedy: this random model then talks on for all its tokens. A sampled reply could draw the
    # end token before the status first showed a count, and this wait would never be met.
    page.settings.temperature_box.setValue(0.0)
    page.message_box.setPlainText("Tell me a very long story")
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
            page.send_button.click()
            qtbot.waitUntil(lambda: "Generating…" in page.status_label.text() and "tok" in page.status_label.text(),
                            timeout=30_000)
            page.make_room_for_training(too_big)
    assert blocker.args[0].stopped  # the reply ends at once, what it said so far is kept
    assert page.session is None and page.load_button.isEnabled()
    notice = page.status_label.text()
    assert notice.startswith("Unloaded tiny-llama (local folder) to make room for training: training")
    assert notice in page.transcript.toPlainText()


def test_the_window_unloads_chat_when_a_run_starts_on_the_train_page(qtbot, tiny_model_dir):
    from studio.main_window import MainWindow

    window = MainWindow()
    qtbot.addWidget(window)
    chat = window.chat_page
    load_chat_model(qtbot, chat, tiny_model_dir, 60_000)
    window.train_page.model_picker.set_ref(str(tiny_model_dir))
    window.train_page.form.batch_spin.setValue(window.train_page.form.batch_spin.maximum())
    window.train_page.form.max_length_spin.setValue(window.train_page.form.max_length_spin.maximum())
    with qtbot.waitSignal(chat.sessionChanged, timeout=60_000):
        # The run's start as the Train page announces it (the run itself is not needed here).
        window.train_page.runStateChanged.emit("starting")
    assert chat.session is None
    assert "to make room for training" in chat.transcript.toPlainText()
    window.train_page.runStateChanged.emit("idle")


# responsiveness -----------------------------------------------------------------------------------
@pytest.mark.alone
def test_the_window_stays_responsive_while_a_reply_streams(qtbot, page):
    heartbeat = Heartbeat()
    page.settings.temperature_box.setValue(0.0)
    page.settings.max_tokens_box.setValue(1000)
    page.message_box.setPlainText("Keep talking")
    heartbeat.timer.start()
    try:
        with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
            page.send_button.click()
    finally:
        heartbeat.timer.stop()
    assert blocker.args[0].tokens > 100
    worst = heartbeat.worst_stall_s()
    assert worst < 0.050, f"the UI thread stalled for {worst * 1000:.0f} ms while a reply streamed"


@pytest.mark.alone
def test_the_window_stays_responsive_while_a_comparison_streams(qtbot, page, library):
    page.refresh()
    view = page.compare_view
    page.tabs.setCurrentWidget(view)
    view.count_box.setValue(3)
    page.settings.temperature_box.setValue(0.0)
    page.settings.max_tokens_box.setValue(300)
    view.prompt_box.setPlainText("Keep talking")
    heartbeat = Heartbeat()
    heartbeat.timer.start()
    try:
        with qtbot.waitSignal(page.compareFinished, timeout=60_000) as blocker:
            view.compare_button.click()
    finally:
        heartbeat.timer.stop()
    assert sum(result.reply.tokens for result in blocker.args[0]) > 600
    worst = heartbeat.worst_stall_s()
    assert worst < 0.050, f"the UI thread stalled for {worst * 1000:.0f} ms while a comparison streamed"
