"""The main window: eight pages in a sidebar, switched by click or Ctrl+1..8, and wired together."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.adapters.library import list_adapters
from engine.run.control import send_command
from engine.paths import adapters_dir
from studio import workers
from helpers import training_processes, write_messages_dataset
from studio.main_window import MainWindow

PAGES = ["Home", "Models", "Data", "Train", "Adapters", "Chat", "Evaluate", "Serve"]
ROOT = Path(__file__).resolve().parents[2]


def _settle(qtbot) -> None:
    """Wait for the background work pages start when shown (device checks, dataset reads).

    Waiting for each task's signal in turn would miss one that finished meanwhile."""
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=60_000)


@pytest.fixture
def window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    # The Home page looks for devices in the background as soon as it is shown.
    with qtbot.waitSignal(window.home_page.hardwareLoaded, timeout=60_000):
        pass
    return window


def _fake_adapter(name: str) -> Path:
    folder = adapters_dir() / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}), encoding="utf-8")
    # A complete safetensors file holding no tensors: the library reads the header and
    # lists a file whose length does not match it as damaged (half-copied).
    (folder / "adapter_model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return folder


def test_eight_pages_in_the_sidebar(window):
    assert window.windowTitle() == "LoRA Studio"
    assert [window.sidebar.item(i).text() for i in range(window.sidebar.count())] == PAGES
    assert window.stack.count() == len(PAGES)
    assert window.stack.currentWidget() is window.home_page
    assert window.width() >= 1024 and window.height() >= 680


def test_home_shows_the_hardware_found(window):
    table = window.home_page.devices_table
    assert table.rowCount() >= 1
    kinds = [table.item(row, 1).text() for row in range(table.rowCount())]
    assert "cpu" in kinds
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    assert headers[5:] == ["Compute", "Driver", "Use", "Temperature"]
    cpu = kinds.index("cpu")
    cores = psutil.cpu_count(logical=False) or psutil.cpu_count()
    assert table.item(cpu, 5).text().startswith(f"{cores} cores")
    assert table.item(cpu, 7).text().endswith("%")  # the CPU's live utilisation
    assert window.home_page.versions_label.text().startswith("Versions:")


def test_clicking_the_sidebar_switches_pages(qtbot, window):
    expected = [window.home_page, window.models_page, window.data_page,
                window.train_page, window.adapters_page, window.chat_page, window.evaluate_page, window.serve_page]
    for row, page in enumerate(expected):
        item = window.sidebar.item(row)
        qtbot.mouseClick(window.sidebar.viewport(), Qt.MouseButton.LeftButton,
                         pos=window.sidebar.visualItemRect(item).center())
        assert window.stack.currentWidget() is page
    _settle(qtbot)


def test_ctrl_number_shortcuts_switch_pages(qtbot, window):
    window.activateWindow()
    for number, title in reversed(list(enumerate(PAGES, start=1))):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{number}"), Qt.KeyboardModifier.ControlModifier)
        assert window.sidebar.currentItem().text() == title
        assert window.stack.currentIndex() == number - 1
    _settle(qtbot)


def test_new_adapter_reaches_the_adapters_and_chat_pages(window):
    path = _fake_adapter("fresh-adapter")

    window.train_page.adapterSaved.emit(str(path))

    chat_choices = [window.chat_page.adapter_picker.itemText(i)
                    for i in range(window.chat_page.adapter_picker.count())]
    assert "fresh-adapter" in chat_choices
    assert window.adapters_page.table.rowCount() == 1
    assert "fresh-adapter" in window.statusBar().currentMessage()


def test_closing_without_a_run_closes(window):
    assert window.close()


def test_closing_the_window_ends_the_work_its_pages_started(window):
    """Work still going when the window closes is cancelled and waited for, and then counts as
    ended at once: no later tick of the event loop, which a closing window may never get, is needed."""
    release = threading.Event()

    def until_cancelled(reporter):
        while not reporter.cancelled:
            release.wait(0.01)

    window.show_page("Train")  # the page starts its own work too (device, warm-up)
    task = workers.BackgroundTask(until_cancelled, parent=window.train_page).start()
    assert task.running
    assert window.close()
    assert workers.live_tasks() == []


def _start_a_long_run(qtbot, window, model_dir: Path, tmp_path: Path):
    train = window.train_page
    train.model_picker.set_ref(str(model_dir))
    train.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "chat.jsonl", rows=8)))
    train.form.steps_spin.setValue(5000)
    train.form.max_length_spin.setValue(64)
    with qtbot.waitSignal(train.progressChanged, timeout=120_000,
                          check_params_cb=lambda text: text.startswith("step ") and not text.startswith("step 0 ")):
        qtbot.mouseClick(train.start_button, Qt.MouseButton.LeftButton)
    return train


def _answer_the_quit_question(button_text: str) -> list[str]:
    """Press ``button_text`` in the question the window asks when it closes; the question's
    buttons are recorded in the list returned."""
    seen: list[str] = []

    def press() -> None:
        box = QApplication.activeModalWidget()
        assert isinstance(box, QMessageBox)
        buttons = {button.text().replace("&", ""): button for button in box.buttons()}
        seen.extend(buttons)
        buttons.get(button_text, box.escapeButton()).click()  # an unknown text cancels: no test hangs

    QTimer.singleShot(0, press)
    return seen


def test_closing_during_a_run_asks_then_stops_and_saves(qtbot, window, tiny_model_dir, tmp_path):
    train = _start_a_long_run(qtbot, window, tiny_model_dir, tmp_path)
    offered = _answer_the_quit_question("Cancel")
    assert not window.close()
    assert sorted(offered) == ["Cancel", "Keep training", "Stop and quit"]
    assert window.isVisible() and train.run_active

    _answer_the_quit_question("Stop and quit")
    with qtbot.waitSignal(train.runFinished, timeout=120_000) as finished:
        assert window.close()
    event = finished.args[0]
    assert event.status == "stopped"
    assert event.adapter in [record.path for record in list_adapters()]


def test_quitting_can_leave_the_run_training_for_the_next_start_to_find(qtbot, window, tiny_model_dir, tmp_path):
    train = _start_a_long_run(qtbot, window, tiny_model_dir, tmp_path)
    run_dir = train._last_run
    _answer_the_quit_question("Keep training")
    assert window.close()

    [child] = training_processes()
    try:
        again = MainWindow()
        qtbot.addWidget(again)
        again.show()
        home = again.home_page
        qtbot.waitUntil(lambda: home._recovery_checked, timeout=120_000)
        assert home.recovery_box.isVisible() and home.recovery_button.text() == "Watch"
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE  # never told to stop
    finally:
        send_command(run_dir, "stop", save=False)
        child.wait(120)
        # The first window's runner, left following the run at quit, ends when it reads the run's end.
        qtbot.waitUntil(lambda: not workers.live_runners(), timeout=30_000)
    assert not list_adapters()


def test_opening_the_window_does_not_import_torch():
    code = (
        "import sys, studio.app, studio.main_window\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_data_pages_choices_are_what_the_train_page_trains_on(qtbot, window, tiny_model_dir):
    from engine.run.events import EvalMetrics

    csv = ROOT / "tests" / "data" / "formats" / "qa.csv"
    window.show_page("Data")
    with qtbot.waitSignal(window.data_page.inspectionFinished, timeout=60_000):
        window.data_page.picker.set_path(str(csv))
    window.data_page.val_spin.setValue(25)
    window.data_page.train_on_combo.setCurrentIndex(window.data_page.train_on_combo.findData("all"))

    window.show_page("Train")
    train = window.train_page
    assert train.dataset_picker.current_path() == str(csv)
    assert "25% held out" in train.data_settings_label.text()
    assert "every token" in train.data_settings_label.text()
    train.model_picker.set_ref(str(tiny_model_dir))
    train.form.steps_spin.setValue(2)
    train.form.batch_spin.setValue(2)
    train.form.max_length_spin.setValue(64)
    config = train.build_config()
    assert (config.dataset, config.val_fraction, config.train_on) == (str(csv), 0.25, "all")

    evals = []
    with qtbot.waitSignal(train.runFinished, timeout=120_000) as finished:
        # The run starts once it has been checked against this machine, in the background.
        with qtbot.waitSignal(train.runStateChanged, timeout=120_000, check_params_cb=lambda state: state == "running"):
            train.start_run()
        train._runner.events.connect(lambda batch: evals.extend(e for e in batch if isinstance(e, EvalMetrics)))
    assert finished.args[0].status == "completed", finished.args[0].error
    assert evals  # the held-out rows were evaluated


def test_max_length_is_one_setting_of_both_pages_and_the_data_page_counts_what_the_run_makes_of_the_rows(
        qtbot, window, tiny_model_dir, tmp_path):
    from engine.data.dataset import DataOptions, open_dataset
    from engine.data.write import write_examples
    from engine.models.tokenizer import load_tokenizer

    rows = [{"question": "Name a colour.", "answer": "Blue."},
            {"question": "Say nothing.", "answer": "  "},  # a bad row: an empty answer
            {"question": "Where is Paris?", "answer": "In France. " * 40},  # cut by max length
            {"question": "Why? " * 80, "answer": "Because."}]  # its prompt alone fills max length
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    train, data = window.train_page, window.data_page
    train.form.apply_preset("quick")
    window.show_page("Data")
    assert data.max_length_spin.value() == 256  # the Train page's preset, not a max length of the Data page's own
    with qtbot.waitSignal(data.inspectionFinished, timeout=60_000):
        data.picker.set_path(str(path))
    with qtbot.waitSignal(data.inspectionFinished, timeout=60_000):
        data.model_picker.set_ref(str(tiny_model_dir))
        data.tokens_check.setChecked(True)
    short = int(data.dataset.token_lengths[0])  # the first row fits; the long answer and the long prompt do not
    data.max_length_spin.setValue(short)

    window.show_page("Train")
    assert train.form.max_length_spin.value() == short and train.form.preset_combo.currentText() == "Custom"
    assert f"Max length changed on the Data page: now {short}" in train.data_change_label.text()
    train.model_picker.set_ref(str(tiny_model_dir))
    config = train.build_config()
    # What the run's tokenising pass makes of the rows with the Train page's settings.
    source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))
    counts = write_examples(source, load_tokenizer(tiny_model_dir), config.max_length, tmp_path / "examples.arrow",
                            train_on=config.train_on).row_counts(config.val_fraction)
    assert (counts.bad, counts.nothing_to_learn, counts.cut, counts.examples) == (1, 1, 1, 2)
    assert data.truncated_value.text().startswith(f"{counts.cut} row (50.0%) would be truncated")
    assert (data.usable_value.text(), data.counts_label.text()) == (str(counts.examples), counts.sentence())

    train.form.max_length_spin.setValue(short + 100)
    window.show_page("Data")
    assert data.max_length_spin.value() == short + 100
    assert data.counts_label.text() == data.dataset.row_counts(short + 100).sentence()
    # The Train page's value moving while the Data page is shown (a fit to the device ending)
    # is not undone by the Data page's copy when the user comes back.
    train.form.max_length_spin.setValue(short + 200)
    window.show_page("Train")
    assert train.form.max_length_spin.value() == short + 200


def test_a_dataset_picked_on_the_train_page_is_kept_when_the_data_page_was_not_used(qtbot, window, tmp_path):
    dataset = write_messages_dataset(tmp_path / "mine.jsonl")
    window.show_page("Train")
    window.train_page.dataset_picker.set_path(str(dataset))
    window.show_page("Home")
    window.show_page("Train")
    assert window.train_page.dataset_picker.current_path() == str(dataset)


def test_the_train_pages_objective_follows_the_layout_the_data_page_reads_but_never_a_running_run(
        qtbot, window, tiny_model_dir, tmp_path):
    from helpers import write_pairs

    train, data = window.train_page, window.data_page
    chat, pairs = write_messages_dataset(tmp_path / "chat.jsonl"), write_pairs(tmp_path / "pairs.jsonl")

    def objective() -> str:
        return train.form.objective_combo.currentData()

    # An SFT run going on the chat file while the Data page opens a preference file.
    train.model_picker.set_ref(str(tiny_model_dir))
    train.dataset_picker.set_path(str(chat))
    train.form.steps_spin.setValue(5000)
    with qtbot.waitSignal(train.runStateChanged, timeout=120_000, check_params_cb=lambda state: state == "running"):
        train.start_run()
    with qtbot.waitSignal(data.inspectionFinished, timeout=60_000):
        window.show_page("Data")  # it opens on the Train page's file: chat, read as messages
    with qtbot.waitSignal(data.inspectionFinished, timeout=60_000):
        data.picker.set_path(str(pairs))
    window.show_page("Train")
    assert (objective(), train.dataset_picker.current_path()) == ("sft", str(chat))  # the run's, untouched
    assert "the next run uses this one" in train.data_change_label.text()

    # Once it ends, the next run's dataset is the pairs, and its objective DPO, saying so.
    with qtbot.waitSignal(train.runFinished, timeout=120_000):
        train.stop_button.click()
    assert (objective(), train.dataset_picker.current_path()) == ("dpo", str(pairs))
    note = train.data_change_label.text()
    assert "Dataset changed on the Data page: now pairs.jsonl" in note
    assert "pairs.jsonl reads as Pairs (prompt / chosen / rejected) on the Data page, so the objective is now DPO; " \
           "it was supervised (SFT)." in note

    # The Train page's own picker on a file the Data page read with one answer a prompt: back to SFT.
    train.dataset_picker.set_path(str(chat))
    assert objective() == "sft"
    assert train.data_change_label.text().startswith("chat.jsonl reads as ")
    assert train.data_change_label.text().endswith("so the objective is now supervised (SFT); it was DPO.")
    # A file the Data page has not read keeps the objective until the Data page detects its layout.
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps({"prompt": "Hi?", "completion": answer, "label": good}) + "\n"
                                for answer, good in (("Ahoy!", True), ("Hello.", False))))
    train.dataset_picker.set_path(str(labelled))
    assert objective() == "sft"
    with qtbot.waitSignal(data.inspectionFinished, timeout=60_000):
        window.show_page("Data")
    assert objective() == "kto" and "the objective is now KTO; it was supervised (SFT)." in train.data_change_label.text()
