"""The window fits the screen, and every page fits the window: at the smallest size allowed
(1024x680) and at a common laptop's (1280x720), no control is cut off or pushed out of sight."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, QRect
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QAbstractSpinBox,
    QComboBox,
    QGraphicsView,
    QGraphicsWidget,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QStyle,
    QStyleOptionComboBox,
    QTabBar,
    QWidget,
)

from engine.run.events import RunStarted, StepMetrics
from studio import workers
from studio.main_window import PAGES, MainWindow
from studio.settings import app_settings
from studio.widgets.pickers import ElidingComboBox
from studio.window_state import FRAME_ALLOWANCE, fit_to_screen, to_text

SIZES = [(1024, 680), (1280, 720)]
# What a user reads or clicks. A scroll area (tables, text views, plots) counts as one: what is
# inside it is meant to scroll; so does a combo or spin box with the line edit inside it.
CONTROLS = (QLabel, QAbstractButton, QComboBox, QLineEdit, QAbstractSpinBox, QProgressBar, QTabBar,
            QAbstractScrollArea)


def _name(widget: QWidget) -> str:
    text = widget.text() if hasattr(widget, "text") and callable(widget.text) else ""
    title = widget.getPlotItem().titleLabel.text if hasattr(widget, "getPlotItem") else ""  # a plot
    label = text or title or widget.accessibleName() or widget.objectName()
    return f"{type(widget).__name__} {label[:50]!r}"


def _part_of_another_control(widget: QWidget, top: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None and parent is not top:
        if isinstance(parent, CONTROLS):
            return True
        parent = parent.parentWidget()
    return False


def _cuts_what_it_shows(widget: QWidget) -> bool:
    """Whether a label's or button's text is wider (or, wrapped, taller) than the widget shows, or a
    plot's axes and title are laid out wider than the plot."""
    if isinstance(widget, QLabel) and widget.wordWrap():
        return widget.heightForWidth(widget.width()) > widget.height()
    if isinstance(widget, QLabel):
        hint = widget.minimumSizeHint()  # a label that does not wrap: its whole text
        return hint.width() > widget.width() or hint.height() > widget.height()
    if isinstance(widget, QProgressBar) and widget.isTextVisible():
        return widget.fontMetrics().horizontalAdvance(widget.text()) > widget.contentsRect().width() - 8
    if isinstance(widget, QAbstractButton):
        return widget.sizeHint().width() > widget.width()
    if isinstance(widget, ElidingComboBox):
        return False  # shortens a long name in the middle on purpose, and its tooltip gives it whole
    if isinstance(widget, QComboBox) and not widget.isEditable():
        return widget.fontMetrics().horizontalAdvance(widget.currentText()) > _combo_field_width(widget)
    if isinstance(widget, QGraphicsView) and widget.scene() is not None:  # a plot
        room = widget.viewport().width()
        return any(item.size().width() > room + 0.5 for item in widget.scene().items()
                   if isinstance(item, QGraphicsWidget) and item.parentItem() is None)
    return False


def _combo_field_width(combo: QComboBox) -> int:
    """The room a closed combo box has for its current text."""
    option = QStyleOptionComboBox()
    combo.initStyleOption(option)
    field = combo.style().subControlRect(QStyle.ComplexControl.CC_ComboBox, option,
                                         QStyle.SubControl.SC_ComboBoxEditField, combo)
    return field.width() - 2  # the style draws the label 1 px in from either side


def clipped(area: QWidget, within: QWidget) -> list[str]:
    """Every control shown in ``area`` that lies outside ``within`` (a part of the window), is partly
    covered or cut by its parents, or cannot show all of its text."""
    bounds = within.rect()
    found = []
    for widget in area.findChildren(QWidget):
        if not widget.isVisible() or not isinstance(widget, CONTROLS) or _part_of_another_control(widget, area):
            continue
        where = QRect(widget.mapTo(within, QPoint(0, 0)), widget.size())
        if not bounds.contains(where):
            found.append(f"{_name(widget)} at {where.getRect()} is outside {bounds.getRect()}")
        elif not widget.visibleRegion().contains(widget.rect()) and not widget.visibleRegion().isEmpty():
            found.append(f"{_name(widget)} at {where.getRect()} is partly hidden")
        elif _cuts_what_it_shows(widget):
            found.append(f"{_name(widget)} ({widget.width()}x{widget.height()}) cuts what it shows")
    return found


def window_problems(window: MainWindow) -> list[str]:
    """What is cut off on the page shown, and on the status bar."""
    problems = [f"the page needs {window.stack.currentWidget().minimumSizeHint().toTuple()}, has "
                f"{window.stack.size().toTuple()}"] if not _fits(window) else []
    problems += clipped(window.centralWidget(), window.centralWidget())
    problems += clipped(window.statusBar(), window)
    return problems


def _fits(window: MainWindow) -> bool:
    need, have = window.stack.currentWidget().minimumSizeHint(), window.stack.size()
    return need.width() <= have.width() and need.height() <= have.height()


@pytest.fixture
def window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    # Home reads the runs and looks for devices once the window is painted: the texts it shows then.
    with qtbot.waitSignals([window.firstShown, window.home_page.hardwareLoaded, window.home_page.runsLoaded],
                           timeout=60_000):
        window.show()
    return window


def _problems_at_both_sizes(qtbot, window: MainWindow, title: str) -> list[str]:
    problems = []
    for width, height in SIZES:
        window.resize(width, height)
        window.show_page(title)
        # The pages' first reads (the devices, the runs, the pirate sample) fill in their texts.
        qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=60_000)
        qtbot.wait(20)  # the layouts' answer to the texts just set
        problems += [f"{title} at {width}x{height}: {problem}" for problem in window_problems(window)]
    return problems


def _a_run_on_the_cpu(monitor) -> None:
    """What the Train page's monitor shows of a run on the CPU a few steps in (the longest titles)."""
    monitor.show_started(RunStarted(run_dir="runs/pirate", model="starter", method="lora", device="cpu",
                                    total_steps=60, trainable_params=4_884_480, total_params=139_399_488,
                                    train_examples=297, predicted_peak_bytes=2_400_000_000))
    for step in range(1, 13):
        monitor.show_step(StepMetrics(step=step, total_steps=60, epoch=step / 75, loss=3.4 - step / 10,
                                      learning_rate=0.001, memory_allocated=2_222_153_728 + step * 1_000_000,
                                      memory_reserved=2_222_153_728 + step * 1_000_000, elapsed_s=6.0 * step))
    monitor.loss_plot.redraw()
    monitor.memory_plot.redraw()


def test_every_page_fits_the_smallest_window_and_a_laptops(qtbot, window):
    problems = []
    for spec in PAGES:
        problems += _problems_at_both_sizes(qtbot, window, spec.title)
    _a_run_on_the_cpu(window.train_page.monitor)
    problems += _problems_at_both_sizes(qtbot, window, "Train")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("remembered, expected", [
    (QRect(100, 50, 1280, 800), QRect(100, 50, 1280, 800)),  # it fits: left where it was
    (QRect(0, 0, 1280, 800), QRect(4, 32, 1280, 800)),  # the title bar back on the screen
    (QRect(1200, 700, 1280, 800), QRect(636, 276, 1280, 800)),  # hanging off the right and the bottom
    (QRect(2500, 300, 1400, 900), QRect(516, 176, 1400, 900)),  # on a second screen, now disconnected
    (QRect(-300, 40, 2560, 1400), QRect(4, 32, 1912, 1044)),  # from a bigger screen
])
def test_a_window_geometry_is_kept_whole_on_the_screen(remembered, expected):
    available = QRect(0, 0, 1920, 1080)
    fitted = fit_to_screen(remembered, available)
    assert fitted == expected
    assert available.contains(fitted.marginsAdded(FRAME_ALLOWANCE))


def test_the_window_opens_within_a_laptop_screen(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.fit_into(QRect(0, 0, 1280, 800))  # the default size, 1280x800, would leave no room for the frame
    assert window.size().toTuple() == (1272, 764)  # room for a title bar above and borders around
    assert window.minimumSize().toTuple() == (1024, 680)


def test_a_screen_smaller_than_the_minimum_lowers_it(qtbot):
    window = MainWindow()
    qtbot.addWidget(window)
    window.fit_into(QRect(0, 0, 1024, 600))
    assert window.minimumSize().toTuple() == (1016, 564)
    assert window.size().toTuple() == (1016, 564)


def test_a_remembered_place_off_the_screen_comes_back_on_it(qtbot):
    elsewhere = QMainWindow()
    elsewhere.setGeometry(2400, 1300, 1300, 820)  # on a second screen, right of and below this one
    app_settings().set("window.geometry", to_text(elsewhere.saveGeometry()))
    window = MainWindow()
    qtbot.addWidget(window)
    available = window.screen().availableGeometry()
    assert available.contains(window.geometry().marginsAdded(FRAME_ALLOWANCE))
    assert window.size().toTuple() == (1300, 820)
