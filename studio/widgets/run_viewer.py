"""A run, or several side by side: the full curves and the configuration, opened from Home.

One run shows its training and eval loss, its learning rate and its ``config.json``.
Several runs show their loss curves overlaid and the settings in which they differ.
The run folders are read in a ``BackgroundTask`` (a long run's events take a moment);
a folder deleted meanwhile is reported in the window, and through ``runsGone`` so the
runs list can drop it, never with an error dialog.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from engine.jobs.history import RunCurves, RunRecord, format_duration, read_config, read_curves, read_record
from studio.widgets.live_plot import LivePlot
from studio.workers import BackgroundTask


@dataclass
class RunDetails:
    """What the viewer shows of one run; ``record`` is None when its folder is gone."""

    run_dir: str
    record: Optional[RunRecord]
    curves: Optional[RunCurves] = None
    config: Optional[dict] = None
    config_error: Optional[str] = None


def read_details(run_dir: str) -> RunDetails:
    record = read_record(Path(run_dir))
    if record is None:
        return RunDetails(run_dir, None)
    try:
        config, error = read_config(Path(run_dir)), None
    except StudioError as exc:
        config, error = None, str(exc)
    return RunDetails(run_dir, record, read_curves(Path(run_dir)), config, error)


def differing_settings(configs: list[dict]) -> list[tuple[str, list[str]]]:
    """The settings whose values are not the same in every config, with each config's value."""
    keys = sorted({key for config in configs for key in config})
    rows = []
    for key in keys:
        values = [json.dumps(config[key]) if key in config else "–" for config in configs]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def _summary(record: RunRecord) -> str:
    run = record.summary
    steps = f"{run.steps} / {run.total_steps}" if run.total_steps else str(run.steps)
    parts = [run.status, f"step {steps}"]
    if record.duration_s is not None:
        parts.append(format_duration(record.duration_s))
    if run.final_loss is not None:
        parts.append(f"{'final' if run.loss_is_final else 'latest'} loss {run.final_loss:.4f}")
    return " · ".join(parts)


class RunViewer(QDialog):
    loaded = Signal()  # the runs are shown (or what is gone is said)
    runsGone = Signal(list)  # the run folders that no longer exist

    def __init__(self, run_dirs: list[str], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.run_dirs = list(run_dirs)
        self.names = [Path(run_dir).name for run_dir in self.run_dirs]
        comparing = len(self.run_dirs) > 1
        self.setWindowTitle(f"Comparing {len(self.names)} runs" if comparing else f"Run {self.names[0]}")
        self.resize(1000, 640)
        self.status_label = QLabel("Reading the run…" if not comparing else "Reading the runs…", self)
        self.status_label.setWordWrap(True)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tabs = QTabWidget(self)
        if comparing:
            self.loss_plot = LivePlot(self.names, x_label="step", y_label="loss", title="Training loss")
            self.eval_plot = LivePlot(self.names, x_label="step", y_label="loss", title="Eval loss")
            self.settings_table = QTableWidget(0, len(self.names) + 1, self)
            self.settings_table.setHorizontalHeaderLabels(["Setting", *self.names])
            self.settings_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
            self.settings_table.verticalHeader().setVisible(False)
            self.tabs.addTab(self.loss_plot, "Loss")
            self.tabs.addTab(self.eval_plot, "Eval loss")
            self.tabs.addTab(self.settings_table, "Settings that differ")
        else:
            self.loss_plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss", title="Loss")
            self.lr_plot = LivePlot(("learning rate",), x_label="step", y_label="learning rate",
                                    title="Learning rate")
            self.config_view = QPlainTextEdit(self)
            self.config_view.setReadOnly(True)
            self.config_view.setAccessibleName("Run configuration")
            curves = QWidget(self)
            curves_layout = QHBoxLayout(curves)
            curves_layout.setContentsMargins(0, 0, 0, 0)
            curves_layout.addWidget(self.loss_plot, 3)
            curves_layout.addWidget(self.lr_plot, 2)
            self.tabs.addTab(curves, "Curves")
            self.tabs.addTab(self.config_view, "Config")
        close_button = QPushButton("Close", self)
        close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status_label)
        layout.addWidget(self.tabs, 1)
        layout.addLayout(buttons)

        dirs = self.run_dirs
        self.task = BackgroundTask(lambda _reporter: [read_details(run_dir) for run_dir in dirs], parent=self,
                                   needs_libraries=False)
        self.task.succeeded.connect(self._show)
        self.task.failed.connect(self._failed)
        self.task.start()

    def _show(self, details: list[RunDetails]) -> None:
        gone = [detail.run_dir for detail in details if detail.record is None]
        present = [detail for detail in details if detail.record is not None]
        if not present:
            self.tabs.hide()
            self.status_label.setText("This run's folder is gone: it was deleted or moved outside the studio."
                                      if len(details) == 1 else
                                      "These runs' folders are gone: they were deleted or moved outside the studio.")
        elif len(self.run_dirs) == 1:
            self._show_one(present[0])
        else:
            self._show_many(present, gone)
        if gone:
            self.runsGone.emit(gone)
        self.loaded.emit()

    def _show_one(self, detail: RunDetails) -> None:
        record, curves = detail.record, detail.curves
        run = record.summary
        text = (f"<b>{html.escape(run.name)}</b> · {html.escape(_summary(record))}<br>model "
                f"{html.escape(run.model)} · dataset {html.escape(Path(run.dataset).name)}")
        if run.error:
            text += f"<br>Error: {html.escape(run.error)}"
        self.status_label.setText(text)
        self.loss_plot.set_points(curves.loss.steps, curves.loss.values, "train loss")
        self.loss_plot.set_points(curves.eval_loss.steps, curves.eval_loss.values, "eval loss")
        self.lr_plot.set_points(curves.learning_rate.steps, curves.learning_rate.values)
        if detail.config is not None:
            self.config_view.setPlainText(json.dumps(detail.config, indent=2))
        else:
            self.config_view.setPlainText(detail.config_error)

    def _show_many(self, present: list[RunDetails], gone: list[str]) -> None:
        lines = [f"{Path(detail.run_dir).name}: {_summary(detail.record)}" for detail in present]
        lines += [f"{Path(run_dir).name}: folder gone (deleted outside the studio)" for run_dir in gone]
        self.status_label.setText("\n".join(lines))
        for detail in present:
            name = Path(detail.run_dir).name
            self.loss_plot.set_points(detail.curves.loss.steps, detail.curves.loss.values, name)
            self.eval_plot.set_points(detail.curves.eval_loss.steps, detail.curves.eval_loss.values, name)
        configs = [detail.config or {} for detail in present]
        rows = differing_settings(configs)
        self.settings_table.setColumnCount(len(present) + 1)
        self.settings_table.setHorizontalHeaderLabels(["Setting", *(Path(d.run_dir).name for d in present)])
        self.settings_table.setRowCount(len(rows))
        for row, (key, values) in enumerate(rows):
            for column, text in enumerate([key, *values]):
                self.settings_table.setItem(row, column, QTableWidgetItem(text))

    def _failed(self, message: str) -> None:
        self.tabs.hide()
        self.status_label.setText(f"Could not read the run: {message}")
        self.loaded.emit()
