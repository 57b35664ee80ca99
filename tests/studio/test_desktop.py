"""The main window as a desktop application: it remembers, explains itself, tells when a run
ends in the background, follows the system's light or dark scheme, and keeps a log."""

from __future__ import annotations

import json
import logging
import sys
import threading
import warnings
from pathlib import Path

import pytest
from helpers import write_messages_dataset
from pixels import pixels_of
from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from engine.run.events import RunFinished
from engine.paths import studio_home
from studio import theme, workers
from studio.app import error_hook
from studio.logs import start_logging, stop_logging
from studio.main_window import MainWindow
from studio.settings import Settings
from studio.widgets.first_run_guide import DISMISSED_KEY, STEPS
from studio.widgets.log_viewer import LogViewer

TIMEOUT_MS = 120_000


def _open_window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    with qtbot.waitSignal(window.home_page.hardwareLoaded, timeout=TIMEOUT_MS):
        qtbot.waitExposed(window)
    return window


@pytest.fixture
def window(qtbot) -> MainWindow:
    return _open_window(qtbot)


def _settle(qtbot) -> None:
    """Wait for the background work the pages started (dataset reads, run reads)."""
    qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=TIMEOUT_MS)


def _message_boxes() -> list[QMessageBox]:
    return [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]


# --- remembering ------------------------------------------------------------------------------

def test_the_window_comes_back_as_it_was_left(qtbot, tiny_model_dir, tmp_path):
    window = _open_window(qtbot)
    window.resize(1024, 700)  # the offscreen screen is 1024 pixels wide
    splitter = window.home_page.splitter
    handle = splitter.handle(1)
    start = handle.rect().center()
    before = splitter.sizes()
    qtbot.mousePress(handle, Qt.MouseButton.LeftButton, pos=start)
    qtbot.mouseMove(handle, start + QPoint(0, 120))
    qtbot.mouseRelease(handle, Qt.MouseButton.LeftButton, pos=start + QPoint(0, 120))
    dragged = splitter.sizes()
    assert dragged != before
    window.home_page.runs_view.horizontalHeader().resizeSection(0, 333)
    dataset = write_messages_dataset(tmp_path / "mine.jsonl")
    window.train_page.model_picker.set_ref(str(tiny_model_dir))
    window.train_page.dataset_picker.set_path(str(dataset))
    window.close()

    again = _open_window(qtbot)
    assert again.size() == QSize(1024, 700)
    assert again.home_page.splitter.sizes() == dragged
    assert again.home_page.runs_view.horizontalHeader().sectionSize(0) == 333
    assert again.train_page.model_picker.current_ref() == str(tiny_model_dir)
    assert again.train_page.dataset_picker.current_path() == str(dataset)
    saved = json.loads((studio_home() / "settings.json").read_text())
    assert saved["last.dataset"] == str(dataset)


def test_a_choice_that_is_gone_is_not_brought_back(qtbot, tmp_path):
    window = _open_window(qtbot)
    window.settings.set("last.dataset", str(tmp_path / "deleted.jsonl"))
    window.settings.set("last.model", str(tmp_path / "deleted-model"))
    default_dataset = window.train_page.dataset_picker.current_path()
    window.close()
    again = _open_window(qtbot)
    assert again.train_page.dataset_picker.current_path() == default_dataset
    assert "deleted-model" not in again.train_page.model_picker.current_ref()


def test_a_corrupt_settings_file_is_kept_and_the_status_bar_says_so(qtbot):
    (studio_home() / "settings.json").write_text('{"window.geometry": ', encoding="utf-8")
    window = _open_window(qtbot)
    message = window.statusBar().currentMessage()
    assert "settings.json could not be read" in message and "using the default settings" in message
    (kept,) = studio_home().glob("settings.json.corrupt-*")
    assert kept.read_text() == '{"window.geometry": '
    assert kept.name in message


def test_recent_runs_are_offered_in_the_file_menu(qtbot, window):
    from run_folders import completed_run

    run = completed_run("20260101-100000-pirate-lora")
    with qtbot.waitSignal(window.home_page.runsLoaded, timeout=TIMEOUT_MS):
        window.home_page.refresh_runs()
    viewer = window.home_page.open_runs([str(run)])
    qtbot.addWidget(viewer)
    window.recent_menu.aboutToShow.emit()
    assert [action.text() for action in window.recent_menu.actions()] == [run.name]
    with qtbot.waitSignal(window.home_page.runsOpened) as opened:
        window.recent_menu.actions()[0].trigger()
    assert opened.args[0] == [str(run)]
    _settle(qtbot)


# --- one dataset across Data and Train --------------------------------------------------------

def test_a_dataset_opened_on_the_data_page_during_a_run_waits_for_the_next_run(qtbot, window, tiny_model_dir,
                                                                                tmp_path):
    train = window.train_page
    running = write_messages_dataset(tmp_path / "pirate.jsonl", rows=8)
    other = write_messages_dataset(tmp_path / "other.jsonl", rows=8)
    train.model_picker.set_ref(str(tiny_model_dir))
    train.dataset_picker.set_path(str(running))
    train.form.steps_spin.setValue(5000)
    train.form.max_length_spin.setValue(64)
    window.show_page("Train")
    with qtbot.waitSignal(train.runStateChanged, timeout=TIMEOUT_MS, check_params_cb=lambda state: state == "running"):
        train.start_run()

    window.show_page("Data")
    window.data_page.picker.set_path(str(other))
    window.show_page("Train")
    shown, notice = Path(train.dataset_picker.current_path()), train.data_change_label.text()
    with qtbot.waitSignal(train.runFinished, timeout=TIMEOUT_MS):
        train.stop_run()
    assert shown == running  # what the page shows during a run is what it runs
    assert "other.jsonl" in notice and "next run" in notice
    assert Path(json.loads((train._last_run / "config.json").read_text())["dataset"]) == running
    assert Path(train.dataset_picker.current_path()) == other
    assert train.data_change_label.text() == "Dataset changed on the Data page: now other.jsonl (was pirate.jsonl)."

    train.form.steps_spin.setValue(1)
    with qtbot.waitSignal(train.runFinished, timeout=TIMEOUT_MS) as finished:
        train.start_run()
        assert not train.data_change_label.isVisible()
    assert finished.args[0].status == "completed", finished.args[0].error
    assert Path(json.loads((train._last_run / "config.json").read_text())["dataset"]) == other


# --- the first-run guide ----------------------------------------------------------------------

def test_the_first_run_guide_walks_through_the_demo_and_can_be_dismissed_for_good(qtbot, window):
    guide = window.show_guide()
    qtbot.addWidget(guide)
    visited = []
    for _step in STEPS:
        visited.append(window.current_title())
        guide.next_button.click()
    assert visited == ["Home", "Models", "Data", "Train", "Chat", "Evaluate"]
    assert not guide.isVisible()  # Finish closes it

    window.show_guide()
    assert guide.isVisible() and guide.step == len(STEPS) - 1
    guide.dismiss_check.setChecked(True)
    window.settings.flush()
    assert Settings.load().get(DISMISSED_KEY) is True
    _settle(qtbot)


# What each step's text tells the user to use, on the page the step opens.
GUIDE_CONTROLS = {
    "Home": ("devices_table",),
    "Models": ("starter_button", "add_folder_button", "add_gguf_button"),
    "Data": ("picker", "table", "conversation_view"),
    "Train": ("start_button", "loss_plot", "model_picker", "dataset_picker"),
    "Chat": ("load_button", "adapter_picker", "message_box", "transcript"),
    "Evaluate": ("candidates_list", "run_button", "scoreboard"),
}


def _on_screen(widget: QWidget) -> QRect:
    return QRect(widget.mapToGlobal(QPoint(0, 0)), widget.size())


@pytest.mark.parametrize("size", [(1024, 680), (1280, 800)])
def test_the_first_run_guide_covers_none_of_the_controls_it_names(qtbot, window, size):
    window.resize(*size)
    guide = window.show_guide()
    qtbot.addWidget(guide)
    for step, page_title in enumerate(GUIDE_CONTROLS):
        guide.show_step(step)
        qtbot.wait(20)  # the page is laid out, the guide finds its place
        page = window.page(page_title)
        panel = _on_screen(guide)
        assert guide.isVisible() and QRect(window.mapToGlobal(QPoint(0, 0)), window.size()).contains(panel)
        for name in GUIDE_CONTROLS[page_title]:
            control = getattr(page, name)
            assert control.isVisible(), (page_title, name)
            assert not panel.intersects(_on_screen(control)), (size, page_title, name)
        framed = _on_screen(getattr(page, GUIDE_CONTROLS[page_title][0]))
        assert guide.control_frame.isVisible() and _on_screen(guide.control_frame).contains(framed)
    guide.close_button.click()
    assert not guide.isVisible() and not guide.control_frame.isVisible()
    _settle(qtbot)


# --- keyboard -----------------------------------------------------------------------------------

def test_ctrl_return_starts_a_run_on_the_train_page_only(qtbot, window, tmp_path):
    train = window.train_page
    train.dataset_picker.set_path(str(tmp_path / "missing.jsonl"))
    window.activateWindow()
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert train.error_label.isHidden()  # on Home it does nothing
    window.show_page("Train")
    qtbot.keyClick(window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert train.error_label.text().startswith("Cannot start: Dataset file not found")


def test_ctrl_period_stops_a_run_and_its_end_is_announced_while_the_window_is_away(
        qtbot, window, tiny_model_dir, tmp_path, monkeypatch):
    alerts: list[QWidget] = []
    monkeypatch.setattr(QApplication, "alert", staticmethod(lambda widget, duration=0: alerts.append(widget)))
    train = window.train_page
    train.model_picker.set_ref(str(tiny_model_dir))
    train.dataset_picker.set_path(str(write_messages_dataset(tmp_path / "chat.jsonl", rows=8)))
    train.form.steps_spin.setValue(5000)
    train.form.max_length_spin.setValue(64)
    with qtbot.waitSignal(train.runStateChanged, timeout=TIMEOUT_MS, check_params_cb=lambda state: state == "running"):
        train.start_run()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    assert train.stop_button.text() == "Stopping…"

    elsewhere = QWidget()
    qtbot.addWidget(elsewhere)
    elsewhere.show()
    elsewhere.activateWindow()
    qtbot.waitUntil(lambda: not window.isActiveWindow())
    with qtbot.waitSignal(train.runFinished, timeout=TIMEOUT_MS) as finished:
        pass
    assert finished.args[0].status == "stopped"
    assert alerts == [window]
    _settle(qtbot)  # Home reads the run that just ended


def test_a_failed_run_is_explained_with_a_cause_a_fix_and_the_details(qtbot, window, monkeypatch):
    alerts: list[QWidget] = []
    monkeypatch.setattr(QApplication, "alert", staticmethod(lambda widget, duration=0: alerts.append(widget)))
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    error = "out of memory: close other programs or pick smaller settings\nTraceback (most recent call last): ..."
    window.train_page.runFinished.emit(RunFinished(status="failed", step=3, error=error))
    (box,) = _message_boxes()
    assert box.text() == "Training failed: out of memory: close other programs or pick smaller settings"
    assert "batch size" in box.informativeText()
    assert "Traceback" in box.detailedText()
    assert alerts == []  # the user is looking at the window: no need to call them back
    box.close()


def test_a_bug_is_shown_once_in_the_error_dialog_and_logged(qtbot, window):
    start_logging()
    try:
        hook = error_hook(window)
        for _ in range(3):  # a bug that repeats while its dialog is open
            try:
                raise ValueError("a bug")
            except ValueError:
                hook(*sys.exc_info())
        (box,) = _message_boxes()
        assert box.text() == "Something went wrong: ValueError: a bug"
        assert "Traceback" in box.detailedText() and "Help ▸ Logs" in box.informativeText()
        box.close()
        assert (studio_home() / "logs" / "studio.log").read_text().count("ValueError: a bug") >= 3
    finally:
        stop_logging()


# --- help ---------------------------------------------------------------------------------------

def test_about_shows_the_versions_and_the_hardware_found(qtbot, window):
    from engine.hardware import versions
    from engine.version import studio_version

    about = window.show_about()
    qtbot.waitUntil(lambda: "Looking for devices" not in about.text(), timeout=TIMEOUT_MS)
    text = about.text()
    assert text.startswith(f"LoRA Studio {studio_version()}\n")  # what `lora-studio --version` prints
    assert f"torch {versions()['torch']}" in text and f"PySide6 {versions()['PySide6']}" in text
    assert "cpu: " in text
    assert str(studio_home()) in text
    about.copy_button.click()
    assert QGuiApplication.clipboard().text() == text


def test_the_log_window_follows_the_log_and_copies_it(qtbot):
    start_logging()
    try:
        logging.getLogger("studio.test").warning("the first line")
        worker = threading.Thread(target=lambda: warnings.warn("a warning from a worker thread"))
        worker.start()
        worker.join()
        viewer = LogViewer()
        qtbot.addWidget(viewer)
        assert "the first line" in viewer.text.toPlainText()
        assert "a warning from a worker thread" in viewer.text.toPlainText()
        logging.getLogger("studio.test").error("a later line")
        qtbot.waitUntil(lambda: "a later line" in viewer.text.toPlainText(), timeout=5000)
        viewer.copy_button.click()
        assert "a later line" in QGuiApplication.clipboard().text()
    finally:
        stop_logging()


def test_the_log_window_opens_at_the_start_of_the_newest_line(qtbot, tmp_path):
    log = tmp_path / "studio.log"
    log.write_text("".join(f"line {n}\n" for n in range(300)) + "the newest line, a long one " * 20 + "\n")
    viewer = LogViewer(path=log)
    qtbot.addWidget(viewer)
    viewer.show()
    qtbot.waitExposed(viewer)
    vertical, horizontal = viewer.text.verticalScrollBar(), viewer.text.horizontalScrollBar()
    assert horizontal.maximum() > 0 and horizontal.value() == 0  # at the left, though the lines are wide
    assert vertical.maximum() > 0 and vertical.value() == vertical.maximum()  # at the bottom
    with log.open("a") as file:
        file.write("a later line " * 40 + "\n")
    viewer.follow()
    assert horizontal.value() == 0 and vertical.value() == vertical.maximum()


# --- looks --------------------------------------------------------------------------------------

def test_the_sidebar_icons_are_sharp_at_any_pixel_density_and_in_the_palettes_colours(window):
    icon = window.sidebar.item(0).icon()
    for scale in (1.0, 1.5, 2.0, 3.0):
        pixmap = icon.pixmap(QSize(22, 22), scale)
        assert pixmap.width() == round(22 * scale) and pixmap.devicePixelRatio() == scale
    palette = QGuiApplication.palette()
    for mode, role in ((icon.Mode.Normal, QPalette.ColorRole.WindowText),
                       (icon.Mode.Selected, QPalette.ColorRole.HighlightedText)):
        image = icon.pixmap(QSize(22, 22), 2.0, mode).toImage()
        assert pixels_of(image, palette.color(role), tolerance=10) > 30


def test_a_missing_icon_file_leaves_a_blank_icon_and_the_window_opens(qtbot, tmp_path, monkeypatch):
    from studio import icons

    monkeypatch.setattr(icons, "PAGE_ICONS", tmp_path / "no-icons")  # a damaged install
    icons._svg_text.cache_clear()
    try:
        window = _open_window(qtbot)
        pixmap = window.sidebar.item(0).icon().pixmap(QSize(22, 22), 2.0)
    finally:
        icons._svg_text.cache_clear()
    image = pixmap.toImage()
    assert image.width() == 44
    assert all(image.pixelColor(x, y).alpha() == 0 for x in range(44) for y in range(44))
    assert window.sidebar.count() > 0 and window.isVisible()


def test_a_dark_system_scheme_darkens_the_window_and_its_plots(qtbot, window):
    theme.follow_system(QApplication.instance())
    hints = QGuiApplication.styleHints()
    try:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Dark)
        assert QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 80
        plot = window.train_page.loss_plot
        assert plot.plot_widget.backgroundBrush().color().name() == theme.DARK.plot_background
        assert plot.plot_item.titleLabel.opts["color"] == theme.DARK.text
        window.show_page("Train")
        image = plot.grab().toImage()
        assert image.pixelColor(image.width() // 2, image.height() // 2).lightness() < 80
        # A plot built while the scheme is dark starts dark.
        assert window.data_page.histogram.plot.backgroundBrush().color().name() == theme.DARK.plot_background
    finally:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)
    assert QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() > 180
    assert window.train_page.loss_plot.plot_widget.backgroundBrush().color().name() == theme.LIGHT.plot_background


def test_each_model_gets_back_the_settings_it_was_last_given(qtbot, tiny_model_dir, tmp_path):
    import shutil

    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "other-model"))
    window = _open_window(qtbot)
    form = window.train_page.form
    picker = window.train_page.model_picker
    picker.set_ref(str(tiny_model_dir))
    form.rank_spin.setValue(8)
    form.lr_spin.setValue(5e-4)
    picker.set_ref(str(other))
    assert form.rank_spin.value() == 8  # a model never set up keeps what the form holds
    form.rank_spin.setValue(32)
    picker.set_ref(str(tiny_model_dir))
    assert form.rank_spin.value() == 8 and form.lr_spin.value() == pytest.approx(5e-4)
    picker.set_ref(str(other))
    assert form.rank_spin.value() == 32
    window.close()

    again = _open_window(qtbot)  # it reopens on the last model, with that model's settings
    assert again.train_page.model_picker.current_ref() == str(other)
    assert again.train_page.form.rank_spin.value() == 32
    again.train_page.model_picker.set_ref(str(tiny_model_dir))
    assert again.train_page.form.rank_spin.value() == 8
