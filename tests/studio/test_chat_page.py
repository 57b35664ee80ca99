"""The Chat page on the tiny model: load, stream, stop, swap adapters, and a responsive window."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QTimer

from engine.paths import adapters_dir
from studio import workers
from studio.pages.chat import ChatPage

STATUS_LINE = re.compile(r"^\d+ tokens · [\d.]+ tok/s · first token [\d.]+ s$")
RED = "#c0392b"


def _words(text: str) -> str:
    # Sampled replies from a random tiny model contain control characters that a text
    # document does not keep; the words are what the user reads.
    return re.sub(r"\W", "", text)


def _send(qtbot, page: ChatPage, text: str, *, max_new_tokens: int = 40, click=None):
    page.max_tokens_box.setValue(max_new_tokens)
    page.message_box.setPlainText(text)
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        (click or page.send_button.click)()
    return blocker.args[0]


def _make_adapter(model_dir: Path, name: str) -> None:
    """A real PEFT LoRA adapter on the tiny model, with B randomised so that it changes replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.models import model_fingerprint

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:  # zero at creation: the adapter would change nothing
                parameter.normal_(0.0, 1.0)
    folder = adapters_dir() / name
    peft_model.save_pretrained(folder)
    meta = {
        "base_model": str(model_dir),
        "base_model_fingerprint": model_fingerprint(model_dir),
        "method": "lora",
        "rank": 4,
    }
    (folder / "studio.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture
def page(qtbot, tiny_model_dir):
    page = ChatPage()
    qtbot.addWidget(page)
    page.resize(1280, 800)
    page.show()
    page.model_picker.set_ref(str(tiny_model_dir))
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.load_button.click()
    assert page.session is not None, page.transcript.toPlainText()
    yield page
    page.close_session()
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=10_000)


def test_a_reply_streams_into_the_transcript(qtbot, page):
    assert "Loaded:" in page.session_label.text()
    assert page.send_button.isEnabled() and not page.load_button.isEnabled()
    lengths: list[int] = []
    page.transcript.textChanged.connect(lambda: lengths.append(len(page.transcript.toPlainText())))
    page.temperature_box.setValue(1.0)

    def ctrl_enter() -> None:
        qtbot.keyClick(page.message_box, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)

    reply = _send(qtbot, page, "Hello there", max_new_tokens=300, click=ctrl_enter)

    text = page.transcript.toPlainText()
    assert "You\nHello there" in text
    assert "Assistant · base model" in text
    assert reply.tokens > 0
    assert _words(reply.reply) in _words(text.split("Assistant · base model", 1)[1])
    assert len(set(lengths)) > 3, "the reply should appear piece by piece, not all at once"
    assert STATUS_LINE.match(page.status_label.text()), page.status_label.text()
    assert page.message_box.toPlainText() == ""
    assert page.send_button.isEnabled() and not page.stop_button.isEnabled()


def test_stop_ends_a_long_reply(qtbot, page):
    page.max_tokens_box.setValue(1000)
    page.message_box.setPlainText("Tell me a very long story")
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
        page.send_button.click()
        assert page.stop_button.isEnabled() and not page.send_button.isEnabled()
        assert not page.model_picker.isEnabled()
        heading_end = len(page.transcript.toPlainText())
        qtbot.waitUntil(lambda: len(page.transcript.toPlainText()) > heading_end, timeout=30_000)
        page.stop_button.click()
    reply = blocker.args[0]
    assert reply.stopped
    assert 0 < reply.tokens < 1000
    assert "[stopped]" in page.transcript.toPlainText()
    assert page.send_button.isEnabled()


def test_multi_turn_keeps_the_whole_conversation(qtbot, page):
    sent: list[list[dict]] = []
    generate = page.session.generate

    def recording_generate(messages, **kwargs):
        sent.append(list(messages))
        return generate(messages, **kwargs)

    page.session.generate = recording_generate
    page.temperature_box.setValue(0.0)
    first = _send(qtbot, page, "First question", max_new_tokens=5)
    _send(qtbot, page, "Second question", max_new_tokens=5)
    assert [m["role"] for m in sent[1]] == ["user", "assistant", "user"]
    assert sent[1][1]["content"] == first.reply
    page.clear_button.click()
    assert page.transcript.toPlainText() == ""
    _send(qtbot, page, "Fresh start", max_new_tokens=5)
    assert [m["content"] for m in sent[2]] == ["Fresh start"]


def test_switching_adapter_changes_the_reply_without_reloading_the_base(qtbot, page, tiny_model_dir):
    _make_adapter(tiny_model_dir, "random-lora")
    page.refresh()
    page.temperature_box.setValue(0.0)
    session, base = page.session, page.session.base_model
    base_reply = _send(qtbot, page, "Hello", max_new_tokens=20)

    page.clear_button.click()
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref("random-lora")
    assert page.session is session and session.base_model is base
    assert session.adapter == "random-lora"
    assert "adapter: random-lora" in page.session_label.text()
    adapter_reply = _send(qtbot, page, "Hello", max_new_tokens=20)
    assert adapter_reply.reply != base_reply.reply
    assert "Assistant · random-lora" in page.transcript.toPlainText()

    page.clear_button.click()
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref(None)
    assert page.session is session and session.base_model is base
    assert _send(qtbot, page, "Hello", max_new_tokens=20).reply == base_reply.reply


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


def test_the_window_stays_responsive_while_a_reply_streams(qtbot, page):
    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.setTimerType(Qt.TimerType.PreciseTimer)
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(lambda: ticks.append(time.perf_counter()))
    page.temperature_box.setValue(0.0)
    page.max_tokens_box.setValue(1000)
    page.message_box.setPlainText("Keep talking")
    heartbeat.start()
    try:
        with qtbot.waitSignal(page.replyFinished, timeout=60_000) as blocker:
            page.send_button.click()
    finally:
        heartbeat.stop()
    assert blocker.args[0].tokens > 100
    assert len(ticks) > 20
    worst = max(later - earlier for earlier, later in zip(ticks, ticks[1:])) - 0.010
    assert worst < 0.050, f"the UI thread stalled for {worst * 1000:.0f} ms while a reply streamed"
