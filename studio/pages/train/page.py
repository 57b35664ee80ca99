"""The Train page: pick a model and a dataset, see whether the run fits in memory, set the
knobs (simple or advanced), start a run and watch it; resume it, train it further or
export it to run elsewhere.

The page assembles the settings column (the pickers, ``SettingsForm``, the memory bar and the
run buttons), the ``RunMonitor`` and the ``RunController`` that owns the run's state. Starting
a run checks it against this machine (``engine.jobs.checks.check_can_run``, which loads
torch) and spawns the child: that runs in a background task. The run's events come back
through ``workers.TrainingRunner`` in batches about ten times a second, and the buttons follow
what they said. The memory estimate is arithmetic on a model's config (well under a
millisecond) and is redone on the UI thread, a moment after the last change.
"""

from __future__ import annotations

import html
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.data.formats import FORMATS
from engine.data.preference import default_objective, objective_problem
from engine.errors import StudioError
from engine.jobs import launcher
from engine.run.config import RunConfig
from engine.core.choices import OBJECTIVE_LABELS, PREFERENCE_FORMATS, RunStatus
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
from studio.pages.train.controller import RunController, RunState
from studio.pages.train.evaluation import RunEvaluation
from studio.pages.train.fitting import auto_fit, best_device
from studio.pages.train.monitor import RunMonitor, failure_message
from studio.widgets.memory_bar import MemoryBar
from studio.widgets.pickers import DatasetPicker, ModelPicker
from studio.widgets.run_dialogs import ExportRunDialog, ModulePickerDialog, TrainMoreDialog
from studio.widgets.train_settings import SettingsForm, library_adapters, refusal, setting_label, setting_tip
from studio.widgets.trust_dialog import confirm_model_code
from studio.workers import BackgroundTask, TaskReporter, TaskSlot, TrainingRunner, describe_error

_ERROR_STYLE = "color: #c0392b; font-weight: 600;"
_ESTIMATE_DELAY_MS = 150
RESUME_TIP = "Continue the last run from its newest checkpoint"
NO_HELD_OUT_TIP = ("Needs a validation share: with no validation split no rows are held out to score the adapter "
                   "on. Hold some out on the Data page.")


class TrainPage(QWidget):
    runFinished = Signal(object)  # the RunFinished event
    adapterSaved = Signal(str)  # the new adapter's folder
    modelSaved = Signal(str)  # a full fine-tune's folder in the model store
    runStateChanged = Signal(str)  # a RunState's value: idle | starting | running | pausing | paused | resuming | stopping
    progressChanged = Signal(str)  # "step N / M · ETA m:ss", for the status bar
    evaluationFinished = Signal(str)  # a finished run's evaluation of itself, in one line (headline or why none)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.controller = RunController(self)
        self.controller.stateChanged.connect(self._show_state)
        self.controller.events.connect(self._on_events)
        self.controller.finished.connect(self._on_finished)
        self.monitor = RunMonitor()
        self.monitor.progressChanged.connect(self.progressChanged)
        # A completed run's evaluation of itself against the base (engine.eval.after_run).
        self.evaluation = RunEvaluation(self)
        self.evaluation.progress.connect(self.monitor.show_evaluation_progress)
        self.evaluation.ended.connect(self._on_evaluated)
        self.monitor.stop_evaluation_button.clicked.connect(self.stop_evaluation)
        # The monitor's parts, by the names the window and the tests use.
        self.progress_bar = self.monitor.progress_bar
        self.loss_plot = self.monitor.loss_plot
        self.memory_plot = self.monitor.memory_plot
        self.log_view = self.monitor.log_view
        # Checking and spawning a run; and the settings' own work (auto-fit, listing a model's
        # modules). The buttons that follow the last run wait for both.
        self._start_task = TaskSlot(self._update_after_run_buttons)
        self._settings_task = TaskSlot(self._update_after_run_buttons)
        self._device_lookup = TaskSlot()
        self._warm_up = TaskSlot()
        self._device: Any = None  # engine.hardware.DeviceInfo, once found
        self._specs: dict[str, Any] = {}
        self._last_config: Optional[RunConfig] = None
        self._run_config: Optional[RunConfig] = None  # the settings of the run followed now
        self._oom_plan: Optional[dict] = None
        self._warming_up = False
        self._estimate_timer = QTimer(self, singleShot=True, interval=_ESTIMATE_DELAY_MS, timeout=self.update_estimate)
        self._build()
        self.controller.set_state(RunState.IDLE)
        self.update_estimate()

    @property
    def _runner(self) -> Optional[TrainingRunner]:
        return self.controller.runner

    @property
    def _last_run(self) -> Optional[Path]:
        return self.controller.last_run

    @property
    def _task(self) -> Optional[BackgroundTask]:
        """The background work under way, if any (the device lookup and the warm-up aside)."""
        return self._start_task.task or self._settings_task.task

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._warming_up:
            # Whoever opens this page is about to train: have a standby import the training stack
            # now, so that Start begins training at once rather than after 10-15 s of imports.
            self._warming_up = True
            self._warm_up.start(lambda _reporter: launcher.enable())

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        layout = QHBoxLayout(self)
        layout.addWidget(self._build_settings())
        layout.addWidget(self.monitor, 1)

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
        # The layout each file read as on the Data page: the objective follows the picked file's.
        self._layouts: dict[str, str] = {}
        self._taking_data_settings = False
        self.dataset_picker.changed.connect(self._dataset_picked)
        source_form.addRow(self.data_settings_label)
        # Beside the validation share it needs: with none, nothing is held out to score on.
        self.evaluate_check = QCheckBox("Score the adapter against the base on the held-out rows at the end")
        self.evaluate_check.setAccessibleName(setting_label("evaluate_at_end"))
        self._evaluate_wanted = True  # the user's choice, kept while no rows are held out
        self.evaluate_check.toggled.connect(self._evaluate_toggled)
        source_form.addRow(self.evaluate_check)
        # A dataset chosen on the Data page shows here as a change until the next Start, and
        # waits for a run that is going to end: what this page shows is what it runs.
        self._waiting_data_settings: Optional[tuple[Optional[dict]]] = None
        self.data_change_label = QLabel()
        self.data_change_label.setWordWrap(True)
        self.data_change_label.setAccessibleName("Dataset change")
        self.data_change_label.setStyleSheet("font-weight: bold")
        self.data_change_label.hide()
        source_form.addRow(self.data_change_label)
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
        self.form.set_adapters(library_adapters())
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
        self.pause_button.clicked.connect(self.controller.pause_or_resume)
        self.stop_button.clicked.connect(self.stop_run)
        run_row = QHBoxLayout()
        for button in (self.start_button, self.pause_button, self.stop_button):
            run_row.addWidget(button)

        self.resume_button = QPushButton("Resume run")
        self.resume_button.setToolTip(RESUME_TIP)
        self.resume_button.clicked.connect(lambda: self.resume_run(self.controller.last_run))
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
            self.form.set_adapters(library_adapters())
            self.find_device()

    def start_preference_setup(self, dataset_path: str, from_adapter: Optional[str]) -> bool:
        """Ready a DPO run on a preference set (Compare's "Train on my preferences"): that dataset
        picked, the objective DPO, and ``from_adapter`` (a library name) to go on training, on the
        model it was trained on; None trains a new adapter on the base. Nothing starts until Start.
        While a run goes on the settings stay as they are, and the page says so (False)."""
        if self.busy:
            self._show_data_change("A run is going: stop it or let it end, then ask to train on the "
                                   "preferences again.")
            return False
        self.form.set_adapters(library_adapters())
        self.form.apply({**self._objective_settings("dpo"), "from_adapter": from_adapter})
        choice = self.form.adapter_choice(from_adapter)
        if choice is not None and choice.base_model:
            self.model_picker.set_ref(choice.base_model)
        self.dataset_picker.set_path(str(dataset_path))
        self._show_data_change(f"Ready to train DPO on {Path(dataset_path).name}"
                               + (f", going on from {from_adapter}" if from_adapter else "") + ": press Start.")
        return True

    def _objective_settings(self, objective: str) -> dict[str, Any]:
        """The form's settings for ``objective``: a method or batching that cannot learn with it (prompt
        tuning, padding-free batches under a preference objective) gives way to one that can."""
        values = self.form.values()
        settings: dict[str, Any] = {"objective": objective}
        if refusal(objective=objective, method=values["method"]):
            settings["method"] = "lora"
        if refusal(objective=objective, batching=values["batching"]):
            settings["batching"] = "padded"
        return settings

    # ------------------------------------------------------------ the objective follows the data
    def set_dataset_layout(self, path: str, layout: str) -> None:
        """The layout ``path`` reads as on the Data page (a format name); when that file is the one
        picked here, the objective follows it at once (``_follow_layout``)."""
        self._layouts[path] = layout
        if path == self.dataset_picker.current_path():
            self._show_objective_change()

    def _dataset_picked(self, _path: str) -> None:
        self._show_data_settings()
        if not self._taking_data_settings:  # that says what changed itself, this change included
            self._show_objective_change()

    def _show_objective_change(self) -> None:
        change = self._follow_layout()
        if change:
            self._show_data_change(change)

    def _follow_layout(self) -> Optional[str]:
        """Switch the objective to one that learns from the picked file as the Data page read it, and
        say so: a preference layout under SFT trains with ``default_objective`` (DPO, or KTO for
        labelled answers), one answer per prompt under a preference objective with SFT, labelled
        answers under DPO / ORPO / SimPO with KTO (``objective_problem``'s refusals). None when
        nothing changes: the layout is not known, it suits the objective, or a run is starting or
        going (its settings stay as they are; the page follows once it ends)."""
        path = self.dataset_picker.current_path()
        layout = self._layouts.get(path) if path else None
        objective = self.form.objective_combo.currentData()
        if self.busy or layout is None or objective_problem(layout, objective) is None:
            return None
        wanted = default_objective(layout) if layout in PREFERENCE_FORMATS else "sft"
        self.form.apply(self._objective_settings(wanted))
        title = FORMATS[layout].title if layout in FORMATS else layout
        return (f"{Path(path).name} reads as {title} on the Data page, so the objective is now "
                f"{OBJECTIVE_LABELS[wanted]}; it was {OBJECTIVE_LABELS[objective]}.")

    @property
    def run_active(self) -> bool:
        return self.controller.runner is not None

    @property
    def busy(self) -> bool:
        """A run is starting or going (the settings are locked)."""
        return self.controller.runner is not None or self.controller.state == RunState.STARTING

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
                         evaluate_at_end=self._evaluate_wanted, **self.form.values(), **self._reading_settings(dataset))

    def _evaluate_toggled(self, checked: bool) -> None:
        if self.evaluate_check.isEnabled():  # the user's click, not the box following the validation share
            self._evaluate_wanted = checked

    def _show_evaluate_option(self, held_out: bool) -> None:
        """The option applies only with a validation share: without one it is off and says why."""
        check = self.evaluate_check
        if held_out:
            check.setChecked(self._evaluate_wanted)
            check.setEnabled(True)
            check.setToolTip(setting_tip("evaluate_at_end"))
        else:
            check.setEnabled(False)
            check.setChecked(False)
            check.setToolTip(NO_HELD_OUT_TIP)

    def set_data_settings(self, settings: Optional[dict]) -> None:
        """Take the dataset, the reading choices and the max length, loss and validation share
        set on the Data page (None: no dataset there). While a run is starting or going they
        wait for it to end: the page keeps showing what the run trains on, and says what the
        next run will."""
        if self.busy:
            self._waiting_data_settings = (settings,)
            if settings and settings["dataset"] != self.dataset_picker.current_path():
                self._show_data_change(f"Chosen on the Data page: {Path(settings['dataset']).name}. "
                                       "The run going now keeps its dataset; the next run uses this one.")
            elif settings and settings.get("max_length") not in (None, self.form.max_length_spin.value()):
                self._show_data_change(f"Max length {settings['max_length']:,} chosen on the Data page. "
                                       "The run going now keeps its own; the next run uses this one.")
            return
        self._apply_data_settings(settings)

    def _apply_data_settings(self, settings: Optional[dict]) -> None:
        before = self.dataset_picker.current_path()
        changes = []
        if settings:
            settings = dict(settings)
            # The max length lives in the settings form, the rest in the line under the dataset.
            changes += self._apply_max_length(settings.pop("max_length", None))
        self._data_settings = settings
        if settings and settings["dataset"] != before:
            self._taking_data_settings = True
            try:
                self.dataset_picker.set_path(settings["dataset"])
            finally:
                self._taking_data_settings = False
            was = f" (was {Path(before).name})" if before else ""
            changes.insert(0, f"Dataset changed on the Data page: now {Path(settings['dataset']).name}{was}.")
        objective = self._follow_layout()
        if objective:
            changes.append(objective)
        if changes:
            self._show_data_change(" ".join(changes))
        self._show_data_settings()

    def _apply_max_length(self, max_length: Optional[int]) -> list[str]:
        """Set the max length chosen on the Data page (None: not changed there) as a user would
        (a preset it no longer matches then reads Custom); the change, in words."""
        before = self.form.max_length_spin.value()
        if max_length is None or max_length == before:
            return []
        self.form.max_length_spin.setValue(max_length)
        return [f"Max length changed on the Data page: now {max_length:,} (was {before:,})."]

    def next_run_data_settings(self) -> dict[str, Any]:
        """The max length, loss and validation share the next run trains with (those waiting
        for the running one to end, if any): what the Data page previews with."""
        waiting = self._waiting_data_settings[0] if self._waiting_data_settings else None
        if waiting:
            return {"max_length": waiting.get("max_length", self.form.max_length_spin.value()),
                    "train_on": waiting["train_on"], "val_fraction": waiting["val_fraction"]}
        settings = self._reading_settings(self.dataset_picker.current_path())
        defaults = RunConfig(model="-", dataset="-")
        return {"max_length": self.form.max_length_spin.value(),
                "train_on": settings.get("train_on", defaults.train_on),
                "val_fraction": settings.get("val_fraction", defaults.val_fraction)}

    def _show_data_change(self, message: str) -> None:
        self.data_change_label.setText(message)
        self.data_change_label.setVisible(bool(message))

    def _reading_settings(self, dataset: str) -> dict:
        """The Data page's choices when they are about this dataset; otherwise detect everything."""
        settings = self._data_settings
        if not settings or settings["dataset"] != dataset:
            return {}
        return {key: value for key, value in settings.items() if key != "dataset"}

    def _show_data_settings(self) -> None:
        settings = self._reading_settings(self.dataset_picker.current_path())
        self._show_evaluate_option(bool(settings.get("val_fraction")))
        if not settings:
            self.data_settings_label.setText("Format and columns: detected (adjust them on the Data page)")
            return
        parts = [f"format {settings['data_format'] or 'detected'}"]
        if settings["columns"]:
            parts.append("columns " + ", ".join(f"{k}={v}" for k, v in sorted(settings["columns"].items())))
        parts.append("loss on every token" if settings["train_on"] == "all" else "loss on the replies")
        if settings["val_fraction"]:
            parts.append(f"{settings['val_fraction']:.0%} held out for eval loss")
        self.data_settings_label.setText("Set on the Data page: " + "; ".join(parts))

    # -------------------------------------------------------------- memory
    def find_device(self) -> None:
        """Read the device training would use, and its free memory, in the background."""
        if not self._device_lookup.busy:
            self._device_lookup.start(best_device, self._on_device)

    def _on_device(self, device: Any) -> None:
        self._device = device
        # Titled before a run starts, so that the run's start does not lay the plot out again.
        self.monitor.set_memory_title(device.torch_device)
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
            return config, auto_fit(config, spec, device, reporter)

        self._settings_task.start(work, self._on_fit, self._on_fit_failed)

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

        self._settings_task.start(names, show, lambda message: self._show_error(f"Cannot list modules: {message}"))

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

        self._show_data_change("")
        self._begin(lambda reporter: TrainingJob.start(config), config)

    def resume_run(self, run_dir: Optional[Path]) -> None:
        """Continue a run (this page's last, or one from the Home page) from its newest checkpoint."""
        if self.busy or run_dir is None:
            return
        from engine.jobs.training_job import TrainingJob

        run_dir = Path(run_dir)
        self._begin(self._with_history(run_dir, lambda: TrainingJob.resume(run_dir)), None, clear=False)

    def watch_run(self, run_dir: Path) -> None:
        """Show a run that is still going (its window closed or crashed): replay its curve, then follow it.

        Finding its process (and checking it is that run's) happens in the background."""
        if self.busy or self._start_task.busy:
            return
        from engine.jobs.training_job import TrainingJob

        def attached(outcome: tuple[Any, Optional[RunConfig]]) -> None:
            job, self._run_config = outcome
            self.monitor.clear()
            self.monitor.show_preference(self._run_config is not None and self._run_config.is_preference)
            self._follow(job)

        self.evaluation.abandon()
        self._start_task.start(lambda reporter: _with_settings(TrainingJob.attach(Path(run_dir)), None), attached,
                               lambda message: self._refuse(StudioError(message)), needs_libraries=False)

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
        self.evaluation.abandon()  # the last run's evaluation of itself, if it still goes on
        self.monitor.end_evaluation()
        self.controller.set_state(RunState.STARTING)
        self.monitor.set_status("checking the run against this machine…")

        def started(outcome: tuple[Any, Optional[RunConfig]]) -> None:
            result, self._run_config = outcome
            job, history = result if isinstance(result, tuple) else (result, None)
            if clear or history is not None:
                self.monitor.clear()
            # The reward plots are laid out before the first step, not in the middle of the run.
            self.monitor.show_preference(self._run_config is not None and self._run_config.is_preference)
            if history is not None:
                self.monitor.draw_history(*history)
            self._follow(job)

        def refused(message: str) -> None:
            self.controller.set_state(RunState.IDLE)
            self.monitor.reset_progress()
            self._refuse(StudioError(message))

        self._start_task.start(lambda reporter: _with_settings(start(reporter), config), started, refused)

    def _follow(self, job: Any) -> None:
        self.monitor.set_status("starting: loading the model…")
        self._log(f"Run folder: {job.run_dir}")
        self.controller.follow(job)

    def _refuse(self, exc: BaseException) -> None:
        if not isinstance(exc, StudioError):
            traceback.print_exception(exc, file=sys.stderr)
        self._show_error(f"Cannot start: {describe_error(exc)}")
        self._log(f"Cannot start: {describe_error(exc)}", "error")

    def stop_run(self) -> None:
        if self._runner is None:
            return
        self._log("Stopping after the current step; the adapter trained so far will be saved.")
        self.controller.stop(save=True)

    def discard_run(self) -> None:
        if self._runner is None:
            return
        self._log("Stopping after the current step without saving anything.")
        self.controller.stop(save=False)

    def ask_train_more(self, run_dir: Optional[Path] = None) -> Optional[QDialog]:
        """Ask how much more to train a finished run (this page's last by default), then start.

        The dialog is window-modal and answers through its signals, so the caller (and a test)
        is not held in a nested event loop. For this page's last run it opens at once, from what
        the run's events said, and is returned; another run's folder is read in the background
        first, and the dialog opens when that is done (None is returned).
        """
        run_dir = Path(run_dir) if run_dir else self._last_run
        if run_dir is None:
            return None
        if run_dir == self._last_run:
            return self._open_train_more(run_dir, self.controller.last_run_summary())
        if not self._start_task.busy:
            from engine.jobs.summary import summarize_run

            self._start_task.start(lambda reporter: summarize_run(run_dir),
                                   lambda summary: self._open_train_more(run_dir, summary),
                                   lambda message: self._show_error(f"Cannot read the run: {message}"),
                                   needs_libraries=False)
        return None

    def _open_train_more(self, run_dir: Path, summary: Any) -> Optional[QDialog]:
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
                self.monitor.show_step(event)
            elif isinstance(event, EvalMetrics):
                self.monitor.show_eval(event.step, event.eval_loss)
            elif isinstance(event, RunStarted):
                self.monitor.show_started(event)
            elif isinstance(event, CheckpointSaved):
                self._log(f"Checkpoint saved at step {event.step}: {event.path}")
            elif isinstance(event, LogLine):
                self._log(event.message, event.level)
            elif isinstance(event, OutOfMemory):
                self._on_out_of_memory(event)
            elif isinstance(event, Paused):
                self._log(f"Paused at step {event.step}.")
            elif isinstance(event, Resumed):
                self._log(f"Resumed at step {event.step}.")

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
        from engine.eval.after_run import evaluates_itself

        self.monitor.show_finished(event)
        if event.status not in (RunStatus.COMPLETED, RunStatus.STOPPED):
            self._show_error(f"Training failed: {failure_message(event)}")
        self.controller.set_state(RunState.IDLE)
        config, run_dir = self._run_config, self.controller.last_run
        if config is not None and run_dir is not None and evaluates_itself(config, event):
            # Before runFinished, so that the window knows a result is still to come (``evaluating``).
            self.monitor.show_evaluation_progress(0, 0, "Evaluating the adapter against the base…")
            self.evaluation.start(run_dir, config.device)
        self.runFinished.emit(event)
        if event.adapter:
            self.adapterSaved.emit(event.adapter)
        if event.model:
            self.modelSaved.emit(event.model)

    # ------------------------------------------------------------- evaluation
    @property
    def evaluating(self) -> bool:
        """A finished run is being scored against its base."""
        return self.evaluation.running

    def stop_evaluation(self) -> None:
        self.monitor.stop_evaluation_button.setEnabled(False)
        self.evaluation.stop()

    def _on_evaluated(self, line: str) -> None:
        self.monitor.show_evaluation(line)
        self.evaluationFinished.emit(line)

    # -------------------------------------------------------------- state
    def _show_state(self, value: str) -> None:
        """The run buttons and the settings follow the run's state; then the window hears of it."""
        state = RunState(value)
        active = state != RunState.IDLE
        self.start_button.setEnabled(not active)
        self.start_button.setText("Checking…" if state == RunState.STARTING else "Start")
        self.pause_button.setEnabled(state in (RunState.RUNNING, RunState.PAUSED))
        self.pause_button.setText(
            {RunState.PAUSED: "Resume", RunState.PAUSING: "Pausing…", RunState.RESUMING: "Resuming…"}.get(state, "Pause")
        )
        self.stop_button.setEnabled(state in (RunState.RUNNING, RunState.PAUSING, RunState.PAUSED, RunState.RESUMING))
        self.stop_button.setText("Stopping…" if state == RunState.STOPPING else "Stop")
        for box in self._settings:
            box.setEnabled(not active)
        if not active and self._waiting_data_settings is not None:
            (waiting,), self._waiting_data_settings = self._waiting_data_settings, None
            self._apply_data_settings(waiting)
        elif not active:
            self._show_objective_change()  # a layout the Data page read while the run went on
        self._update_after_run_buttons()
        self.runStateChanged.emit(value)

    def _update_after_run_buttons(self) -> None:
        """Resume and Train more follow what the last run's events said it left behind."""
        idle = self.controller.state == RunState.IDLE and self._task is None
        self.resume_button.setEnabled(idle and self.controller.can_resume())
        summary = self.controller.last_run_summary()
        # A run that trained all its steps says why Resume is off: Train more continues it.
        self.resume_button.setToolTip((summary and summary.nothing_to_resume) or RESUME_TIP)
        self.more_button.setEnabled(idle and self.controller.can_train_more())
        self.export_button.setEnabled(idle)

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))

    def _log(self, message: str, level: str = "info") -> None:
        self.monitor.log(message, level)


def _with_settings(result: Any, config: Optional[RunConfig]) -> tuple[Any, Optional[RunConfig]]:
    """On the start's worker thread: what started the run, and the settings it runs with (those
    the page gave, else the ones in its folder: a resumed, continued or watched run's), which say
    at its end whether it evaluates itself."""
    import importlib

    from engine.run.rundir import RunDir

    # Imported here, off the UI thread, for the run's end (it reads the evaluation rule there).
    importlib.import_module("engine.eval.after_run")
    if config is None:
        job = result[0] if isinstance(result, tuple) else result
        try:
            config = RunConfig.load(RunDir(job.run_dir).config)
        except StudioError:  # the run goes on all the same; it just does not evaluate itself
            config = None
    return result, config
