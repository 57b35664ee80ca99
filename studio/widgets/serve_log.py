"""The Serve page's live figures (requests and tokens per second, counts) and its request log: one
row per request the local server answered, newest at the bottom, the oldest dropped beyond
``MAX_ROWS``.

Rows arrive in batches (the page's task delivers the server's events about ten times a second),
and a batch is one insertion: a busy server costs the window one small update per tick, never
one per request. The rows live in a ``QStandardItemModel`` (in C++), not in a Python model:
painting the table then calls no Python at all, where a Python ``data()`` took the interpreter's
lock some two thousand times a paint, each a wait behind the server's own threads (the window
stalled for 60-90 ms while four clients kept the server busy).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QAbstractItemView, QGridLayout, QHeaderView, QLabel, QTableView, QWidget

from studio import theme

MAX_ROWS = 1000
# (title, what it means); the order of a row's cells
COLUMNS = (
    ("Time", "When the request arrived, on this machine's clock"),
    ("Client", "The address and port the request came from"),
    ("Model", "The model the request named: the base model, or an adapter by its library name"),
    ("Endpoint", "The part of the API the request called"),
    ("Status", "The HTTP status of the answer: 200 is a reply, 4xx a request the server refused, "
               "5xx a failure of its own"),
    ("Tokens", "Tokens in the prompt + tokens generated"),
    ("Seconds", "How long the server took to answer, from the request's arrival to its last token"),
)
# (the ServeStats field, its title, what it means)
FIGURES = (
    ("requests_per_s", "Requests/s", "Requests answered per second, over the last 10 seconds"),
    ("tokens_per_s", "Tokens/s", "Tokens generated per second for all clients together, over the last 10 seconds"),
    ("requests", "Requests", "Requests answered since the server started"),
    ("queued", "Waiting", "Requests waiting for their turn (the server refuses more than its queue holds)"),
    ("running", "Running", "Requests being generated now"),
    ("errors", "Errors", "Requests answered with an error since the server started"),
)
_RIGHT = {"Status", "Tokens", "Seconds"}
_ENDPOINT = 3


def row_cells(event: Any) -> tuple[str, ...]:
    """A ``RequestLogged`` event as the log shows it."""
    stream = " (stream)" if event.stream else ""
    return (time.strftime("%H:%M:%S", time.localtime(event.at)), event.client, event.model or "—",
            event.endpoint + stream, str(event.status), f"{event.prompt_tokens} + {event.completion_tokens}",
            f"{event.seconds:.2f}")


class LiveFigures(QWidget):
    """The server's ``ServeStats`` in a row of titled figures; "—" while nothing serves."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.labels: dict[str, QLabel] = {}  # by ServeStats field
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for column, (key, title, tip) in enumerate(FIGURES):
            name, value = QLabel(title, self), QLabel(self)
            value.setAccessibleName(title)
            value.setStyleSheet("font-weight: bold;")
            for label in (name, value):
                label.setToolTip(tip)
            layout.addWidget(name, 0, column)
            layout.addWidget(value, 1, column)
            self.labels[key] = value
        self.clear()

    def show_stats(self, stats: Any) -> None:
        for key, label in self.labels.items():
            value = getattr(stats, key)
            label.setText(f"{value:.1f}" if isinstance(value, float) else f"{value:,}")

    def clear(self) -> None:
        for label in self.labels.values():
            label.setText("—")


class RequestLogView(QTableView):
    """The log's table: follows the newest row while the user is at the bottom, stays put when they
    scrolled up to read. ``add`` appends a batch of ``RequestLogged`` events."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.log = QStandardItemModel(0, len(COLUMNS), self)
        for column, (title, tip) in enumerate(COLUMNS):
            self.log.setHeaderData(column, Qt.Orientation.Horizontal, title)
            self.log.setHeaderData(column, Qt.Orientation.Horizontal, tip, Qt.ItemDataRole.ToolTipRole)
        self.setModel(self.log)
        self.setAccessibleName("Request log")
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.verticalHeader().hide()
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 6)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate((66, 112, 90, 150, 44, 80, 56)):
            self.setColumnWidth(column, width)
        header.setSectionResizeMode(_ENDPOINT, QHeaderView.ResizeMode.Stretch)  # takes what room is left

    def add(self, events: Sequence[Any]) -> None:
        bar = self.verticalScrollBar()
        following = bar.value() == bar.maximum()
        overflow = self.log.rowCount() + min(len(events), MAX_ROWS) - MAX_ROWS
        if overflow > 0:
            self.log.removeRows(0, overflow)
        for event in events[-MAX_ROWS:]:
            self.log.appendRow(_row(event))
        if following:
            self.scrollToBottom()

    def clear(self) -> None:
        self.log.removeRows(0, self.log.rowCount())  # QStandardItemModel.clear would take the headers too

    def cells(self, row: int) -> tuple[str, ...]:
        """The texts of a row, as shown."""
        return tuple(self.log.item(row, column).text() for column in range(len(COLUMNS)))


def _row(event: Any) -> list[QStandardItem]:
    items = []
    for (title, _tip), text in zip(COLUMNS, row_cells(event)):
        item = QStandardItem(text)
        if title in _RIGHT:
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if event.error:
            item.setToolTip(event.error)  # the refusal or failure, as the client was told
            item.setForeground(QColor(theme.colours().error))
        items.append(item)
    return items
