"""The Home page: what hardware the studio found, library versions, recent runs, how to start.

Finding devices imports torch (seconds on a cold start), so it runs in a
``BackgroundTask``; the page shows "Looking for devices…" until it answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.workers import BackgroundTask, TaskReporter

_GIB = 1024**3

GET_STARTED = (
    "<h2>Welcome to LoRA Studio</h2>"
    "<p>Teach a language model a new style in a few minutes, on the hardware you have:</p>"
    "<ol>"
    "<li>Open the <b>Train</b> page (Ctrl+4).</li>"
    "<li>Keep the <b>starter</b> model and the <b>pirate</b> sample dataset.</li>"
    "<li>Press <b>Start</b> and watch the loss fall.</li>"
    "<li>Open <b>Chat</b> (Ctrl+6), pick the new adapter and talk like a pirate.</li>"
    "</ol>"
)


def _gib(value: Optional[int]) -> str:
    return f"{value / _GIB:.1f} GiB" if value else "unknown"


def _when(started: Optional[float]) -> str:
    return datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else ""


def _find_hardware(reporter: TaskReporter) -> tuple[list[Any], dict[str, str]]:
    from engine.hardware import detect_devices, versions

    return detect_devices(), versions()


def _table(headers: list[str]) -> QTableWidget:
    """A read-only table whose first column (the name) takes the spare width."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
    return table


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            table.setItem(r, c, item)


class HomePage(QWidget):
    hardwareLoaded = Signal()  # the device table shows the latest detection (or why it failed)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._task: Optional[BackgroundTask] = None
        self._hardware_known = False

        welcome = QLabel(GET_STARTED)
        welcome.setWordWrap(True)
        welcome.setTextFormat(Qt.TextFormat.RichText)

        self.devices_table = _table(["Device", "Kind", "Total memory", "Free memory", "bf16"])
        self.devices_table.setAccessibleName("Devices found")
        self.devices_table.setMaximumHeight(140)
        self.hardware_status = QLabel()
        self.hardware_status.setWordWrap(True)
        self.versions_label = QLabel()
        self.versions_label.setWordWrap(True)
        self.versions_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detect_button = QPushButton("Check again")
        self.detect_button.setToolTip("Look for devices again and re-read their free memory")
        self.detect_button.clicked.connect(self.detect_hardware)
        hardware_box = QGroupBox("Hardware")
        hardware_layout = QVBoxLayout(hardware_box)
        status_row = QHBoxLayout()
        status_row.addWidget(self.hardware_status, 1)
        status_row.addWidget(self.detect_button)
        hardware_layout.addLayout(status_row)
        hardware_layout.addWidget(self.devices_table)
        hardware_layout.addWidget(self.versions_label)

        self.runs_table = _table(["Run", "Status", "Started", "Steps", "Final loss"])
        self.runs_table.setAccessibleName("Recent runs")
        self.runs_empty = QLabel("No runs yet: your training runs will be listed here.")
        runs_box = QGroupBox("Recent runs")
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.addWidget(self.runs_empty)
        runs_layout.addWidget(self.runs_table)

        top = QHBoxLayout()
        top.addWidget(welcome, 1, Qt.AlignmentFlag.AlignTop)
        top.addWidget(hardware_box, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(runs_box, 1)

    def refresh(self) -> None:
        """Called when the page is shown: re-read the runs; find the hardware the first time."""
        self.refresh_runs()
        if not self._hardware_known:
            self.detect_hardware()

    def refresh_runs(self) -> None:
        from engine.jobs import list_runs

        rows = []
        for run in list_runs()[:50]:
            steps = f"{run.steps} / {run.total_steps}" if run.total_steps else str(run.steps)
            loss = f"{run.final_loss:.4f}" if run.final_loss is not None else ""
            rows.append([run.name, run.status, _when(run.started), steps, loss])
        _fill(self.runs_table, rows)
        self.runs_empty.setVisible(not rows)
        self.runs_table.setVisible(bool(rows))

    def detect_hardware(self) -> None:
        if self._task is not None:
            return
        self.hardware_status.setText("Looking for devices…")
        self.detect_button.setEnabled(False)
        self._task = BackgroundTask(_find_hardware, parent=self)
        self._task.succeeded.connect(self._show_hardware)
        self._task.failed.connect(self._show_hardware_error)
        self._task.finished.connect(self._task_done)
        self._task.start()

    def _show_hardware(self, result: tuple[list[Any], dict[str, str]]) -> None:
        devices, versions = result
        _fill(
            self.devices_table,
            [
                [d.name, d.kind, _gib(d.total_bytes), _gib(d.free_bytes), "yes" if d.bf16 else "no"]
                for d in devices
            ],
        )
        accelerators = [d for d in devices if d.kind != "cpu"]
        if accelerators:
            self.hardware_status.setText(f"Training will use {accelerators[0].name}.")
        else:
            self.hardware_status.setText(
                "No GPU found: training runs on the CPU. The starter model and the samples still "
                "train in minutes."
            )
        self.versions_label.setText(
            "Versions: " + " · ".join(f"{name} {version}" for name, version in versions.items())
        )
        self._hardware_known = True

    def _show_hardware_error(self, message: str) -> None:
        self.hardware_status.setText(f"Could not look for devices: {message}")

    def _task_done(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.deleteLater()
        self.detect_button.setEnabled(True)
        self.hardwareLoaded.emit()
