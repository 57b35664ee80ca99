"""Adapters: the library of trained adapters, what each was made from, and its loss curve.

Listing the library reads JSON files only (``engine.library``), a few milliseconds
even for a large library, so it runs on the UI thread. A damaged folder is listed
with the reason it cannot be used; it never stops the listing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QLocale, Qt, QUrl
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from engine.library import ADAPTER_META, AdapterRecord, list_adapters, read_adapter_meta
from engine.paths import adapters_dir
from studio.widgets.live_plot import LivePlot

COLUMNS = ("Name", "Status", "Base model", "Method", "Rank", "Dataset", "Steps", "Final loss", "Created", "Size")
# Long paths and damage reasons are cut at this width; the tooltip and the details show them whole.
_MAX_COLUMN_WIDTH = 180
_SORT_ROLE = Qt.ItemDataRole.UserRole + 1
_PATH_ROLE = Qt.ItemDataRole.UserRole + 2
_ERROR_COLOUR = "#c0392b"
# Shown in the detail pane's plot, not in its field list.
_LOSS_HISTORY = "loss_history"


class SortItem(QTableWidgetItem):
    """A cell that sorts by a number when it has one (size in bytes, not "1.2 MiB").

    Cells without a number (an adapter made elsewhere has no step count) sort first.
    """

    def __init__(self, text: str, sort_key: Optional[float] = None) -> None:
        super().__init__(text)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)
        if sort_key is not None:
            self.setData(_SORT_ROLE, float(sort_key))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(_SORT_ROLE), other.data(_SORT_ROLE)
        if mine is None or theirs is None:
            if mine is None and theirs is None:
                return self.text().lower() < other.text().lower()
            return mine is None
        return mine < theirs


def format_size(size_bytes: int) -> str:
    return QLocale().formattedDataSize(size_bytes, 1)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _row_items(record: AdapterRecord) -> list[SortItem]:
    created = (record.created or "").replace("T", " ")[:16]
    loss = f"{record.final_loss:.4f}" if record.final_loss is not None else ""
    status = f"damaged: {record.damaged}" if record.damaged else "ready"
    return [
        SortItem(record.name),
        SortItem(status),
        SortItem(_text(record.base_model)),
        SortItem(_text(record.method)),
        SortItem(_text(record.rank), record.rank if isinstance(record.rank, (int, float)) else None),
        SortItem(_text(record.dataset)),
        SortItem(_text(record.steps), record.steps if isinstance(record.steps, (int, float)) else None),
        SortItem(loss, record.final_loss),
        SortItem(created),
        SortItem(format_size(record.size_bytes), record.size_bytes),
    ]


def loss_points(meta: dict[str, Any]) -> list[tuple[float, float]]:
    """The ``[step, loss]`` pairs of a ``studio.json``, skipping anything malformed."""
    points = []
    for entry in meta.get(_LOSS_HISTORY) or []:
        if (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in entry)
        ):
            points.append((float(entry[0]), float(entry[1])))
    return points


class AdapterDetails(QWidget):
    """The selected adapter's ``studio.json`` fields and its training loss curve."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.fields = QTextBrowser(self)
        self.fields.setAccessibleName("Adapter details")
        self.fields.setOpenExternalLinks(False)
        self.loss_plot = LivePlot(["loss"], x_label="step", y_label="loss", title="Training loss", parent=self)
        self.loss_plot.setMinimumHeight(200)
        self.loss_plot.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.fields, 1)
        layout.addWidget(self.loss_plot, 1)
        self.show_nothing()

    def show_nothing(self) -> None:
        self.fields.setHtml("<p>Select an adapter to see how it was made.</p>")
        self.loss_plot.clear()
        self.loss_plot.hide()

    def show_adapter(self, record: AdapterRecord) -> None:
        meta = read_adapter_meta(Path(record.path))
        parts = [f"<h3>{html.escape(record.name)}</h3>"]
        if record.damaged:
            parts.append(
                f'<p style="color:{_ERROR_COLOUR}"><b>Damaged:</b> {html.escape(record.damaged)}. '
                "This folder cannot be loaded; train or import the adapter again.</p>"
            )
        rows = [("folder", record.path)]
        rows += [(key, _describe_value(value)) for key, value in meta.items() if key != _LOSS_HISTORY]
        if not meta:
            parts.append(
                "<p>studio.json cannot be read: it is not a JSON object.</p>"
                if (Path(record.path) / ADAPTER_META).is_file()
                else "<p>No studio.json: this adapter was not made by the studio.</p>"
            )
        parts.append('<table cellspacing="0" cellpadding="3">')
        for key, value in rows:
            parts.append(
                f'<tr><td valign="top"><b>{html.escape(key)}</b></td><td>{html.escape(value)}</td></tr>'
            )
        parts.append("</table>")
        self.fields.setHtml("".join(parts))
        points = loss_points(meta)
        self.loss_plot.clear()
        for step, loss in points:
            self.loss_plot.append(step, loss)
        self.loss_plot.redraw()
        self.loss_plot.setVisible(bool(points))


def _describe_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return _text(value)


class AdaptersPage(QWidget):
    """The adapter library as a sortable table, with the selected adapter's details beside it."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._records: dict[str, AdapterRecord] = {}
        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        self.error_label = QLabel(self)
        self.error_label.setStyleSheet(f"color: {_ERROR_COLOUR}; font-weight: 600;")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        self.refresh_button = QPushButton("Refresh", self)
        self.refresh_button.setToolTip("Read the library folder again")
        self.open_button = QPushButton("Open folder", self)
        self.open_button.setToolTip("Show the selected adapter's folder in your file manager")

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("Adapter library")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setSortingEnabled(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.details = AdapterDetails(self)

        buttons = QHBoxLayout()
        buttons.addWidget(self.summary_label, 1)
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.open_button)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.table)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([820, 440])
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.error_label)
        layout.addWidget(splitter, 1)

        self.refresh_button.clicked.connect(self.refresh)
        self.open_button.clicked.connect(self.open_folder)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.sortByColumn(COLUMNS.index("Created"), Qt.SortOrder.DescendingOrder)
        self.refresh()

    def refresh(self) -> None:
        """List the library again, keeping the selected adapter selected."""
        keep = self.selected_path()
        try:
            records = list_adapters()
        except (OSError, StudioError) as exc:
            self.error_label.setText(f"Could not read the adapter library: {exc}")
            self.error_label.show()
            records = []
        else:
            self.error_label.hide()
        self._records = {record.path: record for record in records}
        self._fill(records)
        damaged = sum(1 for record in records if record.damaged)
        if records:
            counted = f"{len(records)} adapter{'s' if len(records) != 1 else ''}"
            if damaged:
                counted += f" ({damaged} damaged)"
            self.summary_label.setText(f"{counted} in {adapters_dir()}")
        else:
            self.summary_label.setText(
                f"No adapters yet: a finished training run saves its adapter here ({adapters_dir()})."
            )
        if keep:
            self.select_path(keep)
        self._selection_changed()

    def selected_path(self) -> Optional[str]:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(_PATH_ROLE)

    def select_path(self, path: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(_PATH_ROLE) == path:
                self.table.selectRow(row)
                return

    def open_folder(self) -> None:
        path = self.selected_path()
        if path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    def _fill(self, records: list[AdapterRecord]) -> None:
        # Sorting while rows are inserted would move them under our feet.
        self.table.setSortingEnabled(False)
        self.table.clearSelection()
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            items = _row_items(record)
            items[0].setData(_PATH_ROLE, record.path)
            for column, item in enumerate(items):
                item.setToolTip(f"Damaged: {record.damaged}" if record.damaged else record.path)
                if record.damaged:
                    item.setForeground(QColor(_ERROR_COLOUR))
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        for column in range(self.table.columnCount()):
            if self.table.columnWidth(column) > _MAX_COLUMN_WIDTH:
                self.table.setColumnWidth(column, _MAX_COLUMN_WIDTH)

    def _selection_changed(self) -> None:
        path = self.selected_path()
        self.open_button.setEnabled(path is not None)
        record = self._records.get(path) if path else None
        if record is None:
            self.details.show_nothing()
        else:
            self.details.show_adapter(record)
