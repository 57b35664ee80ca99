"""The Train page: pick a model and a dataset, set the main knobs, start a run and watch it.

The run is a child process (``engine.jobs.TrainingJob``); starting it only spawns
the process, so it happens on the UI thread. ``workers.TrainingRunner`` hands its
events back in batches about ten times a second.
"""

from __future__ import annotations

import html
import re
import sys
import traceback
from pathlib import Path
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.config import METHODS, RunConfig
from engine.errors import StudioError
from engine.events import (
    CheckpointSaved,
    Event,
    LogLine,
    Paused,
    Resumed,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from studio.widgets.live_plot import LivePlot
from studio.widgets.pickers import DatasetPicker, ModelPicker
from studio.workers import TrainingRunner, describe_error

_MB = 1024 * 1024
# What may stand in a learning-rate box while it is typed: digits, a point, an exponent.
_NUMBER_PREFIX = re.compile(r"\d*\.?\d*(?:[eE][-+]?\d*)?")
_METHOD_NAMES = {"lora": "LoRA", "dora": "DoRA"}
_LEVEL_COLOURS = {"error": "#c0392b", "warning": "#b9770e"}
_ERROR_STYLE = "color: #c0392b; font-weight: 600;"

# States of the page's run, announced through ``runStateChanged``.
IDLE, RUNNING, PAUSING, PAUSED, RESUMING, STOPPING = "idle", "running", "pausing", "paused", "resuming", "stopping"

TIPS = {
    "method": (
        "LoRA learns a small low-rank update next to each frozen weight matrix. DoRA also learns "
        "each column's magnitude: often a little better at low ranks, somewhat slower per step. "
        "Start with LoRA; try DoRA when a low rank underfits."
    ),
    "rank": (
        "The size of the low-rank update (r). Higher ranks can learn more but use more memory and "
        "overfit small datasets sooner. 8-16 suits a change of style or tone; try 32-64 to teach "
        "a new task."
    ),
    "alpha": (
        "Scales the update by alpha / rank. Keep it about twice the rank, and change it together "
        "with the rank so the same learning rate keeps working."
    ),
    "lr": (
        "How far each step moves the adapter. LoRA takes higher rates than full fine-tuning: about "
        "1e-4 to 2e-4 for large models, up to 1e-3 for small ones. Lower it when the loss jumps "
        "around or climbs."
    ),
    "steps": (
        "How many optimizer steps to take; each looks at one batch. Raise it while the loss is still "
        "falling at the end; lower it when replies start copying the dataset word for word."
    ),
    "epochs": (
        "How many passes over the whole dataset. 1-3 is typical; more passes over a small dataset "
        "make the model memorise it."
    ),
    "batch": (
        "Examples per step. Larger batches give a smoother loss curve but need more memory: lower "
        "it first when a run runs out of memory."
    ),
    "max_length": (
        "The longest example in tokens; longer ones are cut. Memory grows with it: lower it to fit "
        "in memory, raise it when your conversations are long and get cut."
    ),
    "save_every": (
        "Write a resumable checkpoint every N steps, so a crash or a stop loses little work. "
        "Never: only the finished adapter is saved."
    ),
    "name": (
        "The adapter's name in the library: letters, digits, '.', '_' and '-'. Left empty, it is "
        "named after the date, the dataset and the method."
    ),
}


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box that shows and accepts values like 1e-3, for learning rates."""

    def textFromValue(self, value: float) -> str:
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        stripped = text.strip()
        if not _NUMBER_PREFIX.fullmatch(stripped):
            return QValidator.State.Invalid, text, pos
        try:
            value = float(stripped)
        except ValueError:
            # Part-typed numbers such as "1e" or "2." are on their way to being valid.
            return QValidator.State.Intermediate, text, pos
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:
        # Step by factors of about two (1e-3 -> 2e-3 -> 5e-3), the way learning rates are tuned.
        ladder = (1.0, 2.0, 5.0)
        value = self.value()
        exponent = 0
        while value >= 10:
            value /= 10
            exponent += 1
        while value < 1:
            value *= 10
            exponent -= 1
        position = min(range(len(ladder)), key=lambda i: abs(ladder[i] - value))
        position += steps
        exponent += position // len(ladder)
        self.setValue(ladder[position % len(ladder)] * 10.0**exponent)


def _eta(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainPage(QWidget):
    runFinished = Signal(object)  # the RunFinished event
    adapterSaved = Signal(str)  # the new adapter's folder
    runStateChanged = Signal(str)  # idle | running | pausing | paused | resuming | stopping
    progressChanged = Signal(str)  # "step N / M · ETA m:ss", for the status bar

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._runner: Optional[TrainingRunner] = None
        self._state = IDLE
        self._total_steps = 0
        self._first_step = 0
        self._build()
        self._set_state(IDLE)

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QHBoxLayout(self)
        layout.addWidget(self._build_settings())
        layout.addWidget(self._build_monitor(), 1)
        self._reset_progress()
        self._update_length_inputs()

    def _build_settings(self) -> QWidget:
        """The left column: what to train, the knobs, the run buttons and the error line."""
        self.model_picker = ModelPicker()
        self.model_picker.setAccessibleName("Base model")
        self.dataset_picker = DatasetPicker()
        self._select_pirate_sample()

        source_box = QGroupBox("What to train")
        source_form = QFormLayout(source_box)
        # Labels above the pickers leave the full width for long model names.
        source_form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        source_form.addRow("Base model", self.model_picker)
        source_form.addRow("Dataset", self.dataset_picker)
        # How the Data page reads this dataset (format, columns, validation share...).
        self._data_settings: Optional[dict] = None
        self.data_settings_label = QLabel()
        self.data_settings_label.setWordWrap(True)
        self.data_settings_label.setToolTip("Set on the Data page: the run reads the file the way it is previewed there")
        self.dataset_picker.changed.connect(lambda _path: self._show_data_settings())
        source_form.addRow(self.data_settings_label)
        self.bad_rows_combo = QComboBox()
        self.bad_rows_combo.addItem("Skip them and train on the good rows", "skip")
        self.bad_rows_combo.addItem("Stop the run and show the first", "stop")
        self.bad_rows_combo.setToolTip("What to do when some rows cannot be used (the Data page lists them "
                                       "with their line numbers)")
        source_form.addRow("Bad rows", self.bad_rows_combo)
        self._show_data_settings()

        self.method_combo = QComboBox()
        for method in METHODS:
            self.method_combo.addItem(_METHOD_NAMES.get(method, method), method)
        self.rank_spin = QSpinBox()
        self.rank_spin.setRange(1, 512)
        self.rank_spin.setValue(16)
        self.alpha_spin = QDoubleSpinBox()
        self.alpha_spin.setRange(0.5, 4096)
        self.alpha_spin.setDecimals(1)
        self.alpha_spin.setValue(32)
        self.lr_spin = ScientificSpinBox()
        self.lr_spin.setDecimals(8)
        self.lr_spin.setRange(1e-7, 1.0)
        self.lr_spin.setValue(1e-3)
        length_row = self._build_length_row()

        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 1024)
        self.batch_spin.setValue(4)
        self.max_length_spin = QSpinBox()
        self.max_length_spin.setRange(16, 131_072)
        self.max_length_spin.setSingleStep(64)
        self.max_length_spin.setValue(256)
        self.max_length_spin.setSuffix(" tokens")
        self.save_every_spin = QSpinBox()
        self.save_every_spin.setRange(0, 1_000_000)
        self.save_every_spin.setSingleStep(50)
        self.save_every_spin.setSpecialValueText("never")
        self.save_every_spin.setPrefix("every ")
        self.save_every_spin.setSuffix(" steps")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("automatic")

        settings_box = QGroupBox("Settings")
        form = QFormLayout(settings_box)
        for label, widget, tip in (
            ("Method", self.method_combo, "method"),
            ("LoRA rank", self.rank_spin, "rank"),
            ("LoRA alpha", self.alpha_spin, "alpha"),
            ("Learning rate", self.lr_spin, "lr"),
            ("Train for", length_row, None),
            ("Batch size", self.batch_spin, "batch"),
            ("Max length", self.max_length_spin, "max_length"),
            ("Checkpoints", self.save_every_spin, "save_every"),
            ("Adapter name", self.name_edit, "name"),
        ):
            form.addRow(self._label(label, widget, tip), widget)
        self._settings = (source_box, settings_box)

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Start training with these settings")
        self.start_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current step; Resume goes on from there")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step and save the adapter trained so far")
        self.start_button.clicked.connect(self.start_run)
        self.pause_button.clicked.connect(self._pause_or_resume)
        self.stop_button.clicked.connect(self.stop_run)
        buttons = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            buttons.addWidget(button)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.addWidget(source_box)
        left_layout.addWidget(settings_box)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.error_label)
        left_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(420)
        scroll.setMaximumWidth(480)
        return scroll

    def _build_length_row(self) -> QWidget:
        """Train for N steps or for E epochs: a radio button beside each number."""
        self.by_steps_radio = QRadioButton("Steps")
        self.by_epochs_radio = QRadioButton("Epochs")
        self.by_steps_radio.setChecked(True)
        self._length_group = QButtonGroup(self)
        self._length_group.addButton(self.by_steps_radio)
        self._length_group.addButton(self.by_epochs_radio)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1_000_000)
        self.steps_spin.setValue(60)
        self.epochs_spin = QDoubleSpinBox()
        self.epochs_spin.setRange(0.1, 100)
        self.epochs_spin.setDecimals(1)
        self.epochs_spin.setValue(1.0)
        self.by_steps_radio.toggled.connect(self._update_length_inputs)
        length_row = QWidget()
        length_layout = QHBoxLayout(length_row)
        length_layout.setContentsMargins(0, 0, 0, 0)
        length_layout.addWidget(self.by_steps_radio)
        length_layout.addWidget(self.steps_spin, 1)
        length_layout.addWidget(self.by_epochs_radio)
        length_layout.addWidget(self.epochs_spin, 1)
        for widget, tip in (
            (self.by_steps_radio, "steps"),
            (self.steps_spin, "steps"),
            (self.by_epochs_radio, "epochs"),
            (self.epochs_spin, "epochs"),
        ):
            widget.setToolTip(TIPS[tip])
            widget.setAccessibleName(widget.text() if isinstance(widget, QRadioButton) else f"Train for {tip}")
        return length_row

    def _build_monitor(self) -> QWidget:
        """The right side: progress, the loss and memory plots, and the log."""
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setAccessibleName("Training progress")
        self.loss_plot = LivePlot(("train loss",), x_label="step", y_label="loss", title="Training loss")
        self.memory_plot = LivePlot(
            ("allocated", "reserved"), x_label="step", y_label="memory (MB)", title="Memory"
        )
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setAccessibleName("Training log")

        plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.memory_plot)
        log_box = QWidget()
        log_layout = QVBoxLayout(log_box)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_label = QLabel("Log")
        log_label.setBuddy(self.log_view)
        log_layout.addWidget(log_label)
        log_layout.addWidget(self.log_view)
        right_split = QSplitter(Qt.Orientation.Vertical)
        right_split.addWidget(plots)
        right_split.addWidget(log_box)
        right_split.setStretchFactor(0, 3)
        right_split.setStretchFactor(1, 2)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        progress_label = QLabel("Progress")
        progress_label.setBuddy(self.progress_bar)
        progress_row = QHBoxLayout()
        progress_row.addWidget(progress_label)
        progress_row.addWidget(self.progress_bar, 1)
        right_layout.addLayout(progress_row)
        right_layout.addWidget(right_split, 1)
        return right

    def _label(self, text: str, widget: QWidget, tip: Optional[str]) -> QLabel:
        label = QLabel(text)
        label.setBuddy(widget)
        widget.setAccessibleName(text)
        if tip:
            widget.setToolTip(TIPS[tip])
            label.setToolTip(TIPS[tip])
        return label

    def _select_pirate_sample(self) -> None:
        combo = self.dataset_picker.combo
        for index in range(combo.count()):
            if "pirate" in combo.itemText(index).lower():
                combo.setCurrentIndex(index)
                return

    def _update_length_inputs(self) -> None:
        by_steps = self.by_steps_radio.isChecked()
        self.steps_spin.setEnabled(by_steps)
        self.epochs_spin.setEnabled(not by_steps)

    # ------------------------------------------------------------ page api
    def refresh(self) -> None:
        """Called when the page is shown: pick up new models and datasets."""
        self.model_picker.refresh()
        self.dataset_picker.refresh()

    @property
    def run_active(self) -> bool:
        return self._runner is not None

    def build_config(self) -> RunConfig:
        """The run the form describes; StudioError says what to fix."""
        model = self.model_picker.current_ref()
        if not model:
            raise StudioError("Choose a base model to train.")
        dataset = self.dataset_picker.current_path()
        if not dataset:
            raise StudioError("Choose a dataset: pick a sample or press Browse… to open a JSONL or JSON file.")
        if not Path(dataset).exists():
            raise StudioError(f"Dataset file not found: {dataset}")
        by_steps = self.by_steps_radio.isChecked()
        config = RunConfig(
            model=model,
            dataset=dataset,
            method=self.method_combo.currentData(),
            rank=self.rank_spin.value(),
            alpha=self.alpha_spin.value(),
            lr=self.lr_spin.value(),
            max_steps=self.steps_spin.value() if by_steps else None,
            epochs=self.epochs_spin.value(),
            batch_size=self.batch_spin.value(),
            max_length=self.max_length_spin.value(),
            save_every=self.save_every_spin.value(),
            name=self.name_edit.text().strip() or None,
            bad_rows=self.bad_rows_combo.currentData(),
            **self._reading_settings(dataset),
        )
        config.validate()
        return config

    def set_data_settings(self, settings: Optional[dict]) -> None:
        """Take the dataset and the reading choices made on the Data page (None: none made)."""
        self._data_settings = settings
        if settings and settings["dataset"] != self.dataset_picker.current_path():
            self.dataset_picker.set_path(settings["dataset"])
        self._show_data_settings()

    def _reading_settings(self, dataset: str) -> dict:
        """The Data page's choices when they are about this dataset; otherwise detect everything."""
        settings = self._data_settings
        if not settings or settings["dataset"] != dataset:
            return {}
        return {key: value for key, value in settings.items() if key != "dataset"}

    def _show_data_settings(self) -> None:
        settings = self._reading_settings(self.dataset_picker.current_path())
        if not settings:
            self.data_settings_label.setText("Format and columns: detected (adjust them on the Data page)")
            return
        parts = [f"format {settings['data_format'] or 'detected'}"]
        if settings["columns"]:
            parts.append("columns " + ", ".join(f"{k}={v}" for k, v in sorted(settings["columns"].items())))
        parts.append("loss on every token" if settings["train_on"] == "all" else "loss on the replies")
        if settings["val_fraction"]:
            parts.append(f"{settings['val_fraction']:.0%} held out for eval loss")
        self.data_settings_label.setText("From the Data page: " + "; ".join(parts))

    def start_run(self) -> None:
        if self.run_active:
            return
        self._show_error("")
        try:
            config = self.build_config()
            from engine.jobs import TrainingJob

            job = TrainingJob.start(config)
        except Exception as exc:  # one readable message in the page, whatever went wrong
            if not isinstance(exc, StudioError):
                traceback.print_exc(file=sys.stderr)
            self._show_error(f"Cannot start: {describe_error(exc)}")
            self._log(f"Cannot start: {describe_error(exc)}", "error")
            return
        self.loss_plot.clear()
        self.memory_plot.clear()
        self.log_view.clear()
        self._reset_progress()
        self.progress_bar.setFormat("starting: loading the model…")
        self._log(f"Run folder: {job.run_dir}")
        self._runner = TrainingRunner(job, parent=self)
        self._runner.events.connect(self._on_events)
        self._runner.finished.connect(self._on_finished)
        self._set_state(RUNNING)

    def stop_run(self) -> None:
        if self._runner is None:
            return
        self._runner.job.stop(save=True)
        self._log("Stopping after the current step; the adapter trained so far will be saved.")
        self._set_state(STOPPING)

    def _pause_or_resume(self) -> None:
        if self._runner is None:
            return
        if self._state == PAUSED:
            self._runner.job.resume_training()
            self._set_state(RESUMING)
        elif self._state == RUNNING:
            self._runner.job.pause()
            self._set_state(PAUSING)

    # --------------------------------------------------------------- events
    def _on_events(self, batch: list[Event]) -> None:
        for event in batch:
            if isinstance(event, StepMetrics):
                self._on_step(event)
            elif isinstance(event, RunStarted):
                self._on_started(event)
            elif isinstance(event, CheckpointSaved):
                self._log(f"Checkpoint saved at step {event.step}: {event.path}")
            elif isinstance(event, LogLine):
                self._log(event.message, event.level)
            elif isinstance(event, Paused):
                self._log(f"Paused at step {event.step}.")
                if self._state != STOPPING:
                    self._set_state(PAUSED)
            elif isinstance(event, Resumed):
                self._log(f"Resumed at step {event.step}.")
                if self._state != STOPPING:
                    self._set_state(RUNNING)

    def _on_started(self, event: RunStarted) -> None:
        self._total_steps = event.total_steps
        self._first_step = event.resumed_from_step
        self.progress_bar.setRange(0, max(1, event.total_steps))
        self.progress_bar.setValue(event.resumed_from_step)
        self._set_progress_text(event.resumed_from_step, None)
        # On a CPU nothing separates tensors from the rest of the process: say what is measured.
        memory_title = "Memory (whole process)" if event.device == "cpu" else f"Memory on {event.device}"
        self.memory_plot.plot_item.setTitle(memory_title, color="#333")
        self._log(f"Training on {event.device}: {event.train_examples} examples, {event.total_steps} steps.")

    def _on_step(self, event: StepMetrics) -> None:
        self.loss_plot.append(event.step, event.loss)
        if event.memory_allocated is not None:
            self.memory_plot.append(event.step, event.memory_allocated / _MB, "allocated")
        if event.memory_reserved is not None:
            self.memory_plot.append(event.step, event.memory_reserved / _MB, "reserved")
        if event.total_steps and event.total_steps != self._total_steps:
            self._total_steps = event.total_steps
            self.progress_bar.setRange(0, event.total_steps)
        self.progress_bar.setValue(min(event.step, self.progress_bar.maximum()))
        done = event.step - self._first_step
        eta = event.elapsed_s / done * (self._total_steps - event.step) if done > 0 else None
        self._set_progress_text(event.step, eta)

    def _on_finished(self, event: RunFinished) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.deleteLater()
        self.loss_plot.redraw()
        self.memory_plot.redraw()
        if event.status == "completed":
            self.progress_bar.setValue(self.progress_bar.maximum())
            self.progress_bar.setFormat(f"step {self._total_steps} / {self._total_steps} · done")
            self._log(f"Finished at step {event.step}, final loss {self._loss_text(event)}.")
        elif event.status == "stopped":
            self.progress_bar.setFormat(f"stopped at step {event.step} / {self._total_steps}")
            self._log(f"Stopped at step {event.step}.")
        else:
            message = event.error or "the training process ended without saying why"
            self.progress_bar.setFormat(f"failed at step {event.step}")
            self._show_error(f"Training failed: {message}")
            self._log(f"Training failed: {message}", "error")
        if event.adapter:
            self._log(f"Adapter saved to the library: {event.adapter}")
        self.progressChanged.emit(self.progress_bar.text())
        self._set_state(IDLE)
        self.runFinished.emit(event)
        if event.adapter:
            self.adapterSaved.emit(event.adapter)

    # -------------------------------------------------------------- helpers
    @staticmethod
    def _loss_text(event: RunFinished) -> str:
        return f"{event.final_loss:.4f}" if event.final_loss is not None else "not recorded"

    def _reset_progress(self) -> None:
        self._total_steps = 0
        self._first_step = 0
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("no run yet")

    def _set_progress_text(self, step: int, eta_s: Optional[float]) -> None:
        text = f"step {step} / {self._total_steps}"
        text += f" · ETA {_eta(eta_s)}" if eta_s is not None else " · ETA estimating…"
        self.progress_bar.setFormat(text)
        self.progressChanged.emit(text)

    def _set_state(self, state: str) -> None:
        self._state = state
        active = state != IDLE
        self.start_button.setEnabled(not active)
        self.pause_button.setEnabled(state in (RUNNING, PAUSED))
        self.pause_button.setText(
            {PAUSED: "Resume", PAUSING: "Pausing…", RESUMING: "Resuming…"}.get(state, "Pause")
        )
        self.stop_button.setEnabled(state in (RUNNING, PAUSING, PAUSED, RESUMING))
        self.stop_button.setText("Stopping…" if state == STOPPING else "Stop")
        for box in self._settings:
            box.setEnabled(not active)
        self.runStateChanged.emit(state)

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))

    def _log(self, message: str, level: str = "info") -> None:
        text = html.escape(message).replace("\n", "<br>")
        colour = _LEVEL_COLOURS.get(level)
        if colour:
            text = f'<span style="color:{colour}">{text}</span>'
        self.log_view.appendHtml(text)
