"""One long studio session: three training runs, a merge and 50 chat replies in the same window.

Nothing may pile up: the studio's memory after it all is within 10% of its level after the
first run, no training process is left behind, and every run's event log is whole.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import psutil
from PySide6.QtCore import Qt

from chat_steps import load_chat_model
from engine.adapters.library import list_adapters
from helpers import training_processes, write_messages_dataset
from lora_adapters import merge_in_dialog
from studio.main_window import MainWindow

TIMEOUT_MS = 120_000
RUNS, STEPS, REPLIES = 3, 3, 50


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _train(qtbot, window: MainWindow, name: str):
    train = window.train_page
    train.form.name_edit.setText(name)
    with qtbot.waitSignal(train.runFinished, timeout=TIMEOUT_MS) as finished:
        qtbot.mouseClick(train.start_button, Qt.MouseButton.LeftButton)
    assert finished.args[0].status == "completed", finished.args[0].error
    return finished.args[0]


def _event_log_is_whole(run_dir: Path) -> None:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds.count("RunStarted") == 1 and kinds[-1] == "RunFinished", kinds
    assert [e["step"] for e in events if e["event"] == "StepMetrics"] == list(range(1, STEPS + 1))


def test_three_runs_a_merge_and_fifty_replies_leave_nothing_behind(qtbot, tiny_model_dir, tmp_path):
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    train = window.train_page
    train.model_picker.set_ref(str(tiny_model_dir))
    train.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "pirate.jsonl", rows=8)))
    form = train.form
    form.rank_spin.setValue(4)
    form.steps_spin.setValue(STEPS)
    form.batch_spin.setValue(2)
    form.max_length_spin.setValue(64)

    _train(qtbot, window, "soak-1")
    after_first = _rss()
    for index in range(2, RUNS + 1):
        _train(qtbot, window, f"soak-{index}")

    adapters = window.adapters_page
    window.show_page("Adapters")
    adapters.refresh()
    adapters.select_name("soak-1")
    dialog = adapters.merge_dialog()
    qtbot.addWidget(dialog)
    merge_in_dialog(qtbot, adapters, dialog, TIMEOUT_MS)
    dialog.close()

    chat = window.chat_page
    window.show_page("Chat")
    load_chat_model(qtbot, chat, tiny_model_dir, TIMEOUT_MS)
    chat.settings.max_tokens_box.setValue(8)
    for number in range(REPLIES):
        qtbot.waitUntil(lambda: chat.send_button.isEnabled(), timeout=TIMEOUT_MS)  # the last reply has ended
        if number % 10 == 0:
            chat.clear_button.click()  # a new conversation now and then: ten turns fit the tiny model's context
        chat.message_box.setPlainText(f"Question {number}: where be the treasure?")
        with qtbot.waitSignal(chat.replyFinished, timeout=TIMEOUT_MS) as reply:
            chat.send_button.click()
        assert reply.args[0].tokens > 0
    qtbot.waitUntil(lambda: chat.send_button.isEnabled(), timeout=TIMEOUT_MS)

    at_end = _rss()
    growth = (at_end - after_first) / after_first
    print(f"studio memory: {after_first / 2**20:.0f} MiB after the first run, {at_end / 2**20:.0f} MiB after "
          f"{RUNS} runs, a merge and {REPLIES} replies ({growth:+.1%})")
    assert growth <= 0.10
    assert training_processes() == []
    names = sorted(a.name for a in list_adapters())
    assert names == [f"soak-{index}" for index in range(1, RUNS + 1)]
    run_dirs = sorted(d for d in train._last_run.parent.iterdir() if d.is_dir())
    assert len(run_dirs) == RUNS
    for run_dir in run_dirs:
        _event_log_is_whole(run_dir)
    window.close()
