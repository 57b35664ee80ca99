"""The Chat page on an exported GGUF file, answered by real llama.cpp: side by side in Compare with
the adapter it came from, then in the chat, with the adapter's answers."""

from __future__ import annotations

import shutil

import pytest
from gguf_models import merged_gguf
from lora_adapters import PIRATE_TEMPLATE, library_adapter, write_peft_adapter

from engine.gguf.runtime import KIT_ENV, UNAVAILABLE_FILE
from studio.pages.chat import ChatPage

pytest.importorskip("llama_cpp", reason="llama.cpp (llama-cpp-python) is not installed here")

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPT = "What is the capital of France?"


def test_the_exported_file_answers_beside_its_adapter_and_in_the_chat(qtbot, shown, tiny_model_dir, tmp_path,
                                                                       monkeypatch):
    # The pirate adapter in the library, with its own chat template, and its export: merged into the
    # base, with that template, as an F32 GGUF file.
    options = dict(scale=1.0, targets=ALL_LINEAR)
    library_adapter(tiny_model_dir, "pirate", **options)
    adapter = write_peft_adapter(tiny_model_dir, tmp_path / "pirate", **options)
    gguf = merged_gguf(tiny_model_dir, adapter, tmp_path / "pirate.gguf", chat_template=PIRATE_TEMPLATE)

    page = shown(ChatPage())
    page.settings.temperature_box.setValue(0.0)
    page.settings.max_tokens_box.setValue(16)
    # "Chat with this file", as the Adapters page's GGUF export offers it: the adapter's base is
    # loaded, Compare puts the adapter and the file side by side, and the chat answers from the file.
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.chat_with_file(str(gguf), "pirate")
    assert page.tabs.currentWidget() is page.compare_view
    assert "chat adapter: pirate.gguf (llama.cpp)" in page.session_label.text()

    view = page.compare_view
    view.prompt_box.setPlainText(PROMPT)
    with qtbot.waitSignal(page.compareFinished, timeout=60_000) as compared:
        view.compare_button.click()
    adapter_column, file_column = view.visible_columns()
    assert [column.chooser.label() for column in (adapter_column, file_column)] == ["pirate", "pirate.gguf (llama.cpp)"]
    adapter_reply, file_reply = (result.reply for result in compared.args[0])
    assert file_reply.reply == adapter_reply.reply and file_reply.tokens == adapter_reply.tokens == 16
    assert len(set(file_reply.reply)) > 4  # words of the adapter's, not one repeated character
    assert file_column.reply_text == adapter_column.reply_text

    page.tabs.setCurrentIndex(0)
    page.message_box.setPlainText(PROMPT)
    with qtbot.waitSignal(page.replyFinished, timeout=60_000) as replied:
        page.send_button.click()
    assert replied.args[0].reply == adapter_reply.reply
    assert "Assistant · pirate.gguf (llama.cpp)" in page.transcript.toPlainText()

    # A file that is not there, and llama.cpp when the set-up could not build it: one line each.
    assert page.add_gguf_file(str(tmp_path / "gone.gguf")) is None
    assert f"Cannot chat with a GGUF file: there is no GGUF file at {tmp_path / 'gone.gguf'}" in \
        page.transcript.toPlainText()
    monkeypatch.setenv(KIT_ENV, str(tmp_path / "kit"))
    (tmp_path / f"kit.{UNAVAILABLE_FILE}").write_text("cmake: C++ compiler not found\n")
    other = page.add_gguf_file(str(shutil.copy(gguf, tmp_path / "again.gguf")))
    with qtbot.waitSignal(page.sessionChanged, timeout=60_000):
        page.adapter_picker.set_ref(other)
    assert ("Could not switch to again.gguf (llama.cpp): llama.cpp could not be built at set-up "
            "(cmake: C++ compiler not found)") in page.transcript.toPlainText()
    page.close_session()
