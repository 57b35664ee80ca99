"""Models: the base models the studio can train and chat with, and adding more.

Listing reads metadata only and runs on the UI thread. Adding a model folder or a
GGUF file, and preparing the starter model, read or convert gigabytes: they run in
a ``BackgroundTask`` with a progress bar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QLocale, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from engine.models.store import STARTER, STARTER_NAME, ModelRecord, add_model, list_models, resolve_model
from studio.widgets.column_tips import set_column_tips
from studio.workers import TaskReporter, TaskSlot

COLUMNS = ("Name", "Source", "Architecture", "Ready", "Chat template", "Size", "Location")
# What each column means to the user: the headers' tooltips.
COLUMN_HELP = {
    "Name": "The model's name, as the Train and Chat pages list it.",
    "Source": "Where it came from: starter (comes with the studio), folder (a Hugging Face folder you added), gguf "
              "(a GGUF file you added) or trained (a merged adapter saved as a model).",
    "Architecture": "The model's family as its config names it (LlamaForCausalLM...): it decides which layers an "
                    "adapter can train.",
    "Ready": "Whether it can be loaded now; the starter is converted the first time it is used.",
    "Chat template": "Whether it comes with a template that lays out a conversation for it. Chat data trains only "
                     "with one; without one it still trains on plain text.",
    "Size": "The size of its files on disk.",
    "Location": "Where its files are on this computer.",
}
_ERROR_STYLE = "color: #c0392b; font-weight: 600;"


class ModelsPage(QWidget):
    """The model store as a table, with buttons to add a folder, a GGUF file or the starter model."""

    modelsChanged = Signal()  # a model was added or prepared: pickers elsewhere should refresh

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._task = TaskSlot()
        self.add_folder_button = QPushButton("Add model folder…", self)
        self.add_folder_button.setToolTip(
            "Add a Hugging Face model folder (config.json, safetensors weights and tokenizer)"
        )
        self.add_gguf_button = QPushButton("Add GGUF file…", self)
        self.add_gguf_button.setToolTip(
            "Add a GGUF model file; it is converted once into a folder the trainer can load"
        )
        self.starter_button = QPushButton("Prepare starter model", self)
        self.starter_button.setToolTip(
            "Convert the bundled starter model now, so the first training run or chat starts at once"
        )
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setAccessibleName("Progress")
        self.progress_bar.hide()
        self.progress_label = QLabel(self)
        self.progress_label.setAccessibleName("Progress message")
        self.error_label = QLabel(self)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("Models")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        set_column_tips(self.table, COLUMN_HELP)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COLUMNS.index("Location"), QHeaderView.ResizeMode.Stretch)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addWidget(self.add_gguf_button)
        buttons.addWidget(self.starter_button)
        buttons.addStretch(1)
        progress = QHBoxLayout()
        progress.addWidget(self.progress_bar, 1)
        progress.addWidget(self.progress_label, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addLayout(progress)
        layout.addWidget(self.error_label)
        layout.addWidget(self.table, 1)

        self.add_folder_button.clicked.connect(self.choose_folder)
        self.add_gguf_button.clicked.connect(self.choose_gguf)
        self.starter_button.clicked.connect(self.prepare_starter)
        self.refresh()

    @property
    def busy(self) -> bool:
        return self._task.busy

    def refresh(self) -> None:
        """List the model store again."""
        try:
            records = list_models()
        except (OSError, StudioError) as exc:
            self._show_error(f"Could not list the models: {exc}")
            records = []
        # Not sortable: the engine lists the starter first, then the rest by name.
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            for column, text in enumerate(_row_texts(record)):
                item = QTableWidgetItem(text)
                item.setToolTip(str(record.path or record.name))
                self.table.setItem(row, column, item)
        # Column by column: resizeColumnsToContents() would also shrink the stretched Location.
        for column in range(COLUMNS.index("Location")):
            self.table.resizeColumnToContents(column)
        starter_waiting = any(record.source == STARTER and not record.ready for record in records)
        self.starter_button.setVisible(starter_waiting)
        self._update_controls()

    def choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder", str(Path.home()))
        if path:
            self.add_model_path(path)

    def choose_gguf(self) -> None:
        path, _filter = QFileDialog.getOpenFileName(
            self, "Choose a GGUF model file", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if path:
            self.add_model_path(path)

    def add_model_path(self, path: str) -> None:
        """Add a model folder or GGUF file to the store, in the background."""

        def add(reporter: TaskReporter) -> str:
            record = add_model(path, progress=reporter.progress)
            return f"Added {record.name}."

        self._start(add, f"Adding {Path(path).name}…")

    def prepare_starter(self) -> None:
        """Convert the starter model now rather than on first use."""

        def prepare(reporter: TaskReporter) -> str:
            resolve_model(STARTER, progress=reporter.progress)
            return "The starter model is ready."

        self._start(prepare, "Preparing the starter model…")

    def _start(self, fn: Callable[[TaskReporter], str], message: str) -> None:
        """Run ``fn`` (which returns the line to show when it is done) in the background."""
        if self.busy:
            return
        self.error_label.hide()
        self.progress_bar.setRange(0, 0)  # busy until the first progress report says how much
        self.progress_bar.show()
        self.progress_label.setText(message)
        self._task.start(fn, self._succeeded, self._failed, on_progress=self._progressed, on_finished=self._finished)
        self._update_controls()

    def _progressed(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.progress_bar.setRange(0, total)
            self.progress_bar.setValue(min(done, total))
        if message:
            self.progress_label.setText(message)

    def _succeeded(self, message: str) -> None:
        self.progress_label.setText(message)
        self.refresh()
        self.modelsChanged.emit()

    def _failed(self, message: str) -> None:
        self.progress_label.clear()
        self._show_error(message)

    def _finished(self) -> None:
        self.progress_bar.hide()
        self._update_controls()

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()

    def _update_controls(self) -> None:
        idle = not self.busy
        for button in (self.add_folder_button, self.add_gguf_button, self.starter_button):
            button.setEnabled(idle)


def _row_texts(record: ModelRecord) -> list[str]:
    is_starter = record.source == STARTER
    if record.ready:
        ready = "yes"
    elif is_starter:
        ready = "not yet: prepared on first use"
    else:
        ready = "no: the folder is missing or incomplete"
    size = record.size_bytes or 0
    return [
        f"{STARTER_NAME} (starter)" if is_starter else record.name,
        record.source or "",
        record.architecture or "",
        ready,
        "yes" if record.has_chat_template else "no",
        QLocale().formattedDataSize(size, 1) if size else "",
        str(record.path or ""),
    ]
