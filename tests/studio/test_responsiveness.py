"""The window never freezes: a 10 ms heartbeat on the UI thread runs through the slow things the
studio does (a training run, a chat reply, the preview of a large dataset, an adapter merge,
serving clients) and no tick may be more than 50 ms late. Each runs in the whole window, on the tiny model and real
files. bench/ui_latency.py measures the percentiles, and with ``--explain`` says what the UI
thread was doing in its stalls.
"""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
from chat_steps import load_chat_model
from heartbeat import Heartbeat
from helpers import write_messages_dataset
from lora_adapters import library_adapter, merge_in_dialog

from studio import workers
from studio.app import start
from studio.logs import stop_logging
from studio.main_window import MainWindow

pytestmark = pytest.mark.alone  # a stall bound: run with no other test beside it

STALL_MS = 50
TIMEOUT_MS = 120_000


@pytest.fixture
def window(qtbot) -> MainWindow:
    """The window as the app starts it: shown, then the libraries loaded and the garbage
    collector's long-lived objects frozen (a full collection otherwise takes 300-600 ms)."""
    gc.unfreeze()  # whatever an earlier test left frozen: the freeze waited for below is the studio's own
    _app, window = start()
    qtbot.addWidget(window)
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 0 and not window.background_label.isVisible(),
                    timeout=TIMEOUT_MS)
    yield window
    window.close()
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=TIMEOUT_MS)
    stop_logging()
    gc.unfreeze()


def _assert_no_stall(heartbeat: Heartbeat, what: str) -> None:
    worst = heartbeat.worst_ms()
    print(f"{what}: worst stalls {heartbeat.worst_described()}")  # shown with -rP or -s
    assert worst < STALL_MS, f"the window stalled for {worst:.0f} ms during {what} (worst: {heartbeat.worst_described()})"


def test_a_training_run(qtbot, window, tiny_model_dir, tmp_path):
    """From Start to the saved adapter, the loss and memory plots drawing every step."""
    train = window.train_page
    window.show_page("Train")
    train.model_picker.set_ref(str(tiny_model_dir))
    train.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "pirate.jsonl", rows=32)))
    train.form.steps_spin.setValue(24)
    train.form.max_length_spin.setValue(64)
    # As the user sees it before pressing Start: the page painted, its two empty plots included
    # (a plot's first paint takes ~30 ms, and several times that on a loaded machine).
    qtbot.waitExposed(train)
    qtbot.wait(300)
    with Heartbeat() as heartbeat:
        with qtbot.waitSignal(train.runFinished, timeout=TIMEOUT_MS) as finished:
            train.start_run()
    assert finished.args[0].status == "completed", finished.args[0].error
    assert train.loss_plot.point_count() >= 20
    _assert_no_stall(heartbeat, "a training run")


def test_a_chat_reply(qtbot, window, tiny_model_dir):
    chat = window.chat_page
    window.show_page("Chat")
    load_chat_model(qtbot, chat, tiny_model_dir, TIMEOUT_MS)
    chat.settings.temperature_box.setValue(0.0)
    chat.settings.max_tokens_box.setValue(400)
    chat.message_box.setPlainText("Keep talking")
    with Heartbeat() as heartbeat:
        with qtbot.waitSignal(chat.replyFinished, timeout=TIMEOUT_MS) as reply:
            chat.send_button.click()
    assert reply.args[0].tokens > 100
    _assert_no_stall(heartbeat, "a chat reply")

    # Unloading the model thaws every frozen object so that the model's cycles can be freed;
    # once it is gone the long-lived objects are frozen again.
    with qtbot.waitSignal(chat.sessionChanged, timeout=TIMEOUT_MS):
        chat.model_picker.set_ref("starter")
    assert chat.session is None and gc.get_freeze_count() > 0


def test_the_preview_of_a_large_dataset(qtbot, window, tmp_path):
    dataset = write_messages_dataset(tmp_path / "large.jsonl", rows=100_000)
    data = window.data_page
    window.show_page("Data")
    with qtbot.waitSignal(data.inspectionFinished, timeout=TIMEOUT_MS):
        pass  # the sample the Train page picked
    with Heartbeat() as heartbeat:
        with qtbot.waitSignal(data.inspectionFinished, timeout=TIMEOUT_MS):
            data.picker.set_path(str(dataset))
    assert data.rows_value.text() == "100,000"
    _assert_no_stall(heartbeat, "the preview of a 100,000-row dataset")


def test_an_adapter_merge(qtbot, window, tiny_model_dir):
    library_adapter(tiny_model_dir, "pirate")
    adapters = window.adapters_page
    window.show_page("Adapters")
    adapters.select_name("pirate")
    dialog = adapters.merge_dialog()
    qtbot.addWidget(dialog)
    # As the user sees them before pressing Merge: the page with the adapter's loss curve
    # painted (a first paint of a plot takes ~30 ms) and the dialog open.
    dialog.show()
    qtbot.waitExposed(dialog)
    qtbot.wait(300)
    with Heartbeat() as heartbeat:
        merge_in_dialog(qtbot, adapters, dialog, TIMEOUT_MS)
    _assert_no_stall(heartbeat, "an adapter merge")


# Clients in a process of their own, as editors and scripts are: THREADS threads, each sending
# REQUESTS chat requests in turn, alternating between two adapters, every other one streamed.
CLIENTS = """
import json, sys, threading, urllib.request
url, threads, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def client(number):
    for request in range(requests):
        body = {"model": ("pirate", "parrot")[(number + request) % 2], "max_tokens": 32,
                "stream": request % 2 == 1, "messages": [{"role": "user", "content": "Keep talking"}]}
        call = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=60) as answer:
            answer.read()
workers = [threading.Thread(target=client, args=(number,)) for number in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""
THREADS, REQUESTS = 4, 8


def test_serving_clients(qtbot, window, tiny_model_dir):
    """Several clients keep the server busy: the request log and the live figures update without a stall."""
    library_adapter(tiny_model_dir, "pirate")
    library_adapter(tiny_model_dir, "parrot", seed=2)
    serve = window.serve_page
    window.show_page("Serve")
    with qtbot.waitSignal(serve.adaptersListed, timeout=TIMEOUT_MS):
        serve.model_picker.set_ref(str(tiny_model_dir))
    serve.form.set_checked(["pirate", "parrot"])
    serve.form.port_spin.setValue(0)
    with qtbot.waitSignal(serve.servingChanged, timeout=TIMEOUT_MS) as started:
        serve.start_button.click()
    assert started.args[0] == "serving", serve.error_label.text()
    qtbot.waitExposed(serve)
    qtbot.wait(300)
    clients = subprocess.Popen([sys.executable, "-c", CLIENTS, serve.server.url, str(THREADS), str(REQUESTS)])
    try:
        with Heartbeat() as heartbeat:
            qtbot.waitUntil(lambda: serve.log_view.log.rowCount() == THREADS * REQUESTS, timeout=TIMEOUT_MS)
    finally:
        assert clients.wait(TIMEOUT_MS / 1000) == 0
        # Stopping frees the model with a full garbage collection (ChatSession.close), which holds
        # the interpreter for some 50-70 ms wherever it runs: the unload the user asked for, as on
        # the Chat page, and outside the heartbeat.
        with qtbot.waitSignal(serve.servingChanged, timeout=TIMEOUT_MS):
            serve.stop_button.click()
    log = serve.log_view.log
    assert {serve.log_view.cells(row)[4] for row in range(log.rowCount())} == {"200"}
    assert {serve.log_view.cells(row)[2] for row in range(log.rowCount())} == {"pirate", "parrot"}
    _assert_no_stall(heartbeat, f"serving {THREADS} clients")
