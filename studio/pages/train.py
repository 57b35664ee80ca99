"""The Train page: pick a model and a dataset, see whether the run fits in memory, set the
knobs (simple or advanced), start a run and watch it; resume it, train it further or
export it to run elsewhere.

Starting a run checks it against this machine (``engine.jobs.checks.check_can_run``, which loads
torch) and spawns the child: that runs in a ``BackgroundTask``. The run's events come back
through ``workers.TrainingRunner`` in batches about ten times a second. The memory estimate
is arithmetic on a model's config (well under a millisecond) and is redone on the UI
thread, a moment after the last change.
"""

from __future__ import annotations

import html
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.core.choices import ENDED_WELL, RunStatus
from engine.jobs import launcher
from engine.run.config import RunConfig
from engine.errors import StudioError
from engine.run.events import (
    CheckpointSaved,
    EvalMetrics,
    Event,
    LogLine,
    OutOfMemory,
    Paused,
    Resumed,
    RunFinished,
    RunStarted,
    StepMetrics,
)
from studio.widgets.live_plot import LivePlot
from studio.widgets.memory_bar import MemoryBar
from studio.widgets.pickers import DatasetPicker, ModelPicker
from studio.widgets.run_dialogs import ExportRunDialog, ModulePickerDialog, TrainMoreDialog
from studio.widgets.train_settings import SettingsForm
from studio.widgets.trust_dialog import confirm_model_code
from studio.workers import BackgroundTask, TaskReporter, TrainingRunner, describe_error

_MB = 1024 * 1024
_LEVEL_COLOURS = {"error": "#c0392b", "warning": "#b9770e"}
_ERROR_STYLE = "color: #c0392b; font-weight: 600;"
_ESTIMATE_DELAY_MS = 150

# States of the page's run, announced through ``runStateChanged``.
IDLE, STARTING, RUNNING, PAUSING, PAUSED, RESUMING, STOPPING = (
    "idle", "starting", "running", "pausing", "paused", "resuming", "stopping")


def _eta(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _best_device(reporter: TaskReporter) -> Any:
    from engine.hardware import best_device

    return best_device()


def _memory_title(device: str) -> str:
    # On a CPU nothing separates tensors from the rest of the process: say what is measured.
    return "Memory (whole process)" if device == "cpu" else f"Memory on {device}"


class TrainPage(QWidget):
    runFinished = Signal(object)  # the RunFinished event
    adapterSaved = Signal(str)  # the new adapter's folder
    modelSaved = Signal(str)  # a full fine-tune's folder in the model store
    runStateChanged = Signal(str)  # idle | starting | running | pausing | paused | resuming | stopping
    progressChanged = Signal(str)  # "step N / M · ETA m:ss", for the status bar

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._runner: Optional[TrainingRunner] = None
        self._task: Optional[BackgroundTask] = None
        self._device: Any = None  # engine.hardware.DeviceInfo, once found
        self._device_task: Optional[BackgroundTask] = None
        self._specs: dict[str, Any] = {}
        self._state = IDLE
        self._total_steps = 0
        self._first_step = 0
        self._last_run: Optional[Path] = None  # the run this page showed last, for resume / train more
        self._last_config: Optional[RunConfig] = None
        self._oom_plan: Optional[dict] = None
        self._warming_up = False
        self._estimate_timer = QTimer(self, singleShot=True, interval=_ESTIMATE_DELAY_MS, timeout=self.update_estimate)
        self._build()
        self._set_state(IDLE)
        self.update_estimate()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._warming_up:
            # Whoever opens this page is about to train: have a standby import the training stack
            # now, so that Start begins training at once rather than after 10-15 s of imports.
            self._warming_up = True
            task = BackgroundTask(lambda _reporter: launcher.enable(), parent=self)
            task.finished.connect(task.deleteLater)
            task.start()

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QHBoxLayout(self)
        layout.addWidget(self._build_settings())
        layout.addWidget(self._build_monitor(), 1)
        self._reset_progress()

    def _build_settings(self) -> QWidget:
        """The left column: what to train, the memory it takes, the knobs, the run buttons."""
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
        self.bad_rows_combo.setAccessibleName("Bad rows")
        source_form.addRow("Bad rows", self.bad_rows_combo)
        self._show_data_settings()

        self.memory_bar = MemoryBar()
        self.memory_bar.fitRequested.connect(self.fit_to_device)
        memory_box = QGroupBox("Memory")
        QVBoxLayout(memory_box).addWidget(self.memory_bar)

        self.form = SettingsForm()
        self.form.apply_preset("quick")
        self.form.changed.connect(self._schedule_estimate)
        self.form.chooseModulesRequested.connect(self._choose_modules)
        self.model_picker.currentIndexChanged.connect(lambda _i: self._schedule_estimate())
        self._settings = (source_box, self.form)

        settings = QWidget()
        settings_layout = QVBoxLayout(settings)
        settings_layout.addWidget(source_box)
        settings_layout.addWidget(memory_box)
        settings_layout.addWidget(self.form)
        settings_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(settings)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        # The run buttons stay in view below the scrolling settings.
        column = QWidget()
        column.setMinimumWidth(440)
        column.setMaximumWidth(500)
        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.addWidget(scroll, 1)
        column_layout.addLayout(self._build_buttons())
        column_layout.addWidget(self._build_out_of_memory_panel())
        column_layout.addWidget(self.error_label)
        return column

    def _build_buttons(self) -> QVBoxLayout:
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Check the run fits this machine, then start training with these settings")
        self.start_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current step; Resume goes on from there")
        self.stop_button = QToolButton()
        self.stop_button.setText("Stop")
        self.stop_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.stop_button.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.stop_button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.stop_button.setToolTip("Stop after the current step and save the adapter trained so far "
                                    "(the arrow offers stopping without saving)")
        stop_menu = QMenu(self.stop_button)
        stop_menu.addAction("Stop and save", self.stop_run)
        self.discard_action = stop_menu.addAction("Stop and discard", self.discard_run)
        self.stop_button.setMenu(stop_menu)
        self.start_button.clicked.connect(self.start_run)
        self.pause_button.clicked.connect(self._pause_or_resume)
        self.stop_button.clicked.connect(self.stop_run)
        run_row = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            run_row.addWidget(button)

        self.resume_button = QPushButton("Resume run")
        self.resume_button.setToolTip("Continue the last run from its newest checkpoint")
        self.resume_button.clicked.connect(lambda: self.resume_run(self._last_run))
        self.more_button = QPushButton("Train more…")
        self.more_button.setToolTip("Continue the finished run for more steps or epochs, from where it ended")
        self.more_button.clicked.connect(lambda: self.ask_train_more())
        self.export_button = QPushButton("Run elsewhere…")
        self.export_button.setToolTip("The config file and the command lines that run these settings headless, "
                                      "here or on a machine with more GPUs (torchrun, accelerate)")
        self.export_button.clicked.connect(self._export)
        after_row = QHBoxLayout()
        for button in (self.resume_button, self.more_button, self.export_button):
            after_row.addWidget(button)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        rows = QVBoxLayout()
        rows.addLayout(run_row)
        rows.addLayout(after_row)
        return rows

    def _build_out_of_memory_panel(self) -> QWidget:
        """Shown when a run ran out of memory: what auto-fit suggests, and a button to retry with it."""
        self.oom_panel = QFrame()
        self.oom_panel.setFrameShape(QFrame.Shape.StyledPanel)
        self.oom_label = QLabel()
        self.oom_label.setWordWrap(True)
        self.oom_label.setTextFormat(Qt.TextFormat.RichText)
        self.apply_retry_button = QPushButton("Apply and retry")
        self.apply_retry_button.setToolTip("Change the settings to the plan that fits and start the run again")
        self.apply_retry_button.clicked.connect(self.apply_and_retry)
        dismiss = QPushButton("Dismiss")
        dismiss.clicked.connect(self.oom_panel.hide)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(dismiss)
        buttons.addWidget(self.apply_retry_button)
        layout = QVBoxLayout(self.oom_panel)
        layout.addWidget(self.oom_label)
        layout.addLayout(buttons)
        self.oom_panel.hide()
        return self.oom_panel

    def _build_monitor(self) -> QWidget:
        """The right side: progress, the loss and memory plots, and the log."""
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setAccessibleName("Training progress")
        self.loss_plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss", title="Loss")
        # A step's points reach both plots at once: redrawing the second 40 ms after the first keeps
        # each repaint of the window to one plot, half the time the window cannot answer.
        self.memory_plot = LivePlot(("allocated", "reserved"), x_label="step", y_label="memory (MB)",
                                    title="Memory", redraw_ms=90)
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
        self.monitor_split = QSplitter(Qt.Orientation.Vertical)
        self.monitor_split.addWidget(plots)
        self.monitor_split.addWidget(log_box)
        self.monitor_split.setStretchFactor(0, 3)
        self.monitor_split.setStretchFactor(1, 2)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        progress_label = QLabel("Progress")
        progress_label.setBuddy(self.progress_bar)
        progress_row = QHBoxLayout()
        progress_row.addWidget(progress_label)
        progress_row.addWidget(self.progress_bar, 1)
        right_layout.addLayout(progress_row)
        right_layout.addWidget(self.monitor_split, 1)
        return right

    def _select_pirate_sample(self) -> None:
        combo = self.dataset_picker.combo
        for index in range(combo.count()):
            if "pirate" in combo.itemText(index).lower():
                combo.setCurrentIndex(index)
                return

    # ------------------------------------------------------------ page api
    def refresh(self) -> None:
        """Called when the page is shown: pick up new models and datasets, and the device's free memory."""
        self.model_picker.refresh()
        self.dataset_picker.refresh()
        if not self.busy:
            self.find_device()

    @property
    def run_active(self) -> bool:
        return self._runner is not None

    @property
    def busy(self) -> bool:
        """A run is starting or going (the settings are locked)."""
        return self._runner is not None or self._state == STARTING

    def build_config(self) -> RunConfig:
        """The run the form describes; StudioError says what to fix."""
        model = self.model_picker.current_ref()
        if not model:
            raise StudioError("Choose a base model to train.")
        dataset = self.dataset_picker.current_path()
        if not dataset:
            raise StudioError("Choose a dataset: pick a sample or press Browse… to open a dataset file.")
        if not Path(dataset).exists():
            raise StudioError(f"Dataset file not found: {dataset}")
        config = self._config(model, dataset)
        config.validate()
        return config

    def _config(self, model: str, dataset: str) -> RunConfig:
        return RunConfig(model=model, dataset=dataset, bad_rows=self.bad_rows_combo.currentData(),
                         **self.form.values(), **self._reading_settings(dataset))

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

    # -------------------------------------------------------------- memory
    def find_device(self) -> None:
        """Read the device training would use, and its free memory, in the background."""
        if self._device_task is not None:
            return
        self._device_task = self._background(_best_device, self._on_device, lambda message: None,
                                             attribute="_device_task")

    def _on_device(self, device: Any) -> None:
        self._device = device
        # Titled before a run starts, so that the run's start does not lay the plot out again.
        self.memory_plot.set_title(_memory_title(device.torch_device))
        self.memory_bar.set_device_kind(device.kind)
        self.update_estimate()

    def _schedule_estimate(self) -> None:
        self._estimate_timer.start()

    def _spec(self, model: str) -> Any:
        from engine.models.spec import load_model_spec

        if model not in self._specs:
            self._specs[model] = load_model_spec(model)
        return self._specs[model]

    def update_estimate(self) -> None:
        """Redraw the memory bar for the settings as they are now."""
        from engine.memory.estimate import estimate_memory
        from engine.memory.planning import plan_for

        model = self.model_picker.current_ref()
        if not model:
            self.memory_bar.show_problem("choose a base model")
            return
        if self._device is None:
            self.memory_bar.show_problem("looking for the device…")
            return
        kind = self._device.kind
        try:
            plan = plan_for(self._config(model, self.dataset_picker.current_path() or "-"), kind, self._device.bf16)
            estimate = estimate_memory(self._spec(model), plan, kind)
        except StudioError as exc:
            self.memory_bar.show_problem(str(exc))
            return
        self._estimate = estimate
        self.memory_bar.show_estimate(estimate, self._device.free_bytes, self._device.name)

    def fit_to_device(self) -> None:
        """Auto-fit: measure the dataset's lengths with the model's tokenizer, then find the best plan."""
        if self.busy or self._device is None or self._task is not None:
            return
        try:
            config = self._config(self.model_picker.current_ref(), self.dataset_picker.current_path() or "-")
            spec = self._spec(config.model)
        except StudioError as exc:
            self.memory_bar.show_explanations([f"Cannot fit: {exc}"])
            return
        device = self._device
        self.memory_bar.fit_button.setEnabled(False)
        self.memory_bar.show_explanations(["Measuring the dataset's lengths…"])

        def work(reporter: TaskReporter) -> tuple[RunConfig, Any]:
            return config, _auto_fit(config, spec, device, reporter)

        self._task = self._background(work, self._on_fit, self._on_fit_failed)

    def _on_fit(self, result: tuple[RunConfig, Any]) -> None:
        from engine.memory.planning import config_with_plan

        config, fit = result
        self.memory_bar.fit_button.setEnabled(True)
        if fit.fits:
            fitted = config_with_plan(config, fit.plan)
            self.form.apply({key: value for key, value in fitted.to_dict().items() if key not in ("model", "dataset")})
            self.update_estimate()
        self.memory_bar.show_explanations(fit.explanations, fit.suggestion)

    def _on_fit_failed(self, message: str) -> None:
        self.memory_bar.fit_button.setEnabled(True)
        self.memory_bar.show_explanations([f"Cannot fit: {message}"])

    def _choose_modules(self) -> None:
        model = self.model_picker.current_ref()
        if not model or self._task is not None:
            return

        def names(reporter: TaskReporter) -> list[str]:
            from engine.models.store import resolve_model
            from engine.train.methods import model_module_names

            return model_module_names(resolve_model(model))

        def show(found: list[str]) -> None:
            current = [name.strip() for name in self.form.modules_edit.text().split(",") if name.strip()]
            dialog = ModulePickerDialog(found, current or found, self)
            if dialog.exec() == QDialog.DialogCode.Accepted:
                self.form.modules_edit.setText(",".join(dialog.chosen()))

        self._task = self._background(names, show, lambda message: self._show_error(f"Cannot list modules: {message}"))

    # ------------------------------------------------------------- the run
    def start_run(self) -> None:
        if self.busy:
            return
        try:
            config = self.build_config()
        except StudioError as exc:
            self._refuse(exc)
            return
        if not confirm_model_code(self, config.model):
            return
        from engine.jobs.training_job import TrainingJob

        self._begin(lambda reporter: TrainingJob.start(config), config)

    def resume_run(self, run_dir: Optional[Path]) -> None:
        """Continue a run (this page's last, or one from the Home page) from its newest checkpoint."""
        if self.busy or run_dir is None:
            return
        from engine.jobs.training_job import TrainingJob

        run_dir = Path(run_dir)
        self._begin(self._with_history(run_dir, lambda: TrainingJob.resume(run_dir)), None, clear=False)

    def watch_run(self, run_dir: Path) -> None:
        """Show a run that is still going (its window closed or crashed): replay its curve, then follow it."""
        if self.busy:
            return
        from engine.jobs.training_job import TrainingJob

        try:
            job = TrainingJob.attach(Path(run_dir))
        except StudioError as exc:
            self._refuse(exc)
            return
        self._clear_monitor()
        self._follow(job)

    def train_more(self, run_dir: Path, **amount: Any) -> None:
        """Continue a finished run for ``steps=N`` or ``epochs=E`` more."""
        if self.busy:
            return
        from engine.jobs.training_job import TrainingJob

        run_dir = Path(run_dir)
        self._begin(self._with_history(run_dir, lambda: TrainingJob.train_more(run_dir, **amount)), None,
                    clear=False)

    def _with_history(self, run_dir: Path, spawn: Callable[[], Any]) -> Callable[[TaskReporter], Any]:
        """A start that also reads the run's curve up to its checkpoint, when this page does not
        show it already (a run picked on the Home page): the continued curve then joins it."""
        if self._last_run is not None and Path(self._last_run) == run_dir:
            return lambda reporter: spawn()

        def start(reporter: TaskReporter) -> tuple[Any, Any]:
            from engine.run.checkpoints import last_checkpoint_step
            from engine.jobs.history import read_curves

            curves, until = read_curves(run_dir), last_checkpoint_step(run_dir)
            return spawn(), (curves, until)

        return start

    def _begin(self, start: Callable[[TaskReporter], Any], config: Optional[RunConfig], clear: bool = True) -> None:
        """Check and spawn in the background; the page follows the job once it exists."""
        self._show_error("")
        self.oom_panel.hide()
        self._last_config = config
        self._set_state(STARTING)
        self.progress_bar.setFormat("checking the run against this machine…")

        def started(result: Any) -> None:
            job, history = result if isinstance(result, tuple) else (result, None)
            if clear or history is not None:
                self._clear_monitor()
            if history is not None:
                self._draw_history(*history)
            self._follow(job)

        def refused(message: str) -> None:
            self._set_state(IDLE)
            self._reset_progress()
            self._refuse(StudioError(message))

        self._task = self._background(start, started, refused)

    def _draw_history(self, curves: Any, until: int) -> None:
        """The run's curve so far, up to the checkpoint it goes on from (later steps are redone)."""
        for name, curve in (("train loss", curves.loss), ("eval loss", curves.eval_loss)):
            kept = [(step, value) for step, value in zip(curve.steps, curve.values) if step <= until]
            if kept:
                self.loss_plot.set_points([step for step, _ in kept], [value for _, value in kept], name)

    def _follow(self, job: Any) -> None:
        self._last_run = Path(job.run_dir)
        self.progress_bar.setFormat("starting: loading the model…")
        self._log(f"Run folder: {job.run_dir}")
        self._runner = TrainingRunner(job, parent=self)
        self._runner.events.connect(self._on_events)
        self._runner.finished.connect(self._on_finished)
        self._set_state(RUNNING)

    def _refuse(self, exc: BaseException) -> None:
        if not isinstance(exc, StudioError):
            traceback.print_exception(exc, file=sys.stderr)
        self._show_error(f"Cannot start: {describe_error(exc)}")
        self._log(f"Cannot start: {describe_error(exc)}", "error")

    def stop_run(self) -> None:
        if self._runner is None:
            return
        self._runner.job.stop(save=True)
        self._log("Stopping after the current step; the adapter trained so far will be saved.")
        self._set_state(STOPPING)

    def discard_run(self) -> None:
        if self._runner is None:
            return
        self._runner.job.stop(save=False)
        self._log("Stopping after the current step without saving anything.")
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

    def ask_train_more(self, run_dir: Optional[Path] = None) -> Optional[QDialog]:
        """Ask how much more to train a finished run (this page's last by default), then start.

        The dialog is window-modal and answers through its signals, so the caller (and a test)
        is not held in a nested event loop; it is returned for them.
        """
        from engine.jobs.summary import summarize_run

        run_dir = run_dir or self._last_run
        summary = summarize_run(run_dir) if run_dir else None
        if summary is None:
            return None
        dialog = TrainMoreDialog(summary.name, summary.checkpoint_step, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.accepted.connect(lambda: self.train_more(run_dir, **dialog.amount()))
        dialog.open()
        return dialog

    def _export(self) -> None:
        try:
            config = self.build_config()
        except StudioError as exc:
            self._show_error(f"Cannot export: {exc}")
            return
        ExportRunDialog(config, self).exec()

    def apply_and_retry(self) -> None:
        """Take the out-of-memory plan into the settings and start again."""
        from engine.memory.planning import config_with_plan

        if self._oom_plan is None or self.busy:
            return
        try:
            base = self._last_config or self.build_config()
            fitted = config_with_plan(base, self._oom_plan)
        except StudioError as exc:
            self._show_error(f"Cannot apply the plan: {exc}")
            return
        self.form.apply({key: value for key, value in fitted.to_dict().items() if key not in ("model", "dataset")})
        self.oom_panel.hide()
        self.start_run()

    # --------------------------------------------------------------- events
    def _on_events(self, batch: list[Event]) -> None:
        for event in batch:
            if isinstance(event, StepMetrics):
                self._on_step(event)
            elif isinstance(event, EvalMetrics):
                self.loss_plot.append(event.step, event.eval_loss, "eval loss")
                self._log(f"Eval loss at step {event.step}: {event.eval_loss:.4f}")
            elif isinstance(event, RunStarted):
                self._on_started(event)
            elif isinstance(event, CheckpointSaved):
                self._log(f"Checkpoint saved at step {event.step}: {event.path}")
            elif isinstance(event, LogLine):
                self._log(event.message, event.level)
            elif isinstance(event, OutOfMemory):
                self._on_out_of_memory(event)
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
        self.memory_plot.set_title(_memory_title(event.device))
        self._cover_steps()
        predicted = event.predicted_peak_bytes
        self.memory_plot.set_reference(predicted / _MB if predicted else None, "predicted peak")
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
            self._cover_steps()
        self.progress_bar.setValue(min(event.step, self.progress_bar.maximum()))
        done = event.step - self._first_step
        eta = event.elapsed_s / done * (self._total_steps - event.step) if done > 0 else None
        self._set_progress_text(event.step, eta)

    def _cover_steps(self) -> None:
        # The plots' x axes span the whole run from its start: a moving axis is redrawn from
        # scratch, and the curves' progress across the plot shows how far the run has come.
        for plot in (self.loss_plot, self.memory_plot):
            plot.cover_x(0, max(1, self._total_steps))

    def _on_out_of_memory(self, event: OutOfMemory) -> None:
        from engine.core.units import human_bytes
        from engine.memory.plan import Plan

        self._oom_plan = event.plan
        peak = f" (peak measured: {human_bytes(event.measured_peak_bytes)})" if event.measured_peak_bytes else ""
        lines = "".join(f"<li>{html.escape(line)}</li>" for line in event.explanations)
        if event.plan:
            head = (f"<b>Out of memory at step {event.step}</b>{peak}. These settings fit: "
                    f"{html.escape(Plan.from_dict(event.plan).describe())}.")
        else:
            head = f"<b>Out of memory at step {event.step}</b>{peak}. {html.escape(event.suggestion or '')}"
        self.oom_label.setText(f"{head}<ul>{lines}</ul>")
        self.apply_retry_button.setVisible(event.plan is not None)
        self.oom_panel.show()

    def _on_finished(self, event: RunFinished) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.deleteLater()
        # The last points now; the memory plot's own timer draws its own in a later repaint.
        self.loss_plot.redraw()
        if event.status == RunStatus.COMPLETED:
            self.progress_bar.setValue(self.progress_bar.maximum())
            self.progress_bar.setFormat(f"step {self._total_steps} / {self._total_steps} · done")
            self._log(f"Finished at step {event.step}, final loss {self._loss_text(event)}.")
        elif event.status == RunStatus.STOPPED:
            self.progress_bar.setFormat(f"stopped at step {event.step} / {self._total_steps}")
            self._log(f"Stopped at step {event.step}.")
        else:
            message = event.error or "the training process ended without saying why"
            self.progress_bar.setFormat(f"failed at step {event.step}")
            self._show_error(f"Training failed: {message}")
            self._log(f"Training failed: {message}", "error")
        if event.adapter:
            self._log(f"Adapter saved to the library: {event.adapter}")
        if event.model:
            self._log(f"Fine-tuned model saved to the model store: {event.model}")
        self.progressChanged.emit(self.progress_bar.text())
        self._set_state(IDLE)
        self.runFinished.emit(event)
        if event.adapter:
            self.adapterSaved.emit(event.adapter)
        if event.model:
            self.modelSaved.emit(event.model)

    # -------------------------------------------------------------- helpers
    def _background(self, work: Callable[[TaskReporter], Any], succeeded: Callable[[Any], None],
                    failed: Callable[[str], None], attribute: str = "_task") -> BackgroundTask:
        """Run ``work`` on a worker thread; the attribute holding the task is cleared when it ends."""
        task = BackgroundTask(work, parent=self)
        task.succeeded.connect(succeeded)
        task.failed.connect(failed)

        def done() -> None:
            if getattr(self, attribute) is task:
                setattr(self, attribute, None)
            task.deleteLater()
            self._update_after_run_buttons()

        task.finished.connect(done)
        return task.start()

    def _clear_monitor(self) -> None:
        self.loss_plot.clear()
        self.memory_plot.clear()
        self.memory_plot.set_reference(None)
        self.log_view.clear()
        self._reset_progress()

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
        self.start_button.setText("Checking…" if state == STARTING else "Start")
        self.pause_button.setEnabled(state in (RUNNING, PAUSED))
        self.pause_button.setText(
            {PAUSED: "Resume", PAUSING: "Pausing…", RESUMING: "Resuming…"}.get(state, "Pause")
        )
        self.stop_button.setEnabled(state in (RUNNING, PAUSING, PAUSED, RESUMING))
        self.stop_button.setText("Stopping…" if state == STOPPING else "Stop")
        for box in self._settings:
            box.setEnabled(not active)
        self._update_after_run_buttons()
        self.runStateChanged.emit(state)

    def _update_after_run_buttons(self) -> None:
        """Resume and Train more follow what the last run left behind."""
        from engine.jobs.summary import summarize_run

        idle = self._state == IDLE and self._task is None
        summary = summarize_run(self._last_run) if (idle and self._last_run) else None
        self.resume_button.setEnabled(bool(summary and summary.resumable))
        self.more_button.setEnabled(bool(summary and summary.status in ENDED_WELL
                                         and summary.checkpoint_step))
        self.export_button.setEnabled(idle)

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))

    def _log(self, message: str, level: str = "info") -> None:
        text = html.escape(message).replace("\n", "<br>")
        colour = _LEVEL_COLOURS.get(level)
        if colour:
            text = f'<span style="color:{colour}">{text}</span>'
        self.log_view.appendHtml(text)


def _auto_fit(config: RunConfig, spec: Any, device: Any, reporter: TaskReporter) -> Any:
    """The auto-fit plan for ``config`` on ``device``, sized to the dataset's token lengths when
    the dataset and the model's tokenizer can be read (the plan is sized without them otherwise)."""
    from engine.memory.planning import fit_run, length_stats_of

    stats = None
    if config.dataset != "-" and Path(config.dataset).exists():
        from engine.data.dataset import DataOptions, open_dataset
        from engine.data.scan import scan_dataset
        from engine.models.store import resolve_model
        from engine.models.tokenizer import load_tokenizer

        source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {},
                                                          config.text_split))
        tokenizer = load_tokenizer(resolve_model(config.model))
        report = scan_dataset(source, tokenizer, progress=lambda fraction: reporter.progress(int(fraction * 100), 100),
                              cancelled=lambda: reporter.cancelled)
        if report is not None and report.token_lengths is not None:
            stats = length_stats_of(report.token_lengths)
    return fit_run(config, spec, device.kind, device.free_bytes, stats, bf16=device.bf16)
