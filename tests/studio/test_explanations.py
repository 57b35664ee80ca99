"""Every number a user sees says what it means: each table column and each figure of the pages'
summaries has a tooltip in words of its own, and no page shows an internal name (snake_case)."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QTextDocumentFragment
from PySide6.QtWidgets import QAbstractButton, QGroupBox, QLabel, QTableView, QTabWidget, QWidget

from studio import workers
from studio.main_window import PAGES, MainWindow

TIMEOUT_MS = 120_000
# An internal name: lower-case words joined by underscores (dataset_sha256, logits_and_loss).
RAW_KEY = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
# A path or a file name says where something is, in the user's own words: not a key.
PLACE = re.compile(r"\S*[/\\.]\S*")


def _plain(text: str) -> str:
    return QTextDocumentFragment.fromHtml(text).toPlainText() if "<" in text else text


def _shown_texts(page: QWidget) -> list[str]:
    """The labels, button texts, box titles, tab names and column headers a user sees on ``page``."""
    texts = [_plain(w.text()) for w in page.findChildren(QLabel) if w.isVisible()]
    texts += [w.text() for w in page.findChildren(QAbstractButton) if w.isVisible()]
    texts += [w.title() for w in page.findChildren(QGroupBox) if w.isVisible()]
    for tabs in page.findChildren(QTabWidget):
        texts += [tabs.tabText(index) for index in range(tabs.count()) if tabs.isVisible()]
    for view, column in _columns(page):
        texts.append(str(view.model().headerData(column, Qt.Orientation.Horizontal)))
    return texts


def _columns(page: QWidget) -> list[tuple[QTableView, int]]:
    return [(view, column) for view in page.findChildren(QTableView) if view.isVisible()
            for column in range(view.model().columnCount()) if not view.isColumnHidden(column)]


def _explains(tip: object, label: str) -> bool:
    """A tooltip that says more than the label it belongs to."""
    tip = _plain(str(tip or "")).strip()
    return len(tip) > len(label) + 15 and not tip.lower().startswith(label.strip(": ").lower() + ".")


@pytest.fixture
def window(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.resize(1024, 680)
    window.show()
    with qtbot.waitSignal(window.home_page.hardwareLoaded, timeout=TIMEOUT_MS):
        qtbot.waitExposed(window)
    return window


def test_every_page_explains_its_columns_and_figures_and_shows_no_internal_names(qtbot, window):
    for spec in PAGES:
        window.show_page(spec.title)
        qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=TIMEOUT_MS)  # the Data page reads its file
        page = window.page(spec.title)
        for text in _shown_texts(page):
            assert not RAW_KEY.findall(PLACE.sub("", text)), (spec.title, text)
        for view, column in _columns(page):
            header = str(view.model().headerData(column, Qt.Orientation.Horizontal))
            tip = view.model().headerData(column, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
            assert _explains(tip, header), (spec.title, header, tip)

    data = window.data_page
    assert data.table.rowCount() > 0
    assert data.table.horizontalHeaderItem(0).text() == "Line in file"  # the sample is JSON lines
    figures = [data.rows_value, data.usable_value, data.problems_value, data.duplicates_value,
               data.split_value, data.truncated_value]
    for value in figures:
        assert _explains(value.toolTip(), value.text()), value.text()
    train = window.train_page
    for widget, name in ((train.progress_bar, "Progress"), (train.loss_plot, "Loss"), (train.memory_plot, "Memory")):
        assert _explains(widget.toolTip(), name), name
    form = window.chat_page.settings.findChildren(QLabel)
    for name in ("Temperature", "Top-p", "Top-k", "Repetition penalty", "Max new tokens", "Seed"):
        label = next(label for label in form if label.text() == name)
        assert _explains(label.toolTip(), name), name
    assert _explains(window.chat_page.status_label.toolTip(), "")
