"""The runs history on the Home page: real run folders, the real engine, the real widgets."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from heartbeat import Heartbeat
from pixels import pixels_of
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QApplication, QMessageBox
from run_folders import T0, completed_run, started, step, training_process, write_run

from engine.run.events import RunFinished
from engine.paths import runs_dir
from studio import theme
from studio.pages.home import RUN_COLUMNS, HomePage
from studio.widgets.train_settings import TIPS

TIMEOUT_MS = 60_000


@pytest.fixture
def home(qtbot, shown) -> HomePage:
    page = shown(HomePage())
    qtbot.waitExposed(page)
    return page


def _look(qtbot, page: HomePage) -> None:
    with qtbot.waitSignal(page.runsLoaded, timeout=TIMEOUT_MS):
        page.refresh_runs()


def _column(page: HomePage, name: str) -> list[str]:
    model, column = page.runs_view.model(), RUN_COLUMNS.index(name)
    return [model.index(row, column).data() for row in range(model.rowCount())]


def _open_selected(qtbot, page: HomePage):
    """The run window of the selected runs, once it has read them."""
    viewer = page.open_selected()
    qtbot.addWidget(viewer)
    with qtbot.waitSignal(viewer.loaded, timeout=TIMEOUT_MS):
        pass
    return viewer


def _settings(table) -> dict[str, str]:
    """A run window's settings table as {name shown: value shown}."""
    return {table.item(row, 0).text(): table.item(row, 1).text() for row in range(table.rowCount())}


def _no_dialog_open() -> bool:
    return not any(isinstance(w, QMessageBox) and w.isVisible() for w in QApplication.topLevelWidgets())


def test_runs_are_listed_with_status_time_final_loss_and_a_mini_curve(qtbot, home):
    completed_run("20260101-100000-pirate-lora")
    write_run("20260102-100000-robot-lora", [
        started(T0, total=20), step(T0 + 1, 1, 2.0), step(T0 + 75, 2, 1.9),
        RunFinished(time=T0 + 80, status="failed", step=2, error="out of memory: pick smaller settings")])
    _look(qtbot, home)

    assert _column(home, "Run") == ["20260102-100000-robot-lora", "20260101-100000-pirate-lora"]
    assert _column(home, "Status") == ["failed", "completed"]
    assert _column(home, "Duration") == ["1 min 20 s", "30 s"]
    assert _column(home, "Steps") == ["2 / 20", "5 / 5"]
    assert _column(home, "Last loss") == ["1.9000", "0.5000"]
    tooltip = home.runs_view.model().index(0, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert "out of memory" in tooltip  # the tooltip says why it failed
    assert home.runs_summary.text() == "2 runs"

    # The mini curves are painted in the Loss column, in the curve colour.
    cell = home.runs_view.visualRect(home.runs_view.model().index(1, RUN_COLUMNS.index("Loss")))
    image = home.runs_view.viewport().grab(cell).toImage()
    assert pixels_of(image, QColor(theme.colours().curves[0])) > 20


@pytest.mark.alone
def test_two_hundred_runs_are_read_without_stalling_the_window(qtbot, home):
    for number in range(200):
        completed_run(f"20260101-{number:06d}-run", steps=40)
    with Heartbeat() as heartbeat:
        _look(qtbot, home)
    assert home.runs_view.model().rowCount() == 200
    assert heartbeat.worst_ms() < 50, f"the window stalled {heartbeat.worst_ms():.0f} ms"
    # No run changed: a second look answers at once, reading nothing.
    answered: list[bool] = []
    home.runsLoaded.connect(lambda: answered.append(True))
    home.refresh_runs()
    assert answered and home.runs_view.model().rowCount() == 200


def test_a_run_deleted_behind_the_studios_back_drops_out_quietly(qtbot, home):
    kept = completed_run("20260101-100000-kept")
    gone = completed_run("20260102-100000-gone")
    _look(qtbot, home)
    home.select_runs([str(gone)])
    shutil.rmtree(gone)
    with qtbot.waitSignal(home.runsLoaded, timeout=TIMEOUT_MS):
        viewer = home.open_selected()  # the row is still there: opening it finds the folder gone
        qtbot.addWidget(viewer)
    assert "folder is gone" in viewer.status_label.text()
    assert _column(home, "Run") == [kept.name]
    assert _no_dialog_open()


def test_opening_a_run_shows_its_curves_and_config(qtbot, home):
    folder = completed_run("20260101-100000-pirate-lora", config={
        "model": "tiny", "dataset": "/d/pirate.jsonl", "rank": 8, "lr": 0.001, "max_length": 256, "grad_accum": 2,
        "use_rslora": True, "name": None, "val_fraction": 0.1})
    _look(qtbot, home)
    opened: list[list[str]] = []
    home.runsOpened.connect(opened.append)
    home.runs_view.selectRow(0)
    assert home.open_button.isEnabled() and not home.compare_button.isEnabled()
    with qtbot.waitSignal(home.runsOpened):
        viewer = _open_selected(qtbot, home)
    assert opened == [[str(folder)]]
    assert viewer.loss_plot.point_count("train loss") == 5
    assert viewer.loss_plot.point_count("eval loss") == 1
    assert viewer.lr_plot.point_count() == 5
    # The settings by the Train page form's names, with its tips; values in words, no raw keys.
    settings = _settings(viewer.settings_table)
    assert settings["LoRA rank"] == "8" and settings["Learning rate"] == "0.001"
    assert settings["Max length"] == "256" and settings["Accumulation"] == "2" and settings["Scaling"] == "yes"
    assert settings["Adapter name"] == "none" and settings["Dataset"] == "/d/pirate.jsonl"
    assert settings["Val fraction"] == "0.1"  # a setting the form lacks: in plain words
    assert not any(re.search(r"[a-z]_[a-z]", name) for name in settings), settings
    rank_row = list(settings).index("LoRA rank")
    assert viewer.settings_table.item(rank_row, 0).toolTip() == TIPS["rank"]
    assert "completed · step 5 / 5 · 30 s · final loss 0.5000" in viewer.status_label.text()


def test_a_running_run_shows_its_latest_loss_and_not_a_final_one(qtbot, home):
    folder = write_run("20260103-100000-live-lora", [started(T0, total=10), step(T0 + 1, 1, 2.0),
                                                      step(T0 + 2, 2, 1.8)])
    with training_process(folder):
        _look(qtbot, home)
        assert _column(home, "Status") == ["running"]
        assert _column(home, "Last loss") == ["1.8000 (now)"]
        home.runs_view.selectRow(0)
        viewer = _open_selected(qtbot, home)
    assert "running · step 2 / 10" in viewer.status_label.text()
    assert "latest loss 1.8000" in viewer.status_label.text() and "final" not in viewer.status_label.text()


def test_the_devices_use_and_free_memory_are_read_again_while_a_run_trains(qtbot, home, monkeypatch):
    from studio.pages import home as home_module

    monkeypatch.setattr(home_module, "HARDWARE_POLL_MS", 100)
    with qtbot.waitSignal(home.hardwareLoaded, timeout=TIMEOUT_MS):
        home.detect_hardware()
    assert re.search(r"measured at \d\d:\d\d:\d\d", home.hardware_status.text()), home.hardware_status.text()
    with pytest.raises(qtbot.TimeoutError):  # no run trains: read once, on request
        with qtbot.waitSignal(home.hardwareLoaded, timeout=300):
            pass
    folder = write_run("20260103-100000-live-lora", [started(T0, total=10), step(T0 + 1, 1, 2.0)])
    with training_process(folder):
        _look(qtbot, home)
        for _reading in range(2):  # read again and again, without a click, while it trains
            with qtbot.waitSignal(home.hardwareLoaded, timeout=TIMEOUT_MS):
                pass
        assert home.detect_button.isEnabled()  # quietly: the page never said "Looking for devices…"
        assert "measured at" in home.hardware_status.text()
        home.hide()
        with pytest.raises(qtbot.TimeoutError):  # nor while the page is not shown
            with qtbot.waitSignal(home.hardwareLoaded, timeout=300):
                pass


def test_selected_runs_are_compared_on_one_plot_with_the_settings_that_differ(qtbot, home):
    base = {"model": "tiny", "dataset": "/d/pirate.jsonl", "rank": 8}
    completed_run("20260101-100000-r8", steps=5, config=base)
    completed_run("20260102-100000-r16", steps=7, config={**base, "rank": 16, "grad_accum": 4})
    _look(qtbot, home)
    home.select_runs([str(runs_dir() / "20260101-100000-r8"), str(runs_dir() / "20260102-100000-r16")])
    assert home.compare_button.isEnabled() and not home.open_button.isEnabled()
    viewer = _open_selected(qtbot, home)
    assert viewer.loss_plot.point_count("20260101-100000-r8") == 5
    assert viewer.loss_plot.point_count("20260102-100000-r16") == 7
    table = viewer.settings_table
    assert table.rowCount() == 2  # only the rank and the accumulation differ, named as the Train page names them
    assert [table.item(0, column).text() for column in range(3)] == ["LoRA rank", "16", "8"]
    assert [table.item(1, column).text() for column in range(3)] == ["Accumulation", "4", "–"]


def test_runs_sort_by_final_loss_as_numbers(qtbot, home):
    for name, steps in (("20260101-100000-a", 2), ("20260102-100000-b", 5), ("20260103-100000-c", 3)):
        completed_run(name, steps=steps)  # final loss 3 - 0.5 * steps: 2.0, 0.5, 1.5
    _look(qtbot, home)
    home.runs_view.sortByColumn(RUN_COLUMNS.index("Last loss"), Qt.SortOrder.AscendingOrder)
    assert _column(home, "Last loss") == ["0.5000", "1.5000", "2.0000"]


def test_a_run_whose_events_were_edited_opens_with_the_good_events_only(qtbot, home):
    folder = write_run("20260101-100000-edited", [started(T0, total=5), step(T0 + 1, 1, 2.0), step(T0 + 2, 2, 1.5)])
    bad = {**step(T0 + 3, 3, 1.0).to_dict()}
    with open(folder / "events.jsonl", "a", encoding="utf-8") as events:
        for loss in ('"low"', "null", "NaN", "[1.0]"):
            events.write(json.dumps({**bad, "loss": 0}).replace('"loss": 0', f'"loss": {loss}') + "\n")
        events.write('{"event": "Explode"}\n[1, 2]\n')
    _look(qtbot, home)
    assert _column(home, "Last loss") == ["1.5000"]
    home.runs_view.selectRow(0)
    viewer = _open_selected(qtbot, home)
    assert viewer.loss_plot.point_count("train loss") == 2
    assert "step 2 / 5" in viewer.status_label.text()
    assert _no_dialog_open()
