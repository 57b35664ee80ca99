"""Dialogs of the Adapters page: merge into the base, export as GGUF, combine adapters.

Each runs its engine call in a ``BackgroundTask`` (seconds to minutes of work) and shows
progress, then the result with its check: the merge's fidelity numbers, the GGUF
read-back, or a combination's reply to a prompt before it is kept.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.gguf.export import describe
from engine.gguf.quants import DEFAULT_QUANT, LORA_TYPES, QUANTS
from engine.paths import ExportKind, export_path
from studio.workers import BackgroundTask, TaskReporter, TaskSlot

_OK_COLOUR = "#1e8449"
_WARN_COLOUR = "#b9770e"
_ERROR_COLOUR = "#c0392b"


def _paragraph(text: str, colour: Optional[str] = None, bold: bool = False) -> str:
    style = f' style="color:{colour}"' if colour else ""
    body = f"<b>{html.escape(text)}</b>" if bold else html.escape(text)
    return f"<p{style}>{body}</p>"


def _size(size_bytes: int) -> str:
    from PySide6.QtCore import QLocale

    return QLocale().formattedDataSize(size_bytes, 1)


# The merge check's numbers in plain words (engine.adapters.merge.MergeFidelity's fields):
# the name shown, then what the number means and which value is good.
FIDELITY_MEASURES = {
    "max_abs_logit_diff": (
        "Largest drift from base+adapter",
        "How far the merged model's answers can drift from base+adapter's: the largest difference in any "
        "next-word score on the probe prompts (max |logit difference|). Near 0 means the merge kept the adapter "
        "exactly; it must stay under the tolerance."),
    "mean_kl": (
        "Average change in word choices",
        "How differently, on average, the merged model chooses the next word than base+adapter (mean KL "
        "divergence, in nats). 0 means the very same choices; it must stay under the tolerance."),
    "adapter_effect": (
        "What the adapter itself changes",
        "The largest change the adapter makes to the base model's next-word scores on the same prompts. The two "
        "numbers above should be tiny next to it: then the merge kept what the adapter does. Near 0 means the "
        "adapter barely changes the model, and the check can show little."),
}


# What the K-quant fallbacks and a flagged file mean, in plain words under the figures.
FALLBACK_NOTE = ("A K-quant stores weights in blocks of 256 along a tensor's rows; a tensor whose rows are not a multiple "
                 "of 256 is stored in the next type llama.cpp can use for it, as llama.cpp's own quantiser does. The file "
                 "is then a little larger than the type's name says, and a little closer to the model.")
FLAGGED_NOTE = ("Outside the bounds: llama.cpp's answers from this file differ from the model's more than this type "
                "usually costs. The next larger type keeps closer.")
CHAT_NOTE = " \"Chat with this file\" shows whether the difference matters for your own prompts."


def _measure_cell(field: str) -> str:
    """A merge-check number's plain name, with what it means in small grey text under it."""
    name, meaning = FIDELITY_MEASURES[field]
    return f"<b>{html.escape(name)}</b><br><span style='color:#555'>{html.escape(meaning)}</span>"


def _where_note(adapter: str, kind: ExportKind, parent: QWidget) -> QLabel:
    """The line under an output path that says where the export goes unless the user picks another place."""
    folder = export_path(adapter, kind).parent
    label = QLabel(f"By default it goes into LoRA Studio's own folder, {folder}; Browse… puts it elsewhere.",
                   parent)
    label.setWordWrap(True)
    label.setStyleSheet("color: #555;")
    label.setAccessibleName("Where it goes")
    return label


def _cancellable(reporter: TaskReporter) -> Callable[[int, int, str], None]:
    """A progress function that also ends the work at its next step once cancelled; the
    engine stages what it writes, so stopping there leaves nothing half-written."""
    from engine.errors import StudioError

    def progress(done: int, total: int, message: str) -> None:
        # The last step reports work already done and kept: too late to call it cancelled.
        if reporter.cancelled and done < total:
            raise StudioError("cancelled")
        reporter.progress(done, total, message)

    return progress


class _TaskDialog(QDialog):
    """A dialog that runs one background task at a time, with a progress bar and a result pane."""

    def __init__(self, title: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(620)
        self._task = TaskSlot()
        self.progress_bar = QProgressBar(self)
        self.progress_bar.hide()
        self.progress_label = QLabel(self)
        self.progress_label.setWordWrap(True)
        self.result_view = QTextBrowser(self)
        self.result_view.setAccessibleName("Result")
        self.result_view.setMinimumHeight(160)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.reject)

    def _lay_out(self, intro: QLabel, output: tuple[str, QPushButton], rows: list[tuple[str, QWidget]],
                 *actions: QPushButton) -> None:
        """The layout of a dialog that writes one output: the intro, a form (the output path in
        ``self.output_edit`` with its Browse button, then ``rows``), the progress, the result pane,
        and the action buttons and Close."""
        label, browse = output
        where = QHBoxLayout()
        where.addWidget(self.output_edit, 1)
        where.addWidget(browse)
        form = QFormLayout()
        form.addRow(label, where)
        for row_label, widget in rows:
            form.addRow(row_label, widget)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for action in actions:
            buttons.addWidget(action)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.result_view, 1)
        layout.addLayout(buttons)

    def start(self, fn: Callable[[TaskReporter], Any], on_success: Callable[[Any], None]) -> BackgroundTask:
        self.result_view.clear()
        self.progress_bar.setRange(0, 0)
        self.progress_bar.show()
        task = self._task.start(fn, on_success, self._failed, on_progress=self._progressed, on_finished=self._finished)
        self._set_busy(True)
        return task

    @property
    def busy(self) -> bool:
        return self._task.busy

    def _progressed(self, done: int, total: int, message: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.progress_label.setText(message)

    def _failed(self, message: str) -> None:
        self.result_view.setHtml(_paragraph(message, _ERROR_COLOUR, bold=True))

    def _finished(self) -> None:
        self.progress_bar.hide()
        self.progress_label.clear()
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        """Enable or disable the dialog's controls while a task runs."""

    def reject(self) -> None:
        # Work already under way finishes (a half-written result is never left: the engine
        # stages it); the dialog waits for it rather than leave a thread behind.
        self._task.cancel()
        self._task.join()
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.reject()
        event.accept()


class MergeDialog(_TaskDialog):
    """Merge an adapter into its base as a new model folder, then show the fidelity check."""

    modelAdded = Signal(str)  # the merged model went into the model store

    def __init__(self, adapter: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(f"Merge {adapter} into its base model", parent)
        self.adapter = adapter
        intro = QLabel(
            "Writes a standard Hugging Face model folder (safetensors, tokenizer with the adapter's chat template, "
            "generation config, model card). Afterwards probe prompts run through base+adapter and through the "
            "merged model, and the difference is reported.", self)
        intro.setWordWrap(True)
        self.output_edit = QLineEdit(str(export_path(adapter, "merged")), self)
        self.output_edit.setAccessibleName("Output folder")
        self.where_label = _where_note(adapter, "merged", self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        self.dtype_combo = QComboBox(self)
        self.dtype_combo.addItem("Same as the base model", "auto")
        for dtype in ("float32", "bfloat16", "float16"):
            self.dtype_combo.addItem(dtype, dtype)
        self.add_to_store = QCheckBox("Add the merged model to the model store (to chat with it or train on it)", self)
        self.add_to_store.setChecked(True)
        self.merge_button = QPushButton("Merge", self)
        self.merge_button.setDefault(True)
        self.merge_button.clicked.connect(self.merge)

        self._lay_out(intro, ("Output folder", browse), [("", self.where_label), ("Stored as", self.dtype_combo),
                                                          ("", self.add_to_store)], self.merge_button)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder to put the merged model in",
                                                  str(Path(self.output_edit.text()).parent))
        if folder:
            self.output_edit.setText(str(Path(folder) / f"{self.adapter}-merged"))

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.merge_button, self.output_edit, self.dtype_combo, self.add_to_store):
            widget.setEnabled(not busy)

    def merge(self) -> BackgroundTask:
        adapter, output = self.adapter, Path(self.output_edit.text().strip()).expanduser()
        dtype, add = self.dtype_combo.currentData(), self.add_to_store.isChecked()

        def work(reporter: TaskReporter) -> tuple[Any, Optional[str]]:
            from engine.adapters.merge import merge_adapter
            from engine.models.store import add_model

            output.parent.mkdir(parents=True, exist_ok=True)
            result = merge_adapter(adapter, output, dtype=dtype, progress=_cancellable(reporter))
            added = add_model(output).name if add and result.fidelity.within_tolerance else None
            return result, added

        return self.start(work, self._merged)

    def _merged(self, outcome: tuple[Any, Optional[str]]) -> None:
        result, added = outcome
        f = result.fidelity
        verdict = (_paragraph("Merged and checked: the merged model matches base+adapter within float tolerance.",
                              _OK_COLOUR, bold=True) if f.within_tolerance else
                   _paragraph("The merged model differs from base+adapter by more than float tolerance. It was "
                              "kept for inspection but not added to the model store.", _ERROR_COLOUR, bold=True))
        parts = [verdict]
        parts += [_paragraph(f"Warning: {warning}", _WARN_COLOUR, bold=True) for warning in result.warnings]
        rows = [
            ("max_abs_logit_diff", f"{f.max_abs_logit_diff:.3g}", f"{f.tolerance_logit:g}"),
            ("mean_kl", f"{f.mean_kl:.3g}", f"{f.tolerance_kl:g}"),
            ("adapter_effect", f"{f.adapter_effect:.3g}", ""),
        ]
        parts.append("<table cellpadding='3'><tr><th align='left'>Check</th><th>Value</th>"
                     "<th>Must stay under</th></tr>")
        parts += [f"<tr><td>{_measure_cell(field)}</td><td valign='top'>{value}</td><td valign='top'>{limit}</td></tr>"
                  for field, value, limit in rows]
        parts.append("</table>")
        parts.append(_paragraph(f"{f.prompts} probe prompts, {f.tokens} positions, compared in {f.check_precision}. "
                                f"{result.output} ({result.dtype}, {_size(result.size_bytes)}) in {result.seconds:.1f} s."))
        if added:
            parts.append(_paragraph(f"Added to the model store as {added}."))
            self.modelAdded.emit(added)
        self.result_view.setHtml("".join(parts))


class GgufDialog(_TaskDialog):
    """Export an adapter as GGUF for llama.cpp and Ollama: merged, or as a GGUF LoRA; then
    llama.cpp's agreement with the model, and the file to chat with beside the adapter."""

    chatRequested = Signal(str, str)  # "Chat with this file": the GGUF file, and the adapter it holds

    def __init__(self, adapter: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(f"Export {adapter} as GGUF", parent)
        self.adapter = adapter
        self.exported: Optional[str] = None  # the merged GGUF file written, once it is
        self._weights = _base_weights(adapter)  # the base model's, to size each type
        intro = QLabel(
            "A GGUF file for llama.cpp and Ollama, with an Ollama Modelfile beside it, written by llama.cpp's own "
            "converter and quantiser. The merged model carries the tokenizer and chat template; a GGUF LoRA applies "
            "over a GGUF of its base. Before the file appears, llama.cpp loads it and its answers are compared with "
            "the model's on probe prompts.", self)
        intro.setWordWrap(True)
        self.output_edit = QLineEdit(str(export_path(adapter, "gguf")), self)
        self.output_edit.setAccessibleName("Output file")
        self.where_label = _where_note(adapter, "gguf", self)
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._browse)
        self.quant_combo = QComboBox(self)
        self.quant_combo.setAccessibleName("Type")
        self.size_label = QLabel(self)
        self.size_label.setWordWrap(True)
        self.size_label.setStyleSheet("color: #555;")
        self.size_label.setAccessibleName("File size")
        self.lora_only = QCheckBox("LoRA only: a GGUF LoRA instead of the merged model", self)
        self.export_button = QPushButton("Export", self)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.export)
        self.chat_button = QPushButton("Chat with this file", self)
        self.chat_button.setToolTip("Open the Chat page with this file answering through llama.cpp, and Compare "
                                    "with the adapter beside it, before you ship it")
        self.chat_button.hide()
        self.chat_button.clicked.connect(self._chat)

        self._lay_out(intro, ("GGUF file", browse), [("", self.where_label), ("Type", self.quant_combo),
                                                      ("", self.size_label), ("", self.lora_only)],
                      self.chat_button, self.export_button)
        self._fill_types()
        self.quant_combo.currentIndexChanged.connect(self._show_size)
        self.lora_only.toggled.connect(self._fill_types)

    def _fill_types(self) -> None:
        """The types the export can write: every type for the merged model, the float types and
        q8_0 for a GGUF LoRA (nothing quantises adapters further); the choice kept where it can be."""
        kept = self.quant_combo.currentData()
        names = LORA_TYPES if self.lora_only.isChecked() else tuple(QUANTS)
        self.quant_combo.blockSignals(True)
        self.quant_combo.clear()
        for name in names:
            self.quant_combo.addItem(f"{QUANTS[name].label}: {QUANTS[name].what}", name)
        default = DEFAULT_QUANT if DEFAULT_QUANT in names else names[0]
        self.quant_combo.setCurrentIndex(self.quant_combo.findData(kept if kept in names else default))
        self.quant_combo.blockSignals(False)
        self._show_size()

    def _show_size(self, _index: int = 0) -> None:
        """What the chosen type makes of the model: bits a weight and, once the base model's
        weights are counted, about how large the file will be."""
        quant = QUANTS[self.quant_combo.currentData()]
        if self.lora_only.isChecked():
            self.size_label.setText(f"{quant.label}: the adapter's own weights only, a small file; the base model's "
                                    "GGUF goes beside it when there is none yet.")
            return
        size = (f"about {_size(int(self._weights * quant.bits_per_weight / 8))} for the model's "
                f"{_count(self._weights)} weights" if self._weights else "its size follows from the model's")
        self.size_label.setText(f"{quant.label}: {quant.bits_per_weight:g} bits a weight, {size}.")

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "GGUF file", self.output_edit.text(), "GGUF (*.gguf)")
        if path:
            self.output_edit.setText(path)

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.export_button, self.output_edit, self.quant_combo, self.lora_only, self.chat_button):
            widget.setEnabled(not busy)

    def export(self) -> BackgroundTask:
        adapter, output = self.adapter, Path(self.output_edit.text().strip()).expanduser()
        quant, lora_only = self.quant_combo.currentData(), self.lora_only.isChecked()
        self.exported = None
        self.chat_button.hide()

        def work(reporter: TaskReporter) -> Any:
            from engine.gguf.adapter import adapter_to_gguf

            return adapter_to_gguf(adapter, output, quant=quant, lora_only=lora_only,
                                   progress=_cancellable(reporter))

        return self.start(work, self._exported)

    def _exported(self, result: Any) -> None:
        kind = "GGUF LoRA" if result.kind == "lora" else "GGUF model"
        parts = [_paragraph(f"Wrote {kind} {result.path} ({result.label}, {_size(result.size_bytes)}).",
                            _OK_COLOUR, bold=True)]
        lines = describe(result)
        parts.append(_paragraph(lines[0], _WARN_COLOUR if result.flagged else None, bold=result.flagged))
        parts += [_paragraph(line.strip()) for line in lines[1:]]
        if result.fallbacks:
            parts.append(f"<p style='color:#555'>{html.escape(FALLBACK_NOTE)}</p>")
        if result.flagged:
            note = FLAGGED_NOTE + (CHAT_NOTE if result.kind == "model" else "")
            parts.append(f"<p style='color:#555'>{html.escape(note)}</p>")
        if result.merge is not None:
            merge = result.merge
            colour = None if merge["within_tolerance"] else _ERROR_COLOUR
            drift, choices = (FIDELITY_MEASURES[field][0].lower() for field in ("max_abs_logit_diff", "mean_kl"))
            verdict = ("within float tolerance: the merged model answers as base+adapter does"
                       if merge["within_tolerance"] else "OUTSIDE float tolerance: the merged model answers differently")
            parts.append(_paragraph(f"Merge check: {drift} {merge['max_abs_logit_diff']:.3g}, {choices} "
                                    f"{merge['mean_kl']:.3g} ({verdict}).", colour))
        if result.base_gguf:
            parts.append(_paragraph(f"Base model GGUF: {result.base_gguf}"))
        parts.append(_paragraph(f"Ollama Modelfile: {result.modelfile}"))
        parts += [_paragraph(f"Warning: {warning}", _WARN_COLOUR, bold=True) for warning in result.warnings]
        self.result_view.setHtml("".join(parts))
        if result.kind == "model":  # a GGUF LoRA answers only over its base's file, which chat does not apply
            self.exported = result.path
            self.chat_button.show()

    def _chat(self) -> None:
        if self.exported is not None:
            self.chatRequested.emit(self.exported, self.adapter)
            self.accept()


def _count(weights: int) -> str:
    """A weight count as people say it: 135 million, 8.0 billion."""
    if weights >= 10**9:
        return f"{weights / 10**9:.1f} billion"
    return f"{weights / 10**6:.0f} million" if weights >= 10**6 else f"{weights:,}"


def _base_weights(adapter: str) -> Optional[int]:
    """How many weights the adapter's base model has (from its safetensors headers: milliseconds),
    None when its folder is not at hand (the export finds or converts it)."""
    from engine.adapters.library import read_adapter_meta, resolve_adapter
    from engine.errors import StudioError
    from engine.gguf.export import parameter_count
    from engine.models.store import model_folder

    try:
        meta = read_adapter_meta(resolve_adapter(adapter))
    except StudioError:
        return None
    # The folder it was trained on first: "starter" and hub ids name no folder until resolved.
    for base in (meta.get("base_model_path"), meta.get("base_model")):
        try:
            return parameter_count(model_folder(base)) if isinstance(base, str) and base else None
        except StudioError:
            continue
    return None


class _PreviewChat:
    """The base model a combination is tried on, loaded once and kept while the dialog is open.

    A plain object, not a Qt one: only worker threads use it (``ChatSession`` serialises calls).
    """

    def __init__(self) -> None:
        self.session: Any = None
        self.base: Optional[str] = None

    def answer(self, first_adapter: str, preview: Path, prompt: str, reporter: TaskReporter) -> None:
        from engine.chat.session import ChatSession
        from engine.adapters.library import resolve_adapter
        from engine.adapters.base_model import find_base

        base = str(find_base(resolve_adapter(first_adapter)))
        if self.session is None or self.base != base:
            self.close()
            reporter.progress(0, 0, f"loading {Path(base).name} to try the combination")
            self.session, self.base = ChatSession(base), base
        self.session.set_adapter(str(preview))
        reporter.progress(0, 0, "answering the prompt with the combined adapter")
        self.session.generate([{"role": "user", "content": prompt}], max_new_tokens=64,
                              on_token=reporter.emit, stop_event=reporter.cancel_event)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session, self.base = None, None


COMBINE_METHODS = (
    ("linear", "Linear: weighted sum of the A and B matrices (same rank only)"),
    ("cat", "Concatenate: exact weighted sum of the updates; rank adds up"),
    ("svd", "SVD: exact weighted sum, compressed back to the largest rank"),
    ("ties", "TIES: keep the strongest weights, resolve sign conflicts (same rank)"),
    ("dare", "DARE: drop weights at random and rescale (same rank)"),
)


class CombineDialog(_TaskDialog):
    """Choose adapters and weights, try the combination on a prompt, then keep it.

    "Try it" writes the combination to a hidden preview folder and asks the base model,
    with it applied, to answer the prompt; "Save to library" moves that same folder into
    the library (or combines afresh when the settings changed since). Closing the dialog
    throws an unsaved preview away.
    """

    adapterSaved = Signal(str)

    def __init__(self, adapters: list[str], selected: Optional[str] = None,
                 parent: Optional[QWidget] = None) -> None:
        super().__init__("Combine adapters", parent)
        self.setMinimumSize(760, 640)
        self._chat = _PreviewChat()
        self._preview: Optional[Path] = None
        self._preview_key: Optional[tuple] = None
        self.table = QTableWidget(len(adapters), 2, self)
        self.table.setAccessibleName("Adapters to combine")
        self.table.setHorizontalHeaderLabels(("Adapter", "Weight"))
        self.table.verticalHeader().hide()
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.weights: dict[str, QDoubleSpinBox] = {}
        self.checks: dict[str, QTableWidgetItem] = {}
        for row, name in enumerate(adapters):
            item = QTableWidgetItem(name)
            item.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            item.setCheckState(Qt.CheckState.Checked if name == selected else Qt.CheckState.Unchecked)
            spin = QDoubleSpinBox(self)
            spin.setRange(-5.0, 5.0)
            spin.setSingleStep(0.1)
            spin.setValue(0.5)
            self.table.setItem(row, 0, item)
            self.table.setCellWidget(row, 1, spin)
            self.checks[name], self.weights[name] = item, spin
        self.method_combo = QComboBox(self)
        for key, label in COMBINE_METHODS:
            self.method_combo.addItem(label, key)
        self.method_combo.setCurrentIndex(1)
        self.density_spin = QDoubleSpinBox(self)
        self.density_spin.setRange(0.05, 1.0)
        self.density_spin.setSingleStep(0.05)
        self.density_spin.setValue(0.5)
        self.density_spin.setToolTip("The fraction of each adapter's weights TIES and DARE keep")
        self.prompt_edit = QLineEdit("What is the capital of France?", self)
        self.prompt_edit.setAccessibleName("Prompt")
        self.name_edit = QLineEdit(self)
        self.name_edit.setAccessibleName("Name")
        self.name_edit.setPlaceholderText("name in the library, e.g. pirate-poet")
        self.try_button = QPushButton("Try it", self)
        self.try_button.setToolTip("Combine into a temporary adapter and let the base model answer the prompt with it")
        self.try_button.clicked.connect(self.try_it)
        self.save_button = QPushButton("Save to library", self)
        self.save_button.clicked.connect(self.save)
        self.result_view.setPlaceholderText("The combined adapter's answer appears here.")
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self._method_changed()

        form = QFormLayout()
        form.addRow("Method", self.method_combo)
        form.addRow("Density", self.density_spin)
        form.addRow("Prompt", self.prompt_edit)
        form.addRow("Name", self.name_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.try_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Tick two or more adapters of the same base and give each a weight.", self))
        layout.addWidget(self.table, 1)
        layout.addLayout(form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.progress_label)
        layout.addWidget(self.result_view, 1)
        layout.addLayout(buttons)

    # settings ----------------------------------------------------------------------------------
    def set_choice(self, weights: dict[str, float], method: str, density: float = 0.5) -> None:
        """Tick exactly ``weights``' adapters with those weights, and pick the method."""
        for name, item in self.checks.items():
            item.setCheckState(Qt.CheckState.Checked if name in weights else Qt.CheckState.Unchecked)
            if name in weights:
                self.weights[name].setValue(weights[name])
        self.method_combo.setCurrentIndex([key for key, _ in COMBINE_METHODS].index(method))
        self.density_spin.setValue(density)

    def _method_changed(self) -> None:
        self.density_spin.setEnabled(self.method_combo.currentData() in ("ties", "dare"))

    def _settings(self) -> tuple[list[str], list[float], str, Optional[float]]:
        names = [name for name, item in self.checks.items() if item.checkState() == Qt.CheckState.Checked]
        how = self.method_combo.currentData()
        density = self.density_spin.value() if how in ("ties", "dare") else None
        return names, [self.weights[name].value() for name in names], how, density

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.try_button, self.save_button, self.table, self.method_combo, self.name_edit,
                       self.prompt_edit):
            widget.setEnabled(not busy)
        if not busy:
            self._method_changed()

    # work ----------------------------------------------------------------------------------------
    def try_it(self) -> BackgroundTask:
        """Combine into a preview folder (unless the same one exists) and answer the prompt with it."""
        from engine.adapters.combine import discard_preview, new_preview_folder

        names, weights, how, density = self._settings()
        key = (tuple(names), tuple(weights), how, density)
        prompt = self.prompt_edit.text().strip() or "Hello!"
        stale = self._preview if key != self._preview_key else None
        preview = self._preview if stale is None and self._preview else new_preview_folder()

        chat = self._chat

        def work(reporter: TaskReporter) -> tuple[Path, tuple]:
            from engine.adapters.combine import combine_adapters

            if stale is not None:
                discard_preview(stale)
            if not preview.exists():
                combine_adapters(names, weights, how, output=preview, density=density,
                                 progress=_cancellable(reporter))
            chat.answer(names[0], preview, prompt, reporter)
            return preview, key

        self.result_view.clear()
        task = self.start(work, self._tried)
        task.messages.connect(self._streamed)
        task.failed.connect(self._try_failed)
        self._preview, self._preview_key = preview, key
        return task

    def _streamed(self, pieces: list) -> None:
        cursor = self.result_view.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText("".join(pieces))

    def _tried(self, outcome: tuple[Path, tuple]) -> None:
        self.progress_label.setText("")
        if not self.name_edit.text().strip():
            self.name_edit.setText("-".join(outcome[1][0])[:60] + "-mix")

    def _try_failed(self, message: str) -> None:
        from engine.adapters.combine import discard_preview

        # A failed try leaves no preview worth keeping.
        if self._preview is not None:
            discard_preview(self._preview)
        self._preview, self._preview_key = None, None

    def save(self) -> BackgroundTask:
        """Keep the tried combination under the chosen name, or combine it now if it was not tried."""
        names, weights, how, density = self._settings()
        key = (tuple(names), tuple(weights), how, density)
        name = self.name_edit.text().strip()
        preview = self._preview if key == self._preview_key else None

        def work(reporter: TaskReporter) -> str:
            from engine.adapters.combine import combine_adapters, keep_preview

            if preview is not None and preview.exists():
                return str(keep_preview(preview, name))
            return combine_adapters(names, weights, how, name=name, density=density,
                                    progress=_cancellable(reporter)).path

        return self.start(work, self._saved)

    def _saved(self, path: str) -> None:
        self._preview, self._preview_key = None, None
        self.result_view.setHtml(_paragraph(f"Saved to the library as {Path(path).name}.", _OK_COLOUR, bold=True))
        self.adapterSaved.emit(path)

    def reject(self) -> None:
        from engine.adapters.combine import discard_preview

        super().reject()
        if self._preview is not None:
            discard_preview(self._preview)
            self._preview = None
        self._chat.close()
