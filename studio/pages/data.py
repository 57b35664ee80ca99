"""Data: look inside a dataset file before training on it.

Reading and checking a file can take seconds for a large one, so it runs in a
``BackgroundTask``. The page shows the detected format, how many rows are usable,
the problems with line numbers (so the user can fix the file) and a preview of the
conversations.
"""

from __future__ import annotations

import html
from functools import partial
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.data import DatasetFile, load_dataset_file
from studio.widgets.pickers import DatasetPicker
from studio.workers import BackgroundTask, TaskReporter

PREVIEW_ROWS = 200
SHOWN_PROBLEMS = 20
COLUMNS = ("#", "Turns", "First user message", "First assistant reply")
_FORMAT_NAMES = {
    "messages": "OpenAI chat (\"messages\")",
    "alpaca": "Alpaca (instruction / input / output)",
}
_ROLE_COLOURS = {"system": "#8e44ad", "user": "#1f5fbf", "assistant": "#2e7d32"}
_ERROR_STYLE = "color: #c0392b; font-weight: 600;"
_CELL_CHARS = 160


def first_content(conversation: list[dict], role: str) -> str:
    """The first ``role`` message on one line, cut to fit a table cell."""
    for message in conversation:
        if message.get("role") == role:
            text = " ".join(str(message.get("content", "")).split())
            return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"
    return ""


def conversation_html(conversation: list[dict]) -> str:
    parts = []
    for message in conversation:
        role = str(message.get("role", ""))
        colour = _ROLE_COLOURS.get(role, "#333333")
        content = html.escape(str(message.get("content", "")))
        parts.append(
            f'<p style="margin-top:10px"><b style="color:{colour}">{html.escape(role)}</b></p>'
            f'<p style="white-space:pre-wrap">{content}</p>'
        )
    return "".join(parts)


def _read(path: str, _reporter: TaskReporter) -> DatasetFile:
    return load_dataset_file(path)


class DataPage(QWidget):
    """Pick a dataset file and see what the trainer will make of it."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        # Reads still running or not yet let go. Python owns them (no Qt parent): with
        # PySide 6.12, deleteLater on a finished task crashes now and then.
        self._tasks: list[BackgroundTask] = []
        # Each read's signals carry the ticket it started with: only the latest pick is shown.
        self._ticket = 0
        self._dataset: Optional[DatasetFile] = None
        self._inspected_path: Optional[str] = None
        self.picker = DatasetPicker(self)
        self.busy_bar = QProgressBar(self)
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(140)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setAccessibleName("Reading the dataset")
        self.busy_bar.hide()
        self.error_label = QLabel(self)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        self.format_value = QLabel(self)
        self.rows_value = QLabel(self)
        self.usable_value = QLabel(self)
        self.problems_value = QLabel(self)
        self.problems_list = QListWidget(self)
        self.problems_list.setAccessibleName("Problems")
        self.problems_list.setToolTip("Rows the trainer will skip, with their line in the file")
        self.problems_list.setMaximumHeight(110)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("Conversations")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.conversation_view = QTextBrowser(self)
        self.conversation_view.setAccessibleName("Conversation")
        self.conversation_view.setPlaceholderText("Select a conversation to read it whole.")

        top = QHBoxLayout()
        dataset_label = QLabel("&Dataset:", self)
        dataset_label.setBuddy(self.picker.combo)
        top.addWidget(dataset_label)
        top.addWidget(self.picker, 1)
        top.addWidget(self.busy_bar)
        summary = QFormLayout()
        summary.addRow("Format:", self.format_value)
        summary.addRow("Rows in the file:", self.rows_value)
        summary.addRow("Usable conversations:", self.usable_value)
        summary.addRow("Problems:", self.problems_value)
        facts = QHBoxLayout()
        facts.addLayout(summary)
        facts.addWidget(self.problems_list, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.table)
        splitter.addWidget(self.conversation_view)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        self.preview_label = QLabel(self)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.error_label)
        layout.addLayout(facts)
        layout.addWidget(self.preview_label)
        layout.addWidget(splitter, 1)

        self.picker.changed.connect(self.inspect)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self._show(None)

    @property
    def dataset(self) -> Optional[DatasetFile]:
        return self._dataset

    def refresh(self) -> None:
        """Re-list the sample datasets and read the picked file if it has not been read yet.

        The window calls this when the page is shown, so a file is only read once
        someone looks at it.
        """
        self.picker.refresh()
        if self.picker.current_path() != self._inspected_path:
            self.inspect(self.picker.current_path())

    def inspect(self, path: str) -> None:
        """Read ``path`` in the background and show what is in it."""
        self._inspected_path = path
        self._ticket += 1
        self.error_label.hide()
        # Finished reads are let go here, never inside their own signals.
        self._tasks = [task for task in self._tasks if task.running]
        if not path:
            self.busy_bar.hide()
            self._show(None)
            return

        task = BackgroundTask(partial(_read, path))
        task.succeeded.connect(partial(self._loaded, self._ticket))
        task.failed.connect(partial(self._failed, self._ticket))
        self._tasks.append(task)
        self.busy_bar.show()
        task.start()

    def _loaded(self, ticket: int, dataset: DatasetFile) -> None:
        if ticket == self._ticket:
            self.busy_bar.hide()
            self._show(dataset)

    def _failed(self, ticket: int, message: str) -> None:
        if ticket == self._ticket:
            self.busy_bar.hide()
            self._show(None)
            self.error_label.setText(f"This file cannot be used: {message}")
            self.error_label.show()

    def _show(self, dataset: Optional[DatasetFile]) -> None:
        self._dataset = dataset
        self.problems_list.clear()
        self.table.setRowCount(0)
        self.conversation_view.clear()
        if dataset is None:
            for label in (self.format_value, self.rows_value, self.usable_value, self.problems_value):
                label.setText("–")
            self.problems_list.hide()
            self.preview_label.clear()
            return
        conversations = dataset.conversations
        self.format_value.setText(_FORMAT_NAMES.get(dataset.format, dataset.format))
        self.rows_value.setText(str(dataset.total_rows))
        self.usable_value.setText(str(len(conversations)))
        problems = dataset.problems
        self.problems_value.setText(
            f"{len(problems)} row{'s' if len(problems) != 1 else ''} will be skipped" if problems else "none"
        )
        for problem in problems[:SHOWN_PROBLEMS]:
            self.problems_list.addItem(f"Line {problem.line}: {problem.reason}")
        if len(problems) > SHOWN_PROBLEMS:
            self.problems_list.addItem(f"… and {len(problems) - SHOWN_PROBLEMS} more")
        self.problems_list.setVisible(bool(problems))
        shown = conversations[:PREVIEW_ROWS]
        self.preview_label.setText(
            f"The first {len(shown)} of {len(conversations)} conversations:"
            if len(conversations) > len(shown)
            else f"All {len(conversations)} conversations:"
        )
        self.table.setRowCount(len(shown))
        for row, conversation in enumerate(shown):
            cells = (
                str(row + 1),
                str(len(conversation)),
                first_content(conversation, "user"),
                first_content(conversation, "assistant"),
            )
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        if shown:
            self.table.selectRow(0)

    def _selection_changed(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if self._dataset is None or not rows:
            self.conversation_view.clear()
            return
        self.conversation_view.setHtml(conversation_html(self._dataset.conversations[rows[0].row()]))
