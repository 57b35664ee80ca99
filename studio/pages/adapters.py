"""Adapters: the library of adapters, what each was made from, and what to do with them.

Listing the library reads JSON files and safetensors headers only (``engine.adapters.library``),
milliseconds even for hundreds of adapters, so it runs on the UI thread; so do renames,
tags, notes and deleting to the trash, which are a rename or a small JSON write. Import,
export, duplicate, merge, GGUF and combine copy or compute megabytes to gigabytes: they
run in a ``BackgroundTask``. A damaged folder is listed with the reason it cannot be
used; it never stops the listing.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QLocale, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.core.choices import OBJECTIVE_LABELS
from engine.errors import StudioError
from engine.adapters.evaluations import EVALUATIONS, EvalHeadline, headline, read_evaluations
from engine.adapters.library import (
    ADAPTER_META,
    AdapterRecord,
    list_adapters,
    read_adapter_meta,
    rename_adapter,
    set_notes,
    set_tags,
)
from engine.adapters.trash import TrashEntry, delete_adapter, empty_trash, list_trash, restore_adapter
from engine.paths import adapters_dir
from studio.pages.adapter_fields import field_meaning, field_name
from studio.widgets.column_tips import set_column_tips
from studio.widgets.live_plot import LivePlot
from studio.widgets.sort_item import SortItem
from studio.workers import BackgroundTask, TaskReporter, TaskSlot

COLUMNS = ("Name", "Status", "Base model", "Method", "Rank", "Dataset", "Steps", "Final loss", "Eval loss",
           "Evaluation", "Created", "Size", "Tags")
# What each column means to the user: the headers' tooltips.
COLUMN_HELP = {
    "Name": "The adapter's name in the library; Chat and Compare list it by this name.",
    "Status": "Ready to use, or damaged with what is wrong with its folder (a damaged adapter cannot be loaded).",
    "Base model": "The model it was trained on: it works with that model only.",
    "Method": "How it was trained (LoRA, QLoRA, DoRA, prompt tuning...).",
    "Rank": "The size of its low-rank update: higher learns more and makes a larger file.",
    "Dataset": "The data file it was trained on.",
    "Steps": "How many training steps made it.",
    "Final loss": "The training loss at its last step (lower is better); compare adapters on the same dataset only.",
    "Eval loss": "The loss on validation rows it never learned from, at the last evaluation: lower is better, and "
                 "far above the final loss means it memorised its rows.",
    "Evaluation": "The newest evaluation's headline score (ROUGE-L where it was scored; higher is better) and the "
                  "rows it was scored on; point at a cell for the set and the base model's score before training.",
    "Created": "When it was saved; the list puts the newest first.",
    "Size": "The size of its files on disk.",
    "Tags": "Your own labels, to find and group adapters.",
}
# Long paths and damage reasons are cut at this width; the tooltip and the details show them whole.
_MAX_COLUMN_WIDTH = 150
# The name is what a user looks for, and run names are long ("20261206-204732-pirate_persona-lora"):
# its column may take twice the others' room before it is cut.
_MAX_NAME_WIDTH = 2 * _MAX_COLUMN_WIDTH
_PATH_ROLE = Qt.ItemDataRole.UserRole + 2
_ERROR_COLOUR = "#c0392b"
# Shown in the detail pane's plot or editors, not in its field list.
_LOSS_HISTORY = "loss_history"
_EVAL_HISTORY = "eval_history"
_NOT_LISTED = (_LOSS_HISTORY, _EVAL_HISTORY, EVALUATIONS, "chat_template", "tags", "notes", "versions")
# The fields a reader looks for first, in this order; the rest follow.
_SECTIONS = (
    ("Made from", ("base_model", "base_model_path", "base_model_fingerprint", "dataset", "dataset_sha256",
                   "combined_from", "combination", "density", "imported_from", "duplicated_from")),
    ("Settings", ("method", "objective", "beta", "rank", "alpha", "dropout", "targets", "learning_rate", "batch_size", "grad_accum",
                  "max_length", "max_steps", "epochs", "seed")),
    ("Result", ("steps", "final_loss", "final_eval_loss", "duration_s", "created", "hardware", "run_dir")),
)


def format_size(size_bytes: int) -> str:
    return QLocale().formattedDataSize(size_bytes, 1)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _number(value: Any) -> Optional[float]:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def evaluation_text(evaluation: EvalHeadline) -> str:
    """An evaluation's headline in a few words: "ROUGE-L 0.58 (30 rows)"."""
    rows = f" ({evaluation.examples} rows)" if evaluation.examples is not None else ""
    return f"{evaluation.label} {evaluation.score:.2f}{rows}"


def evaluation_tip(evaluation: EvalHeadline) -> str:
    """Which set, when, and the score before training (the base model's) -> after (the adapter's)."""
    when = evaluation.created.replace("T", " ")[:16]
    if evaluation.base_score is None:
        scores = f"{evaluation.label} {evaluation.score:.3f} (the base model was not scored beside it)"
    else:
        scores = (f"{evaluation.label} {evaluation.base_score:.3f} → {evaluation.score:.3f} "
                  "(base model → this adapter)")
    rows = f" on {evaluation.examples} rows" if evaluation.examples is not None else ""
    return f"{evaluation.set_name}{rows}, {when}: {scores}"


def _evaluation_item(record: AdapterRecord) -> SortItem:
    if record.evaluation is None:
        return SortItem("")
    item = SortItem(evaluation_text(record.evaluation), record.evaluation.score)
    item.setToolTip(evaluation_tip(record.evaluation))
    return item


def _row_items(record: AdapterRecord) -> list[SortItem]:
    created = (record.created or "").replace("T", " ")[:16]
    loss = f"{record.final_loss:.4f}" if record.final_loss is not None else ""
    eval_loss = f"{record.eval_loss:.4f}" if record.eval_loss is not None else ""
    status = f"damaged: {record.damaged}" if record.damaged else "ready"
    return [
        SortItem(record.name),
        SortItem(status),
        SortItem(_text(record.base_model)),
        SortItem(_text(record.method)),
        SortItem(_text(record.rank), _number(record.rank)),
        SortItem(_text(record.dataset)),
        SortItem(_text(record.steps), _number(record.steps)),
        SortItem(loss, record.final_loss),
        SortItem(eval_loss, record.eval_loss),
        _evaluation_item(record),
        SortItem(created),
        SortItem(format_size(record.size_bytes), record.size_bytes),
        SortItem(", ".join(record.tags)),
    ]


def history_points(meta: dict[str, Any], key: str = _LOSS_HISTORY) -> list[tuple[float, float]]:
    """The ``[step, loss]`` pairs under ``key`` of a ``studio.json``, skipping anything malformed."""
    points = []
    for entry in meta.get(key) or []:
        if (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and all(_number(v) is not None for v in entry)
        ):
            points.append((float(entry[0]), float(entry[1])))
    return points


def loss_points(meta: dict[str, Any]) -> list[tuple[float, float]]:
    return history_points(meta, _LOSS_HISTORY)


def _describe_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return _text(value)


def _describe_field(key: str, value: Any) -> str:
    """A field's value as shown: an objective by its name ("DPO"), the rest as they are."""
    if key == "objective" and isinstance(value, str):
        return OBJECTIVE_LABELS.get(value, value)
    return _describe_value(value)


def _field_row(key: str, value: str) -> str:
    """A details row: the field's name (its meaning as the tooltip, value included), then its value."""
    meaning = html.escape(field_meaning(key), quote=True)
    return (f"<tr><td valign='top' style='color:#555'><span title=\"{meaning}\">{html.escape(field_name(key))}"
            f"</span></td><td><span title=\"{meaning}\">{html.escape(value)}</span></td></tr>")


def _evaluations_section(meta: dict[str, Any]) -> list[str]:
    """One line per evaluation set the adapter was scored on, newest first, with its headline."""
    lines = []
    for summary in read_evaluations(meta):
        found = headline(summary)
        text = evaluation_tip(found) if found is not None else (
            f"{summary['set'].get('name', '?')}, {str(summary['created']).replace('T', ' ')[:16]}: no score to show")
        lines.append(f"<li>{html.escape(text)}</li>")
    return ["<p><b>Evaluations</b></p><ul>", *lines, "</ul>"] if lines else []


class AdapterDetails(QWidget):
    """The selected adapter: how it was made, its loss curves, and the user's tags and notes."""

    notesSaved = Signal(str)  # the adapter's path

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._record: Optional[AdapterRecord] = None
        self.fields = QTextBrowser(self)
        self.fields.setAccessibleName("Adapter details")
        self.fields.setOpenExternalLinks(False)
        self.loss_plot = LivePlot(["train", "eval"], x_label="step", y_label="loss", title="Loss", parent=self)
        self.loss_plot.setMinimumHeight(170)
        self.loss_plot.hide()
        self.tags_edit = QLineEdit(self)
        self.tags_edit.setAccessibleName("Tags")
        self.tags_edit.setPlaceholderText("tags, separated by commas")
        self.notes_edit = QPlainTextEdit(self)
        self.notes_edit.setAccessibleName("Notes")
        self.notes_edit.setPlaceholderText("Notes: what this adapter is good at, what to try next…")
        self.notes_edit.setMaximumHeight(90)
        self.save_button = QPushButton("Save tags and notes", self)
        self.save_button.clicked.connect(self.save)
        self.message = QLabel(self)
        self.message.setWordWrap(True)

        save_row = QHBoxLayout()
        save_row.addWidget(self.message, 1)
        save_row.addWidget(self.save_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.fields, 3)
        layout.addWidget(self.loss_plot, 2)
        editors = QFormLayout()
        editors.addRow("Tags", self.tags_edit)
        editors.addRow("Notes", self.notes_edit)
        layout.addLayout(editors)
        layout.addLayout(save_row)
        self.show_nothing()

    def show_nothing(self) -> None:
        self._record = None
        self.fields.setHtml("<p>Select an adapter to see how it was made.</p>")
        self.loss_plot.clear()
        self.loss_plot.hide()
        for widget in (self.tags_edit, self.notes_edit):
            widget.clear()
            widget.setEnabled(False)
        self.save_button.setEnabled(False)
        self.message.clear()

    def show_adapter(self, record: AdapterRecord) -> None:
        self._record = record
        meta = read_adapter_meta(Path(record.path))
        self.fields.setHtml(self._describe(record, meta))
        self.loss_plot.clear()
        train, evaluation = loss_points(meta), history_points(meta, _EVAL_HISTORY)
        for step, loss in train:
            self.loss_plot.append(step, loss, "train")
        for step, loss in evaluation:
            self.loss_plot.append(step, loss, "eval")
        self.loss_plot.redraw()
        self.loss_plot.setVisible(bool(train or evaluation))
        editable = not record.damaged
        self.tags_edit.setText(", ".join(record.tags))
        self.notes_edit.setPlainText(_text(meta.get("notes")))
        for widget in (self.tags_edit, self.notes_edit, self.save_button):
            widget.setEnabled(editable)
        self.message.clear()

    def _describe(self, record: AdapterRecord, meta: dict[str, Any]) -> str:
        parts = [f"<h3>{html.escape(record.name)}</h3>",
                 "<p style='color:#555'>Point at a field to see what it means.</p>"]
        if record.damaged:
            parts.append(
                f'<p style="color:{_ERROR_COLOUR}"><b>Damaged:</b> {html.escape(record.damaged)}. '
                "This folder cannot be loaded; train or import the adapter again.</p>"
            )
        if not meta:
            parts.append(
                "<p>studio.json cannot be read: it is not a JSON object.</p>"
                if (Path(record.path) / ADAPTER_META).is_file()
                else "<p>No studio.json: this adapter was not made by the studio.</p>"
            )
        shown = set(_NOT_LISTED)
        sections = [(title, [k for k in keys if k in meta]) for title, keys in _SECTIONS]
        for _, keys in sections:
            shown.update(keys)
        sections.append(("Other", [k for k in meta if k not in shown]))
        sections.append(("Files", []))
        for title, keys in sections:
            if title == "Other":  # what it scored follows how it was made
                parts += _evaluations_section(meta)
            rows = [(key, _describe_field(key, meta[key])) for key in keys]
            if title == "Files":
                rows = [("folder", record.path), ("size", format_size(record.size_bytes))]
            if not rows:
                continue
            parts.append(f"<p><b>{html.escape(title)}</b></p><table cellspacing='0' cellpadding='2'>")
            parts += [_field_row(key, value) for key, value in rows]
            parts.append("</table>")
        return "".join(parts)

    def save(self) -> None:
        if self._record is None:
            return
        try:
            tags = set_tags(self._record.name, self.tags_edit.text().split(","))
            set_notes(self._record.name, self.notes_edit.toPlainText())
        except (StudioError, OSError) as exc:
            self.message.setStyleSheet(f"color: {_ERROR_COLOUR};")
            self.message.setText(str(exc))
            return
        self.tags_edit.setText(", ".join(tags))
        self.message.setStyleSheet("")
        self.message.setText("Saved.")
        self.notesSaved.emit(self._record.path)


class AdaptersPage(QWidget):
    """The adapter library as a searchable, sortable table, with the selected adapter's details
    beside it and everything that can be done with it above."""

    adaptersChanged = Signal()  # the library changed: adapter pickers elsewhere should refresh
    modelsChanged = Signal()  # a merged model went into the model store
    chatWithFileRequested = Signal(str, str)  # a GGUF export to chat with, and the adapter it came from

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._records: dict[str, AdapterRecord] = {}
        self._task = TaskSlot()
        self._deleted: Optional[TrashEntry] = None
        self.summary_label = QLabel(self)
        self.summary_label.setWordWrap(True)
        self.search_edit = QLineEdit(self)
        self.search_edit.setAccessibleName("Search adapters")
        self.search_edit.setPlaceholderText("Search name, base model, method, dataset or tag")
        self.search_edit.setClearButtonEnabled(True)
        self.error_label = QLabel(self)
        self.error_label.setStyleSheet(f"color: {_ERROR_COLOUR}; font-weight: 600;")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setMaximumWidth(240)
        self.progress_bar.hide()

        self.refresh_button = self._button("Refresh", "Read the library folder again")
        self.import_button = self._button("Import…", "Import a PEFT adapter folder or zip made anywhere")
        import_menu = QMenu(self.import_button)
        import_menu.addAction("Adapter folder…", self.import_folder)
        import_menu.addAction("Zip file…", self.import_zip)
        self.import_button.setMenu(import_menu)
        self.combine_button = self._button("Combine…", "Combine adapters of one base into a new one, trying it first")
        self.rename_button = self._button("Rename…", "Give the selected adapter a new name")
        self.duplicate_button = self._button("Duplicate", "Copy the selected adapter under a new name")
        self.delete_button = self._button("Delete", "Move the selected adapter to the trash (it can be restored)")
        self.export_button = self._button("Export zip…", "Write the selected adapter as a zip to share")
        self.merge_button = self._button("Merge…", "Merge into the base model as a standard Hugging Face folder")
        self.gguf_button = self._button("GGUF…", "Export for llama.cpp and Ollama")
        self.open_button = self._button("Open folder", "Show the selected adapter's folder in your file manager")
        self.empty_trash_button = self._button("Empty trash", "Delete the adapters in the trash for good")

        self.undo_bar = QFrame(self)
        self.undo_bar.setFrameShape(QFrame.Shape.StyledPanel)
        self.undo_label = QLabel(self.undo_bar)
        self.undo_button = QPushButton("Undo", self.undo_bar)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(8, 2, 8, 2)
        undo_layout.addWidget(self.undo_label, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("Adapter library")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        set_column_tips(self.table, COLUMN_HELP)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setSortingEnabled(True)
        self.table.setWordWrap(False)
        # Cut in the middle: names that start alike (a run's, then "-2") keep the end that tells them apart.
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.details = AdapterDetails(self)

        self._build_layout()
        self.refresh_button.clicked.connect(self.refresh)
        self.open_button.clicked.connect(self.open_folder)
        self.rename_button.clicked.connect(self.ask_rename)
        self.duplicate_button.clicked.connect(self.duplicate_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.undo_button.clicked.connect(self.undo_delete)
        self.export_button.clicked.connect(self.ask_export)
        self.merge_button.clicked.connect(self.open_merge)
        self.gguf_button.clicked.connect(self.open_gguf)
        self.combine_button.clicked.connect(self.open_combine)
        self.empty_trash_button.clicked.connect(self.ask_empty_trash)
        self.search_edit.textChanged.connect(self._apply_filter)
        self.details.notesSaved.connect(self._notes_saved)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.sortByColumn(COLUMNS.index("Created"), Qt.SortOrder.DescendingOrder)
        self.refresh()

    def _button(self, text: str, tip: str) -> QPushButton:
        button = QPushButton(text, self)
        button.setToolTip(tip)
        return button

    def _build_layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.search_edit, 2)
        top.addWidget(self.summary_label, 3)
        top.addWidget(self.import_button)
        top.addWidget(self.combine_button)
        top.addWidget(self.refresh_button)
        actions = QHBoxLayout()
        for button in (self.rename_button, self.duplicate_button, self.delete_button, self.export_button,
                       self.merge_button, self.gguf_button, self.open_button):
            actions.addWidget(button)
        actions.addStretch(1)
        actions.addWidget(self.empty_trash_button)
        progress = QHBoxLayout()
        progress.addWidget(self.status_label, 1)
        progress.addWidget(self.progress_bar)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.table)
        splitter.addWidget(self.details)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        splitter.setSizes([740, 400])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(actions)
        layout.addWidget(self.undo_bar)
        layout.addWidget(self.error_label)
        layout.addLayout(progress)
        layout.addWidget(splitter, 1)

    # listing -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """List the library again, keeping the selected adapter selected."""
        keep = self.selected_path()
        try:
            records = list_adapters()
            trash = list_trash()
        except (OSError, StudioError) as exc:
            self.error_label.setText(f"Could not read the adapter library: {exc}")
            self.error_label.show()
            records, trash = [], []
        self._records = {record.path: record for record in records}
        self._fill(records)
        self._apply_filter()
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
        self.empty_trash_button.setEnabled(bool(trash))
        self.empty_trash_button.setText(f"Empty trash ({len(trash)})" if trash else "Empty trash")
        if keep:
            self.select_path(keep)
        self._selection_changed()

    def selected_path(self) -> Optional[str]:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.table.item(rows[0].row(), 0).data(_PATH_ROLE)

    def selected_record(self) -> Optional[AdapterRecord]:
        path = self.selected_path()
        return self._records.get(path) if path else None

    def select_path(self, path: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(_PATH_ROLE) == path:
                self.table.selectRow(row)
                return

    def select_name(self, name: str) -> None:
        self.select_path(str(adapters_dir() / name))

    def visible_names(self) -> list[str]:
        """The names the table shows now, top to bottom (search and sort applied)."""
        return [self.table.item(row, 0).text() for row in range(self.table.rowCount())
                if not self.table.isRowHidden(row)]

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
                # A cell with its own tip (the evaluation's set and scores) keeps it; the others show the folder.
                if record.damaged or not item.toolTip():
                    item.setToolTip(f"Damaged: {record.damaged}" if record.damaged else record.path)
                if record.damaged:
                    item.setForeground(QColor(_ERROR_COLOUR))
                self.table.setItem(row, column, item)
        self.table.setSortingEnabled(True)
        self.table.resizeColumnsToContents()
        for column in range(self.table.columnCount()):
            widest = _MAX_NAME_WIDTH if COLUMNS[column] == "Name" else _MAX_COLUMN_WIDTH
            if self.table.columnWidth(column) > widest:
                self.table.setColumnWidth(column, widest)

    def _apply_filter(self) -> None:
        words = self.search_edit.text().lower().split()
        searched = [COLUMNS.index(c) for c in ("Name", "Base model", "Method", "Dataset", "Tags", "Status")]
        for row in range(self.table.rowCount()):
            text = " ".join(self.table.item(row, column).text().lower() for column in searched)
            self.table.setRowHidden(row, not all(word in text for word in words))

    def _selection_changed(self) -> None:
        record = self.selected_record()
        usable = record is not None and not record.damaged and not self.busy
        self.open_button.setEnabled(record is not None)
        for button in (self.rename_button, self.delete_button, self.duplicate_button):
            button.setEnabled(record is not None and not self.busy)
        for button in (self.export_button, self.merge_button, self.gguf_button):
            button.setEnabled(usable)
        self.import_button.setEnabled(not self.busy)
        if record is None:
            self.details.show_nothing()
        else:
            self.details.show_adapter(record)

    # quick edits (a rename or a small JSON write: on the UI thread) ---------------------------
    def _report(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; a StudioError is shown on the page instead of raised."""
        try:
            result = action()
        except (StudioError, OSError) as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            return None
        self.error_label.hide()
        return result

    def rename_selected(self, new_name: str) -> Optional[Path]:
        record = self.selected_record()
        if record is None:
            return None
        path = self._report(lambda: rename_adapter(record.name, new_name))
        if path is not None:
            self._changed(f"Renamed {record.name} to {path.name}.", select=str(path))
        return path

    def ask_rename(self) -> None:
        record = self.selected_record()
        if record is None:
            return
        name, ok = QInputDialog.getText(self, "Rename adapter", "New name:", text=record.name)
        if ok and name.strip() and name.strip() != record.name:
            self.rename_selected(name)

    def delete_selected(self) -> Optional[TrashEntry]:
        record = self.selected_record()
        if record is None:
            return None
        entry = self._report(lambda: delete_adapter(record.name))
        if entry is not None:
            self._deleted = entry
            self.undo_label.setText(f"Moved {entry.name} to the trash.")
            self.undo_bar.show()
            self._changed("")
        return entry

    def undo_delete(self) -> Optional[Path]:
        if self._deleted is None:
            return None
        entry, self._deleted = self._deleted, None
        self.undo_bar.hide()
        path = self._report(lambda: restore_adapter(entry.id))
        if path is not None:
            self._changed(f"Restored {path.name}.", select=str(path))
        return path

    def ask_empty_trash(self) -> None:
        count = len(list_trash())
        answer = QMessageBox.question(
            self, "Empty the trash?",
            f"Delete the {count} adapter{'s' if count != 1 else ''} in the trash for good? This cannot be undone.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            removed = self._report(empty_trash)
            self._deleted = None
            self.undo_bar.hide()
            self._changed(f"Deleted {removed} adapter(s) in the trash for good.")

    def _notes_saved(self, path: str) -> None:
        self.refresh()
        self.select_path(path)

    def _changed(self, message: str, select: Optional[str] = None) -> None:
        self.status_label.setText(message)
        self.refresh()
        if select:
            self.select_path(select)
        self.adaptersChanged.emit()

    # longer work (copies and computation: in a BackgroundTask) ------------------------------
    @property
    def busy(self) -> bool:
        return self._task.busy

    def _run(self, fn: Callable[[TaskReporter], Any], on_success: Callable[[Any], None]) -> Optional[BackgroundTask]:
        if self.busy:
            return None
        self.error_label.hide()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        task = self._task.start(fn, on_success, self._failed, on_progress=self._progressed, on_finished=self._finished)
        self._selection_changed()
        return task

    def _progressed(self, done: int, total: int, message: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.status_label.setText(message)

    def _failed(self, message: str) -> None:
        self.status_label.clear()
        self.error_label.setText(message)
        self.error_label.show()

    def _finished(self) -> None:
        self.progress_bar.hide()
        self._selection_changed()

    def import_path(self, source: str) -> Optional[BackgroundTask]:
        def work(reporter: TaskReporter) -> str:
            from engine.adapters.transfer import import_adapter

            reporter.progress(0, 0, f"importing {Path(source).name}")
            return str(import_adapter(source))

        return self._run(work, lambda path: self._changed(f"Imported {Path(path).name}.", select=path))

    def import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a PEFT adapter folder", str(Path.home()))
        if folder:
            self.import_path(folder)

    def import_zip(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import an adapter zip", str(Path.home()), "Zip files (*.zip)")
        if path:
            self.import_path(path)

    def duplicate_selected(self) -> Optional[BackgroundTask]:
        record = self.selected_record()
        if record is None:
            return None

        def work(reporter: TaskReporter) -> str:
            from engine.adapters.library import duplicate_adapter

            reporter.progress(0, 0, f"copying {record.name}")
            return str(duplicate_adapter(record.name))

        return self._run(work, lambda path: self._changed(f"Copied {record.name} to {Path(path).name}.", select=path))

    def export_to(self, output: str) -> Optional[BackgroundTask]:
        record = self.selected_record()
        if record is None:
            return None

        def work(reporter: TaskReporter) -> str:
            from engine.adapters.transfer import export_adapter

            reporter.progress(0, 0, f"writing {Path(output).name}")
            # The save dialog has already asked before replacing an existing file.
            return str(export_adapter(record.name, output, overwrite=True))

        return self._run(work, lambda path: self.status_label.setText(f"Wrote {path}."))

    def ask_export(self) -> None:
        record = self.selected_record()
        if record is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export adapter as zip", str(Path.home() / f"{record.name}.zip"),
                                              "Zip files (*.zip)")
        if path:
            self.export_to(path)

    # dialogs -----------------------------------------------------------------------------------
    def merge_dialog(self) -> Optional[QWidget]:
        from studio.widgets.adapter_dialogs import MergeDialog

        record = self.selected_record()
        if record is None:
            return None
        dialog = MergeDialog(record.name, self)
        dialog.modelAdded.connect(lambda name: self.modelsChanged.emit())
        return dialog

    def gguf_dialog(self) -> Optional[QWidget]:
        from studio.widgets.adapter_dialogs import GgufDialog

        record = self.selected_record()
        if record is None:
            return None
        dialog = GgufDialog(record.name, self)
        dialog.chatRequested.connect(self.chatWithFileRequested)
        return dialog

    def combine_dialog(self) -> QWidget:
        from studio.widgets.adapter_dialogs import CombineDialog

        ready = [record.name for record in sorted(self._records.values(), key=lambda r: r.name.lower())
                 if not record.damaged]
        selected = self.selected_record()
        dialog = CombineDialog(ready, selected.name if selected else None, self)
        dialog.adapterSaved.connect(lambda path: self._changed(f"Saved the combination {Path(path).name}.",
                                                               select=path))
        return dialog

    def open_merge(self) -> None:
        dialog = self.merge_dialog()
        if dialog is not None:
            dialog.exec()

    def open_gguf(self) -> None:
        dialog = self.gguf_dialog()
        if dialog is not None:
            dialog.exec()

    def open_combine(self) -> None:
        self.combine_dialog().exec()
