"""Help ▸ About: the studio's version, the libraries it runs on and the hardware it found.

Reading package versions takes a few milliseconds and finding devices imports torch
(seconds on a cold start), so both run in a ``BackgroundTask``; the versions arrive
first. Copy puts the whole text on the clipboard for a bug report.
"""

from __future__ import annotations

from typing import Any, Optional

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from engine.core.units import gib
from engine.paths import studio_home
from engine.version import studio_version
from studio.icons import APP_ICON
from studio.logs import log_file
from studio.workers import BackgroundTask, TaskReporter


def _look(reporter: TaskReporter) -> list[Any]:
    from engine.hardware import detect_devices, versions

    reporter.emit(list(versions().items()))  # pairs keep their order across the thread (a dict is sorted)
    return detect_devices()


def describe_device(device: Any) -> str:
    memory = gib(device.total_bytes) if device.total_bytes else "memory unknown"
    extras = [f"compute capability {device.compute_capability}"] if device.compute_capability else []
    extras += [f"driver {device.driver}"] if device.driver else []
    extras.append("bf16" if device.bf16 else "no bf16")
    return f"{device.kind}: {device.name}, {memory} ({', '.join(extras)})"


class AboutDialog(QDialog):
    detected = Signal()  # the hardware is shown (or why it could not be found)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About LoRA Studio")
        self.resize(620, 460)
        icon = QLabel(self)
        app_icon = QIcon(str(APP_ICON))
        icon.setPixmap(app_icon.pixmap(QSize(64, 64), self.devicePixelRatioF()))  # drawn for this screen
        title = QLabel(f"<h2>LoRA Studio</h2><p>Version {studio_version()}</p>"
                       "<p>Fine-tune language models with LoRA on the hardware you have.</p>", self)
        title.setTextFormat(Qt.TextFormat.RichText)
        title.setWordWrap(True)
        header = QHBoxLayout()
        header.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        header.addWidget(title, 1)

        self.details = QPlainTextEdit(self)
        self.details.setReadOnly(True)
        self.details.setAccessibleName("Versions and hardware")
        self._versions: list[tuple[str, str]] = []
        self._hardware = "Looking for devices…"
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy the versions and the hardware, for a bug report")
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text()))
        close_button = QPushButton("Close", self)
        close_button.setDefault(True)
        close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.copy_button)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.details, 1)
        layout.addLayout(buttons)
        self._show()

        self.task = BackgroundTask(_look, parent=self, needs_libraries=False)  # torch, not transformers
        self.task.messages.connect(self._versions_found)
        self.task.succeeded.connect(self._devices_found)
        self.task.failed.connect(lambda message: self._set_hardware(f"Could not look for devices: {message}"))
        self.task.start()

    def text(self) -> str:
        return self.details.toPlainText()

    def _versions_found(self, batch: list) -> None:
        self._versions = batch[-1]
        self._show()

    def _devices_found(self, devices: list[Any]) -> None:
        self._set_hardware("\n".join(f"  {describe_device(device)}" for device in devices))

    def _set_hardware(self, text: str) -> None:
        self._hardware = text
        self._show()
        self.detected.emit()

    def _show(self) -> None:
        lines = [f"LoRA Studio {studio_version()}", "", "Hardware:", self._hardware, "", "Versions:"]
        lines += [f"  {name} {value}" for name, value in self._versions] or ["  reading…"]
        lines += ["", f"App data folder: {studio_home()}", f"Log file: {log_file()}"]
        self.details.setPlainText("\n".join(lines))
