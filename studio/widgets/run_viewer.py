"""A run, or several side by side: the full curves and the configuration, opened from Home.

One run shows its training and eval loss, its learning rate and its settings (``config.json``),
named as the Train page's form names them.
Several runs show their loss curves overlaid and the settings in which they differ.
The run folders are read in a ``BackgroundTask`` (a long run's events take a moment);
a folder deleted meanwhile is reported in the window, and through ``runsGone`` so the
runs list can drop it, never with an error dialog.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.core.choices import TRACKER_LABELS
from engine.errors import StudioError
from engine.jobs.history import RunCurves, RunRecord, format_duration, read_config, read_curves, read_record
from engine.run.rundir import RunDir
from studio.widgets.live_plot import LivePlot
from studio.widgets.preference_plots import PreferencePlots
from studio.widgets.train_settings import setting_label, setting_tip
from studio.workers import BackgroundTask


@dataclass
class RunDetails:
    """What the viewer shows of one run; ``record`` is None when its folder is gone."""

    run_dir: str
    record: Optional[RunRecord]
    curves: Optional[RunCurves] = None
    config: Optional[dict] = None
    config_error: Optional[str] = None
    trackers: dict[str, Path] = field(default_factory=dict)  # the experiment trackers' folders it wrote


def read_details(run_dir: str) -> RunDetails:
    record = read_record(Path(run_dir))
    if record is None:
        return RunDetails(run_dir, None)
    try:
        config, error = read_config(Path(run_dir)), None
    except StudioError as exc:
        config, error = None, str(exc)
    return RunDetails(run_dir, record, read_curves(Path(run_dir)), config, error,
                      RunDir(run_dir).tracker_folders())


def differing_settings(configs: list[dict]) -> list[tuple[str, list[str]]]:
    """The settings whose values are not the same in every config, with each config's value
    as shown (``–`` where a config lacks the setting), in the configs' own order."""
    keys = list(dict.fromkeys(key for config in configs for key in config))
    rows = []
    for key in keys:
        values = [setting_text(config[key]) if key in config else "–" for config in configs]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def setting_text(value: Any) -> str:
    """A setting's value in words: yes/no for switches, "none" for unset, text without quotes."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):  # e.g. the trackers it reports to
        return ", ".join(value) or "none"
    return json.dumps(value)


def fill_settings(table: QTableWidget, rows: list[tuple[str, list[str]]]) -> None:
    """One row per setting: its name as the Train page's form says it (its tip as tooltip), then the values."""
    table.setRowCount(len(rows))
    for row, (key, values) in enumerate(rows):
        for column, text in enumerate([setting_label(key), *values]):
            item = QTableWidgetItem(text)
            item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
            item.setToolTip(setting_tip(key) if column == 0 else text)
            table.setItem(row, column, item)


def _settings_table(columns: list[str], parent: QWidget) -> QTableWidget:
    table = QTableWidget(0, len(columns) + 1, parent)
    table.setHorizontalHeaderLabels(["Setting", *columns])
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    table.verticalHeader().setVisible(False)
    return table


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
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                                  | Qt.TextInteractionFlag.LinksAccessibleByMouse)
        self.status_label.setOpenExternalLinks(True)
        self.tabs = QTabWidget(self)
        if comparing:
            self.loss_plot = LivePlot(self.names, x_label="step", y_label="loss", title="Training loss")
            self.eval_plot = LivePlot(self.names, x_label="step", y_label="loss", title="Eval loss")
            self.settings_table = _settings_table(self.names, self)
            self.tabs.addTab(self.loss_plot, "Loss")
            self.tabs.addTab(self.eval_plot, "Eval loss")
            self.tabs.addTab(self.settings_table, "Settings that differ")
        else:
            self.loss_plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss", title="Loss")
            self.lr_plot = LivePlot(("learning rate",), x_label="step", y_label="learning rate",
                                    title="Learning rate")
            self.settings_table = _settings_table(["Value"], self)
            self.settings_table.setAccessibleName("Run settings")
            curves = QWidget(self)
            curves_layout = QHBoxLayout(curves)
            curves_layout.setContentsMargins(0, 0, 0, 0)
            curves_layout.addWidget(self.loss_plot, 3)
            curves_layout.addWidget(self.lr_plot, 2)
            self.tabs.addTab(curves, "Curves")
            # A preference run's rewards and accuracy: a tab of their own, added once the run shows some.
            self.preference_plots = PreferencePlots(self)
            self.preference_plots.hide()
            self.tabs.addTab(self.settings_table, "Settings")
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
        if detail.trackers:
            # Each opens in the file manager: what tensorboard --logdir, mlflow ui or wandb sync is pointed at.
            links = " · ".join(f'<a href="{QUrl.fromLocalFile(str(folder)).toString()}">'
                               f'{html.escape(TRACKER_LABELS[name])} folder</a>'
                               for name, folder in detail.trackers.items())
            text += f"<br>Experiment trackers: {links}"
        self.status_label.setText(text)
        self.loss_plot.set_points(curves.loss.steps, curves.loss.values, "train loss")
        self.loss_plot.set_points(curves.eval_loss.steps, curves.eval_loss.values, "eval loss")
        self.lr_plot.set_points(curves.learning_rate.steps, curves.learning_rate.values)
        if self.preference_plots.set_curves(curves):
            self.tabs.insertTab(1, self.preference_plots, "Rewards")
        if detail.config is not None:
            fill_settings(self.settings_table, [(key, [setting_text(value)]) for key, value in detail.config.items()])
        else:
            self.status_label.setText(f"{text}<br>Its settings could not be read: {html.escape(detail.config_error)}")

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
        fill_settings(self.settings_table, rows)

    def _failed(self, message: str) -> None:
        self.tabs.hide()
        self.status_label.setText(f"Could not read the run: {message}")
        self.loaded.emit()
