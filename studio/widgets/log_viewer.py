"""The Logs window: the studio's own log (``studio.logs``), following it as it grows, and a
Copy button for bug reports.

It reads the file on the UI thread, a few new bytes every half second, the way
``engine.run.events.EventTail`` follows a run: nothing that logs, on whatever thread, ever
talks to this window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from studio.logs import log_file, read_from, read_tail

SHOWN_BYTES = 512 * 1024  # the newest part of a long log; the file holds the rest
FOLLOW_MS = 500


class LogViewer(QDialog):
    def __init__(self, parent: Optional[QWidget] = None, path: Optional[Path] = None) -> None:
        super().__init__(parent)
        self.path = Path(path) if path is not None else log_file()
        self.setWindowTitle("LoRA Studio log")
        self.resize(900, 560)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setAccessibleName("Log")
        where = QLabel(f"Kept in {self.path}", self)
        where.setWordWrap(True)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the whole log shown here, to paste it into a bug report")
        self.copy_button.clicked.connect(self.copy)
        folder_button = QPushButton("Open folder", self)
        folder_button.setToolTip("Show the log files in the file manager")
        folder_button.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path.parent))))
        close_button = QPushButton("Close", self)
        close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(where, 1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(folder_button)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addLayout(buttons)

        text, self._offset = read_tail(self.path, SHOWN_BYTES)
        self.text.setPlainText(text.rstrip("\n") if text else "The log is empty.")
        self._empty = not text
        # At the newest line, and at its start: the end of the last line is scrolled sideways
        # past the start of every other line when lines do not wrap.
        self.text.moveCursor(self.text.textCursor().MoveOperation.End)
        self.text.moveCursor(self.text.textCursor().MoveOperation.StartOfBlock)
        self._timer = QTimer(self)
        self._timer.setInterval(FOLLOW_MS)
        self._timer.timeout.connect(self.follow)
        self._timer.start()
        self._copied = QTimer(self)  # how long the Copy button says "Copied"
        self._copied.setSingleShot(True)
        self._copied.setInterval(1500)
        self._copied.timeout.connect(lambda: self.copy_button.setText("Copy"))

    def follow(self) -> None:
        """Show what was logged since the last look."""
        text, self._offset, restarted = read_from(self.path, self._offset)
        if restarted or (self._empty and text):
            self.text.clear()
            self._empty = False
        if text:
            self.text.appendPlainText(text.rstrip("\n"))

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
        self.copy_button.setText("Copied")
        self._copied.start()
