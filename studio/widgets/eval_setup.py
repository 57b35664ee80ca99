"""What the Evaluate page evaluates: the candidates, the evaluation set and the metrics.

Listing what can be chosen reads JSON files and folder names only (the library, the runs'
checkpoints and held-out records), milliseconds, so it runs on the UI thread. What the choices
mean (a set that cannot be read, an adapter made for another base model) is found out when the
evaluation runs, on its worker thread, and said on the page in one line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.eval.evalset import DEFAULT_LIMIT
from engine.eval.metrics import METRICS
from engine.eval.scoring import DEFAULT_METRICS
from studio.widgets.chat_widgets import adapter_entries
from studio.widgets.eval_words import explanation, title
from studio.widgets.pickers import DatasetPicker, ElidingComboBox

if TYPE_CHECKING:
    from engine.eval.request import EvalRequest

DEFAULT_MAX_NEW_TOKENS = 128
_REF_ROLE = Qt.ItemDataRole.UserRole
_HELDOUT_HELP = "The rows a run kept out of its training (its validation split): the adapter never learned from them."


def heldout_runs() -> list[tuple[str, str, str]]:
    """(name, folder, base model) of each run that recorded the rows it held out, newest first."""
    from engine.paths import folder_entries, runs_dir
    from engine.run.rundir import RunDir

    found = []
    for run in folder_entries(runs_dir()):
        if not RunDir(run).heldout.is_file():
            continue
        try:
            model = json.loads(RunDir(run).config.read_text(encoding="utf-8")).get("model", "")
        except (OSError, ValueError, AttributeError):
            model = ""
        found.append((run.name, str(run), str(model or "")))
    return sorted(found, reverse=True)


def _metric_order() -> list[str]:
    """The default metrics in the engine's order (the scoreboard's columns, and ROUGE-L the first
    score the example browser compares answers by), then the others."""
    return [*DEFAULT_METRICS, *(name for name in METRICS if name not in DEFAULT_METRICS)]


class EvalSetup(QWidget):
    """The choices of an evaluation; ``changed`` whenever one of them changes."""

    changed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._model = ""
        self._data_options: dict[str, dict[str, Any]] = {}  # per dataset path, as the Data page reads it
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._build_candidates())
        layout.addWidget(self._build_set())
        layout.addWidget(self._build_metrics())
        layout.addWidget(self._build_beyond())
        layout.addWidget(self._build_advanced())
        layout.addStretch(1)
        self._source_changed(False)

    # ------------------------------------------------------------------ layout
    def _build_candidates(self) -> QGroupBox:
        box = QGroupBox("Candidates", self)
        self.include_base_check = QCheckBox("Include the base model", box)
        self.include_base_check.setChecked(True)
        self.include_base_check.setToolTip("Evaluate the base model as it is, too: the adapters are compared "
                                           "with it, and won or lost is against its answers.")
        self.candidates_list = QListWidget(box)
        self.candidates_list.setAccessibleName("Adapters and checkpoints")
        self.candidates_list.setToolTip("Check the adapters from the library, and the checkpoints of runs on this "
                                        "model, to evaluate. Each answers every example of the set.")
        self.candidates_list.setMinimumHeight(90)
        layout = QVBoxLayout(box)
        layout.addWidget(self.include_base_check)
        layout.addWidget(self.candidates_list, 1)
        self.include_base_check.toggled.connect(self.changed)
        self.candidates_list.itemChanged.connect(lambda _item: self.changed.emit())
        return box

    def _build_set(self) -> QGroupBox:
        box = QGroupBox("Evaluation set", self)
        self.heldout_radio = QRadioButton("Rows a run held out", box)
        self.heldout_combo = ElidingComboBox(box)
        self.heldout_combo.setAccessibleName("Run")
        self.heldout_combo.set_about("Runs trained with a validation split recorded the rows they held out.")
        self.dataset_radio = QRadioButton("A dataset file", box)
        self.dataset_radio.setToolTip("Any dataset the Data page reads: each row's last answer is the reference, "
                                      "the conversation before it the prompt.")
        self.dataset_picker = DatasetPicker(box)
        self.dataset_picker.combo.setMinimumContentsLength(16)
        self._source = QButtonGroup(box)
        self._source.addButton(self.heldout_radio)
        self._source.addButton(self.dataset_radio)
        self.dataset_radio.setChecked(True)
        self.limit_spin = QSpinBox(box)
        self.limit_spin.setRange(0, 1_000_000)
        self.limit_spin.setSpecialValueText("all")
        self.limit_spin.setValue(DEFAULT_LIMIT)
        self.limit_spin.setToolTip("Evaluate on the first rows only (0: all of them). Every candidate answers "
                                   "each one, so the time grows with both.")
        self.max_tokens_spin = QSpinBox(box)
        self.max_tokens_spin.setRange(1, 8192)
        self.max_tokens_spin.setValue(DEFAULT_MAX_NEW_TOKENS)
        self.max_tokens_spin.setToolTip("The longest answer a candidate may write, in tokens: an answer cut short "
                                        "scores lower against a longer reference.")
        layout = QFormLayout(box)
        layout.addRow(self.heldout_radio)
        layout.addRow(self.heldout_combo)
        layout.addRow(self.dataset_radio)
        layout.addRow(self.dataset_picker)
        layout.addRow("Examples (at most):", self.limit_spin)
        layout.addRow("Max new tokens:", self.max_tokens_spin)
        self.heldout_radio.toggled.connect(self._source_changed)
        self.heldout_combo.currentIndexChanged.connect(self._run_picked)
        self.dataset_picker.changed.connect(self._dataset_picked)
        return box

    def _build_metrics(self) -> QGroupBox:
        box = QGroupBox("Metrics", self)
        layout = QGridLayout(box)
        self.metric_checks: dict[str, QCheckBox] = {}
        for number, name in enumerate(_metric_order()):
            check = QCheckBox(title(name), box)
            check.setToolTip(explanation(name))
            check.setChecked(name in DEFAULT_METRICS)
            check.toggled.connect(self.changed)
            layout.addWidget(check, number // 2, number % 2)
            self.metric_checks[name] = check
        return box

    def _build_beyond(self) -> QGroupBox:
        """The judge and the forgetting check: what the references cannot tell."""
        box = QGroupBox("Judge and forgetting", self)
        self.judge_check = QCheckBox("Judge each answer against the base's", box)
        self.judge_check.setChecked(True)
        self.judge_check.setToolTip("A judge model compares each candidate's answer with the base model's, in both "
                                    "orders, by a fixed rubric: win, tie or loss with a 95% interval")
        self.judge_combo = ElidingComboBox(box)
        self.judge_combo.setAccessibleName("Judge model")
        self.judge_combo.setToolTip("The judge: the base model itself, or another model from the store (loaded "
                                    "beside the base when both fit, else in turn)")
        self.forgetting_check = QCheckBox("Forgetting check (100 general prompts)", box)
        self.forgetting_check.setChecked(True)
        self.forgetting_check.setToolTip("How far each adapter moved the model on prompts unrelated to its training: "
                                         "the mean per-token KL divergence from the base, and the share of answers "
                                         "that changed")
        layout = QFormLayout(box)
        layout.addRow(self.judge_check)
        layout.addRow("Judge:", self.judge_combo)
        layout.addRow(self.forgetting_check)
        self.judge_check.toggled.connect(self.judge_combo.setEnabled)
        return box

    def _fill_judges(self) -> None:
        from engine.models.store import list_models

        current = self.judge_combo.currentData(_REF_ROLE)
        self.judge_combo.clear()
        self.judge_combo.addItem("the base model", None)
        for record in list_models():
            if record.ready:
                self.judge_combo.addItem(record.name, record.name)
        self.judge_combo.setCurrentIndex(max(0, self.judge_combo.findData(current, _REF_ROLE)))

    def _build_advanced(self) -> QWidget:
        holder = QWidget(self)
        self.advanced_button = QToolButton(holder)
        self.advanced_button.setText("Answer regex and label column")
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        self.advanced_button.setCheckable(True)
        self.advanced_button.setAutoRaise(True)
        self.advanced_button.setToolTip("For a task whose answer is a choice or a number: how to find it, for the "
                                        "accuracy metric")
        self.advanced = QWidget(holder)
        self.regex_edit = QLineEdit(self.advanced)
        self.regex_edit.setPlaceholderText(r"e.g. answer: (\w+)")
        self.regex_edit.setToolTip("A regular expression that finds the answer (its first group) in each answer "
                                   "and, without a label column, in each reference. Accuracy compares the two.")
        self.label_edit = QLineEdit(self.advanced)
        self.label_edit.setPlaceholderText("a column of the dataset")
        self.label_edit.setToolTip("The dataset column holding each row's expected choice or number, for accuracy "
                                   "(a dataset file only).")
        form = QFormLayout(self.advanced)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Answer regex:", self.regex_edit)
        form.addRow("Label column:", self.label_edit)
        self.advanced.hide()
        layout = QVBoxLayout(holder)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.advanced_button)
        layout.addWidget(self.advanced)
        self.advanced_button.toggled.connect(self._show_advanced)
        for edit in (self.regex_edit, self.label_edit):
            edit.textEdited.connect(self._answer_rule_edited)
        return holder

    def _source_changed(self, _on_run: bool) -> None:
        # A run's held-out rows are read as the run read them, without the dataset's other columns.
        self.label_edit.setEnabled(self.dataset_radio.isChecked())
        self.changed.emit()

    def _show_advanced(self, shown: bool) -> None:
        self.advanced.setVisible(shown)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _answer_rule_edited(self, text: str) -> None:
        # A regex or a label column is given for accuracy: check it (the user may uncheck it again).
        if text.strip() and not self.metric_checks["accuracy"].isChecked():
            self.metric_checks["accuracy"].setChecked(True)
        self.changed.emit()

    # ------------------------------------------------------------------ lists
    def refresh(self, model: str) -> None:
        """Re-list the adapters and checkpoints (of runs on ``model``) and the runs with held-out rows,
        keeping what was checked and picked where it is still there."""
        self._model = model
        self._fill_candidates(model)
        self._fill_runs()
        self._fill_judges()
        self.dataset_picker.refresh()
        self.changed.emit()

    def _fill_candidates(self, model: str) -> None:
        checked = set(self.checked_adapters())
        self.candidates_list.blockSignals(True)
        self.candidates_list.clear()
        for entry in adapter_entries(model):
            item = QListWidgetItem(entry.label)
            item.setData(_REF_ROLE, entry.ref)
            item.setToolTip(entry.tooltip)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if entry.ref in checked else Qt.CheckState.Unchecked)
            self.candidates_list.addItem(item)
        self.candidates_list.blockSignals(False)

    def _fill_runs(self) -> None:
        keep = self.heldout_combo.currentData(_REF_ROLE)
        self.heldout_combo.blockSignals(True)
        self.heldout_combo.clear()
        for name, folder, model in heldout_runs():
            self.heldout_combo.addItem(name, folder)
            self.heldout_combo.setItemData(self.heldout_combo.count() - 1,
                                           f"{folder}\nbase model: {model or 'unknown'}", Qt.ItemDataRole.ToolTipRole)
        index = self.heldout_combo.findData(keep, _REF_ROLE) if keep else -1
        self.heldout_combo.setCurrentIndex(max(index, 0))
        self.heldout_combo.blockSignals(False)
        has_runs = self.heldout_combo.count() > 0
        self.heldout_radio.setEnabled(has_runs)
        self.heldout_combo.setEnabled(has_runs)
        self.heldout_radio.setToolTip(_HELDOUT_HELP if has_runs else _HELDOUT_HELP + " No run has recorded any yet: "
                                      "train with a validation share above 0 on the Train page.")
        if not has_runs and self.heldout_radio.isChecked():
            self.dataset_radio.setChecked(True)

    def offer_dataset(self, path: str, options: dict[str, Any]) -> None:
        """The dataset open on the Data page, read as it reads it: listed and picked here."""
        self._data_options[path] = dict(options)
        if self.dataset_picker.current_path() != path:
            on_run = self.heldout_radio.isChecked()
            self.dataset_picker.set_path(path)
            self.heldout_radio.setChecked(on_run)  # offered, not chosen: a run's rows picked stay picked

    def use_run(self, run_dir: str) -> None:
        """Evaluate on this run's held-out rows (the run must have them)."""
        self._fill_runs()
        index = self.heldout_combo.findData(str(run_dir), _REF_ROLE)
        if index >= 0:
            self.heldout_combo.setCurrentIndex(index)
            self.heldout_radio.setChecked(True)

    def use_dataset(self, path: str) -> None:
        self.dataset_picker.set_path(path)
        self.dataset_radio.setChecked(True)

    def set_checked(self, refs: list[str]) -> None:
        """Check these adapters (library names or checkpoint folders), uncheck the others."""
        for row in range(self.candidates_list.count()):
            item = self.candidates_list.item(row)
            item.setCheckState(Qt.CheckState.Checked if item.data(_REF_ROLE) in refs else Qt.CheckState.Unchecked)

    def _run_picked(self, _index: int) -> None:
        if self.heldout_combo.count():
            self.heldout_radio.setChecked(True)
        self.changed.emit()

    def _dataset_picked(self, _path: str) -> None:
        self.dataset_radio.setChecked(True)
        self.changed.emit()

    # ------------------------------------------------------------------ reading
    def checked_adapters(self) -> list[str]:
        return [self.candidates_list.item(row).data(_REF_ROLE) for row in range(self.candidates_list.count())
                if self.candidates_list.item(row).checkState() == Qt.CheckState.Checked]

    def checked_metrics(self) -> list[str]:
        """The metrics checked, in the order the results list them (ROUGE-L before exact match)."""
        return [name for name, check in self.metric_checks.items() if check.isChecked()]

    def missing(self) -> Optional[str]:
        """What must still be chosen before an evaluation can run; None when nothing is missing."""
        if not self._model:
            return "Pick a base model."
        if not self.include_base_check.isChecked() and not self.checked_adapters():
            return "Check an adapter or a checkpoint, or include the base model."
        if self.heldout_radio.isChecked() and not self.heldout_combo.currentData(_REF_ROLE):
            return "Pick a run whose held-out rows to evaluate on."
        if self.dataset_radio.isChecked() and not self.dataset_picker.current_path():
            return "Pick a dataset file to evaluate on."
        if not self.checked_metrics():
            return "Check at least one metric."
        return None

    def request(self) -> "EvalRequest":
        on_run = self.heldout_radio.isChecked()
        dataset = None if on_run else self.dataset_picker.current_path()
        from engine.eval.request import EvalRequest

        return EvalRequest(
            model=self._model, adapters=self.checked_adapters(), include_base=self.include_base_check.isChecked(),
            run_dir=self.heldout_combo.currentData(_REF_ROLE) if on_run else None, dataset=dataset,
            data_options=_data_options(self._data_options.get(dataset or "", {})),
            limit=self.limit_spin.value() or None, max_new_tokens=self.max_tokens_spin.value(),
            metrics=self.checked_metrics(), answer_regex=self.regex_edit.text().strip() or None,
            label_column=(self.label_edit.text().strip() or None) if not on_run else None,
            judge=self.judge_check.isChecked(), judge_model=self.judge_combo.currentData(_REF_ROLE),
            forgetting=self.forgetting_check.isChecked())



def _data_options(options: dict[str, Any]) -> Any:
    """How to read the dataset (the Data page's read options, as a DataOptions)."""
    from engine.data.dataset import DataOptions

    return DataOptions(options.get("format"), dict(options.get("columns") or {}), options.get("text_split") or "auto")
