"""The "Serve elsewhere…" dialog: export the served model's adapters as a folder that vLLM's multi-LoRA
server runs on a machine with a GPU (``engine.serve.vllm_export``), and show the command.

The export copies the adapters' files and may first read the base's tokenizer (for an adapter that
records no chat template): a moment for small adapters, longer for large ones, so it runs in a
background task and the window stays responsive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Signal
from PySide6.QtGui import QCloseEvent, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.paths import export_path
from studio.workers import BackgroundTask, TaskReporter, TaskSlot

_ERROR_COLOUR = "#c0392b"


def default_folder(adapters: list[str]) -> Path:
    """A folder that does not exist yet in the studio's vLLM exports, named after the adapters."""
    stem = adapters[0] if len(adapters) == 1 else f"{adapters[0]}-and-{len(adapters) - 1}-more"
    folder, number = export_path(stem, "vllm"), 1
    while folder.exists():
        number += 1
        folder = export_path(f"{stem}-{number}", "vllm")
    return folder


class ServeElsewhereDialog(QDialog):
    """Write the vLLM folder for ``adapters`` over ``model`` and show how to start it."""

    exported = Signal(str)  # the folder written

    def __init__(self, model: str, adapters: list[str], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Serve elsewhere with vLLM")
        self.setMinimumWidth(680)
        self.model, self.adapters = model, list(adapters)
        self._task = TaskSlot()
        intro = QLabel(
            "Writes a folder that serves these adapters over one copy of the base model on vLLM's multi-LoRA "
            "server, on a machine with a GPU: the adapters' files, the chat template they were trained with, "
            "serve.sh, and a README telling how to start it and call it. Each request picks an adapter by "
            "naming it in \"model\".", self)
        intro.setWordWrap(True)
        self.adapters_label = QLabel(", ".join(self.adapters) or "none chosen", self)
        self.adapters_label.setWordWrap(True)
        self.output_edit = QLineEdit(str(default_folder(self.adapters or ["adapters"])), self)
        self.output_edit.setAccessibleName("Output folder")
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        where = QHBoxLayout()
        where.addWidget(self.output_edit, 1)
        where.addWidget(browse)
        form = QFormLayout()
        form.addRow("Base model", QLabel(model, self))
        form.addRow("Adapters", self.adapters_label)
        form.addRow("Output folder", where)

        self.status_label = QLabel(self)
        self.status_label.setWordWrap(True)
        self.folder_view = QLineEdit(self)
        self.folder_view.setReadOnly(True)
        self.folder_view.setAccessibleName("Exported folder")
        self.folder_view.setPlaceholderText("The folder appears here once it is written.")
        self.command_view = QPlainTextEdit(self)
        self.command_view.setReadOnly(True)
        self.command_view.setAccessibleName("vLLM command")
        self.command_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.command_view.setPlaceholderText("The vllm serve command appears here once the folder is written.")
        self.copy_button = QPushButton("Copy command", self)
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command_view.toPlainText()))
        self.export_button = QPushButton("Export", self)
        self.export_button.setDefault(True)
        self.export_button.setEnabled(bool(self.adapters))
        self.export_button.clicked.connect(self.export)
        close = QPushButton("Close", self)
        close.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(close)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.status_label)
        layout.addWidget(QLabel("Folder", self))
        layout.addWidget(self.folder_view)
        layout.addWidget(QLabel("Start it there with ./serve.sh, or:", self))
        layout.addWidget(self.command_view, 1)
        layout.addLayout(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder to put the vLLM export in",
                                                  str(Path(self.output_edit.text()).parent))
        if folder:
            self.output_edit.setText(str(Path(folder) / Path(self.output_edit.text()).name))

    @property
    def busy(self) -> bool:
        return self._task.busy

    def export(self) -> BackgroundTask:
        model, adapters = self.model, self.adapters
        output = Path(self.output_edit.text().strip()).expanduser()

        def work(_reporter: TaskReporter) -> Any:
            from engine.serve.vllm_export import export_vllm

            return export_vllm(model, adapters, output)

        self.status_label.setText("Writing the folder…")
        self.status_label.setStyleSheet("")
        task = self._task.start(work, self._exported, self._failed, on_finished=self._finished)
        self._set_busy(True)
        return task

    def _exported(self, export: Any) -> None:
        self.status_label.setText(f"Written: {len(export.adapters)} adapter(s) over {export.base}, "
                                  f"--max-lora-rank {export.max_lora_rank}. Copy the folder to the GPU machine.")
        self.folder_view.setText(str(export.folder))
        self.command_view.setPlainText(export.shell_command)
        self.copy_button.setEnabled(True)
        self.exported.emit(str(export.folder))

    def _failed(self, message: str) -> None:
        self.status_label.setText(message)
        self.status_label.setStyleSheet(f"color: {_ERROR_COLOUR};")

    def _finished(self) -> None:
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.export_button, self.output_edit):
            widget.setEnabled(not busy)

    def reject(self) -> None:
        # An export under way is file copies into a hidden folder: let it end rather than
        # leave a thread behind (it appears whole or not at all).
        self._task.join()
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.reject()
        event.accept()
