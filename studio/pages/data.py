"""Data: look inside a dataset before training on it.

Choosing a file starts one ``BackgroundTask``. It first reads only the file's first
rows (so even a million-row file shows its preview at once) and sends them as a
message; then it reads the whole file once, with a progress bar, counting good, bad,
duplicate and empty rows and, when a model is chosen, measuring every row's length in
tokens. The page shows the detected format and lets the user override it with a
column mapping; the selected row's exact training text, with the tokens the loss is
taken on in another colour; and a histogram of lengths with the max-length cutoff.
A preference file (chosen / rejected answers, or KTO's labelled ones) is read as its pairs: the
selected pair's prompt (read, not learnt) above its two answers side by side, and the counts of
identical pairs and of prompts the max length cuts off; the preference sets made in Compare are
listed with their pair counts, and open here.
Max length, validation share and "train on" are applied to the measured lengths at
once, without reading the file again. They are the Train page's settings, shown and set here
(the window hands them between the pages): the counts shown are what the next run makes of the
rows, in the words of its log (``engine.data.counts``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QPalette, QResizeEvent, QTextOption
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QMenu,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.data.dataset import (
    DataOptions,
    DatasetPreview,
    DatasetSource,
    Sample,
    dataset_columns,
    open_dataset,
    preview_dataset,
)
from engine.data.examples import training_view
from engine.data.formats import FORMATS
from engine.data.preference import PreferenceScan, default_objective, prompt_fills, scan_preferences, tokenise_row
from engine.data.preference_store import preference_sets
from engine.data.readers import RowProblem
from engine.data.rendering import chat_template_for
from engine.data.scan import DatasetReport, scan_dataset
from engine.core.choices import TEXT_SPLITS
from engine.errors import StudioError
from studio import theme
from studio.widgets.column_tips import set_column_tips
from studio.widgets.pickers import DatasetPicker, ModelPicker
from studio.widgets.train_settings import MAX_LENGTH_RANGE
from studio.workers import BackgroundTask, TaskReporter

SHOWN_PROBLEMS = 20
# The first column says where a row is in its file: the line it starts on (a text file, JSON, CSV), as an
# editor numbers the lines, or its row number (Parquet, the Hub), by the reader's unit (``Sample.unit``);
# for a folder, the file too, as the problems list names it.
WHERE_TITLES = {"line": "Line in file", "row": "Row in file", "folder": "File and place"}
CHAT_COLUMNS = (WHERE_TITLES["line"], "Turns", "First user message", "First assistant reply")
PAIR_COLUMNS = (WHERE_TITLES["line"], "Prompt", "Chosen", "Rejected")
LABELLED_COLUMNS = (WHERE_TITLES["line"], "Prompt", "Completion", "Label")
TEXT_COLUMNS = (WHERE_TITLES["line"], "Characters", "Text")
COLUMN_HELP = {
    "Line in file": "The line of the file where this row starts, as a text editor numbers the lines: go there to "
                    "fix or remove the row. A row that spans several lines counts its first, so this is not the "
                    "row's number.",
    "Row in file": "The row's number in the file, counted from 1, as a table viewer shows it.",
    "File and place": "The file of the folder the row comes from, and the line it starts on (row, for a Parquet "
                      "file), as the problems list names them.",
    "Turns": "Messages in the conversation, the system prompt left out: 2 is one question and its answer.",
    "Characters": "The text's length in characters (the histogram counts tokens once a model is chosen).",
    "First user message": "The conversation's first question, on one line; select the row to read it all below.",
    "First assistant reply": "The first answer, what the model learns to write; select the row to read it all.",
    "Text": "The row's text on one line; select the row to read it all below.",
    "Prompt": "The last message the answers reply to; select the row to see the whole prompt below.",
    "Chosen": "The better answer: preference training makes it more likely than the rejected one.",
    "Rejected": "The worse answer: preference training makes it less likely than the chosen one.",
    "Completion": "An answer KTO learns from: made more likely when its label is true, less when false.",
    "Label": "True: a good answer to learn towards; false: a bad one to learn away from.",
}
# What each value of the summary above the rows means, and what is good.
FACT_HELP = {
    "Format:": "How the rows are read: the layout found (or chosen under How to read it) and the file's type.",
    "Rows in the file:": "Every row the file holds, usable or not.",
    "Usable rows:": "The examples the run makes: the rows in the file less the bad ones and those whose prompt "
                    "alone fills the max length (the line below the summary says how many of each).",
    "Problems:": "Rows that cannot be used, listed below with where they are in the file. Fix them there, or let "
                 "the Train page's Bad rows setting skip them.",
    "Duplicates:": "Rows that repeat an earlier row exactly. They are trained on again, so they weigh more: remove "
                   "them unless that is meant.",
    "Empty answers:": "Rows whose reply is empty, so there is nothing to learn from them; counted among the problems.",
    "Validation split:": "How the usable rows divide between training and validation (Validation, on the left). "
                         "Validation rows measure the eval loss on rows the model never learns from.",
    "Longer than max length:": "Rows with more tokens than the max length: their end is cut off in training and "
                               "never learned. Raise the max length (more memory) or shorten those rows.",
    "Identical pairs:": "Pairs whose chosen and rejected answers are the same: there is nothing to prefer, so "
                        "they are skipped.",
    "Prompts cut off:": "Rows whose prompt alone fills the max length: no answer would be left to learn from, so "
                        "they are skipped. Raise the max length or shorten those prompts.",
}
# The facts of a conversation file, and those of a preference file, each shown only for its kind.
_SFT_FACTS = ("Duplicates:", "Empty answers:", "Validation split:", "Longer than max length:")
_PAIR_FACTS = ("Identical pairs:", "Prompts cut off:")
_PROGRESS_STEPS = 1000
_LONGEST_PROGRESS = "measuring tokens 100%"
_NOT_USED = "(not used)"
_CHOOSE = "(choose a column)"
_ROLE_COLOURS = {"system": "#8e44ad", "user": "#1f5fbf", "assistant": "#2e7d32"}  # other roles: the text colour
_ERROR_STYLE = "color: #c0392b; font-weight: 600;"
_CELL_CHARS = 160
# A row's text shown whole in the row view, up to this much: a row may hold up to the readers'
# bound (64 MiB), which would freeze the window's text view.
_SHOWN_CHARS = 200_000
# The rendered training text: what the model reads, what it learns to write, what is cut off.
_PROMPT_STYLE = "color:#455a64; background-color:#e3e8ec;"
_TRAINED_STYLE = "color:#1b5e20; background-color:#c8e6c9;"
_CUT_STYLE = "color:#9e9e9e; background-color:#fde0e0; text-decoration:line-through;"
_BAR_KEPT = "#2f7ed8"
_BAR_CUT = "#e4572e"
_TEXT_SPLIT_NAMES = {"auto": "Guess from the file", "lines": "One document per line",
                     "chunks": "Chunks of about 2,000 characters"}


def first_content(conversation: list[dict], role: str) -> str:
    """The first ``role`` message on one line, cut to fit a table cell."""
    for message in conversation:
        if message.get("role") == role:
            return _one_line(str(message.get("content", "")))
    return ""


def _one_line(text: str) -> str:
    # Only the start can show in a cell: splitting a row of many megabytes whole would stall the window.
    text = " ".join(text[: 8 * _CELL_CHARS].split())
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


def conversation_html(conversation: list[dict]) -> str:
    parts = []
    for message in conversation:
        role = str(message.get("role", ""))
        colour = _ROLE_COLOURS.get(role, theme.colours().text)
        content = html.escape(_shown(str(message.get("content", ""))))
        parts.append(
            f'<p style="margin-top:10px"><b style="color:{colour}">{html.escape(role)}</b></p>'
            f'<p style="white-space:pre-wrap">{content}</p>'
        )
    return "".join(parts)


def _shown(text: str) -> str:
    """The text as the row view shows it: cut at ``_SHOWN_CHARS``, saying how much is left out."""
    left_out = len(text) - _SHOWN_CHARS
    return text if left_out <= 0 else f"{text[:_SHOWN_CHARS]}… ({left_out:,} more characters not shown)"


def training_text_html(conversation: list[dict], tokenizer: Any, template: str, max_length: int,
                       train_on: str) -> str:
    """The row as the trainer sees it, coloured by what happens to each token."""
    try:
        segments, tokens = training_view(conversation, tokenizer, max_length, template, train_on)
    except StudioError as exc:
        return f'<p style="{_ERROR_STYLE}">{html.escape(str(exc))}</p>'
    styles = {(False, False): _PROMPT_STYLE, (True, False): _TRAINED_STYLE}
    body = "".join(
        f'<span style="{_CUT_STYLE if s.cut else styles[(s.trained, False)]}">{html.escape(s.text)}</span>'
        for s in segments)
    cut = max(0, tokens - max_length)
    summary = f"{tokens:,} tokens" + (f", the last {cut:,} cut off by the max length" if cut else "")
    legend = (f'<span style="{_PROMPT_STYLE}">&nbsp;read only&nbsp;</span> '
              f'<span style="{_TRAINED_STYLE}">&nbsp;learnt (the loss)&nbsp;</span> '
              f'<span style="{_CUT_STYLE}">&nbsp;cut off&nbsp;</span>')
    return (f"<p>{legend}<br/><small>{summary}</small></p>"
            f'<pre style="white-space:pre-wrap; font-family:monospace">{body}</pre>')


def pair_html(pair: dict, tokenizer: Any, max_length: int) -> tuple[str, list[str]]:
    """A pair (or KTO's labelled answer) as its trainer reads it: the prompt rendered through the
    template, read and not learnt, and each answer, learnt; what max length cuts off, struck out.
    Without a tokenizer, the messages as written."""
    answers = [pair["chosen"], pair["rejected"]] if "chosen" in pair else [pair["completion"]]
    if tokenizer is None:
        return conversation_html(pair["prompt"]), [conversation_html(answer) for answer in answers]
    try:
        prompt_ids, answer_ids = tokenise_row(tokenizer, pair)
    except StudioError as exc:
        error = f'<p style="{_ERROR_STYLE}">{html.escape(str(exc))}</p>'
        return error, [error for _answer in answers]

    def span(ids: list[int], style: str) -> str:
        text = tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
        return f'<span style="{style}">{html.escape(_shown(text))}</span>' if text else ""

    def block(body: str, note: str) -> str:
        return f'<p><small>{note}</small></p><pre style="white-space:pre-wrap; font-family:monospace">{body}</pre>'

    cut = prompt_fills(len(prompt_ids), max_length)  # TRL's trainers skip the row: no answer is left to learn
    prompt_note = f"{len(prompt_ids):,} tokens, read only (masked out of the loss)"
    if cut:
        prompt_note += f' <b style="{_ERROR_STYLE}">fills the max length of {max_length:,}: this row is skipped</b>'
    room = max(0, max_length - len(prompt_ids))  # the answer is cut where prompt + answer pass max length
    shown = []
    for ids in answer_ids:
        left = len(ids) - room
        note = (f"{len(ids):,} tokens, not learnt: the prompt fills the max length" if cut else
                f"{len(ids):,} tokens, learnt" + (f", the last {left:,} cut off by the max length" if left > 0 else ""))
        shown.append(block(span(ids[:room], _TRAINED_STYLE) + span(ids[room:], _CUT_STYLE), note))
    return block(span(prompt_ids, _PROMPT_STYLE), prompt_note), shown


def _rows(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def problem_text(problem: RowProblem) -> str:
    where = problem.where()
    if not problem.file:
        where = where[:1].upper() + where[1:]  # "Line 3: ..." reads as a sentence; a file name keeps its spelling
    return f"{where}: {problem.reason}"


@dataclass
class _Opened:
    """The first message of an inspection: what the file is and its first usable rows."""

    source: DatasetSource
    preview: DatasetPreview


@dataclass
class _Columns:
    """Sent instead when no format fits: the file's columns, so the user can map them."""

    columns: list[str]


@dataclass
class _Scanned:
    """The result of an inspection: the whole-file report (None when stopped) and the
    tokenizer it measured with, handed over to the UI thread once the worker is done with it."""

    report: Optional[DatasetReport]
    tokenizer: Any
    model: Optional[str]
    pairs: Optional[PreferenceScan] = None  # a preference file's rows, read for its objective


def _inspect(reference: str, options: DataOptions, model: Optional[str], reporter: TaskReporter) -> _Scanned:
    try:
        source = open_dataset(reference, options)
    except StudioError:
        reporter.emit(_Columns(_columns_if_readable(reference, options.text_split)))
        raise
    # The first rows are drawn before the read of the whole file starts competing with the window.
    reporter.emit(_Opened(source, preview_dataset(source)), wait_until_shown=True)
    tokenizer = None
    if model:
        reporter.progress(0, 0, "loading the tokenizer")
        tokenizer = _load_tokenizer(model, reporter)
    if source.is_preference:
        reporter.progress(0, 0, "measuring prompts" if tokenizer is not None else "reading the pairs")
        scan = scan_preferences(source, tokenizer, objective=default_objective(source.format))
        return _Scanned(None, tokenizer, model, scan)

    def progress(fraction: float) -> None:
        reporter.progress(int(fraction * _PROGRESS_STEPS), _PROGRESS_STEPS,
                          "measuring tokens %p%" if tokenizer is not None else "reading %p%")

    report = scan_dataset(source, tokenizer, progress=progress, cancelled=lambda: reporter.cancelled)
    return _Scanned(report, tokenizer, model)


def _columns_if_readable(reference: str, text_split: str) -> list[str]:
    try:
        return dataset_columns(reference, text_split)
    except StudioError:
        return []


def _load_tokenizer(model: str, reporter: TaskReporter) -> Any:
    from engine.models.store import resolve_model
    from engine.models.tokenizer import load_tokenizer

    return load_tokenizer(resolve_model(model, progress=lambda done, total, message: reporter.progress(0, 0, message)))


class LengthHistogram(QWidget):
    """Rows per token length, bars past the max length in another colour, the cutoff marked."""

    BINS = 40

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.setLabel("bottom", "tokens per row")
        self.plot.setLabel("left", "rows")
        self.plot.setTitle("Token length per row", size="10pt")
        self.plot.hideButtons()
        self.kept_bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush=_BAR_KEPT, pen=None)
        self.cut_bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush=_BAR_CUT, pen=None)
        self.cutoff_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#c0392b", width=2, style=Qt.PenStyle.DashLine),
                                           label="max length {value:.0f}",
                                           labelOpts={"position": 0.9, "color": "#c0392b", "anchors": [(1, 0), (1, 0)]})
        self.empty_text = pg.TextItem("", color="#777", anchor=(0.5, 0.5))
        self.empty_text.setPos(0.5, 0.5)
        self.empty_text.textItem.document().setDefaultTextOption(QTextOption(Qt.AlignmentFlag.AlignHCenter))
        for item in (self.kept_bars, self.cut_bars, self.cutoff_line, self.empty_text):
            self.plot.addItem(item)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        theme.style_plot(self.plot)  # light or dark, following the system
        self._counts = np.zeros(0)
        self._edges = np.zeros(1)
        self._cutoff = 0

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        # The note shown in place of the bars wraps within the plot rather than running past its edges.
        self.empty_text.setTextWidth(max(80, event.size().width() - 24))

    def set_lengths(self, lengths: Optional[np.ndarray], why_empty: str = "") -> None:
        """Show these lengths; with none, show ``why_empty`` in their place."""
        self.empty_text.setText(why_empty)
        if lengths is None or not len(lengths):
            self._counts, self._edges = np.zeros(0), np.zeros(1)
        else:
            top = max(int(lengths.max()), self._cutoff) + 1
            self._counts, self._edges = np.histogram(lengths, bins=self.BINS, range=(0, top))
        self._draw()

    def set_cutoff(self, max_length: int) -> None:
        self._cutoff = max_length
        self._draw()

    def bars(self) -> tuple[int, int]:
        """Rows in the bars drawn as kept and as cut (a bar straddling the cutoff counts as cut)."""
        kept = self._edges[1:] <= self._cutoff
        return int(self._counts[kept].sum()), int(self._counts[~kept].sum())

    def _draw(self) -> None:
        kept = self._edges[1:] <= self._cutoff
        left, right = self._edges[:-1], self._edges[1:]
        self.kept_bars.setOpts(x0=left[kept], x1=right[kept], height=self._counts[kept])
        self.cut_bars.setOpts(x0=left[~kept], x1=right[~kept], height=self._counts[~kept])
        self.cutoff_line.setValue(self._cutoff)
        empty = not len(self._counts)
        self.cutoff_line.setVisible(not empty)
        # pyqtgraph's line label skips rewriting its text while hidden, and a line shown again
        # at an unchanged value does not ask it again: it read "max length 0" beside a line at 512.
        self.cutoff_line.label.valueChanged()
        self.empty_text.setVisible(empty)
        for axis in ("left", "bottom"):
            self.plot.getPlotItem().showAxis(axis, not empty)
        if empty:
            self.plot.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        else:
            self.plot.enableAutoRange()


class DataPage(QWidget):
    """Pick a dataset and see what the trainer will make of it."""

    inspectionFinished = Signal()  # the latest inspection ended: read to the end, stopped or failed
    # A file opened here and the layout it reads as (path, format name): the Train page follows it with
    # its objective (a preference layout trains with DPO or KTO, any other with SFT).
    layoutDetected = Signal(str, str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        # Inspections still running or not yet let go. Python owns them (no Qt parent): with
        # PySide 6.12, deleteLater on a finished task crashes now and then.
        self._tasks: list[BackgroundTask] = []
        # Each inspection's signals carry the ticket it started with: only the latest is shown.
        self._ticket = 0
        self._source: Optional[DatasetSource] = None
        self._samples: list[Sample] = []
        self._report: Optional[DatasetReport] = None
        self._pairs: Optional[PreferenceScan] = None
        self._run_max_length: Optional[int] = None  # the Train page's, as last shown here
        self._tokenizer: Any = None
        self._tokenizer_model: Optional[str] = None
        self._template = ""
        # The columns of the file last read and the format the column choosers are for.
        self._columns: list[str] = []
        self._mapping_format: Optional[str] = None
        self._mapping_combos: dict[str, QComboBox] = {}
        self._inspected: Optional[tuple] = None
        self._build()
        self._show_nothing()
        self._list_preference_sets()

    # ----------------------------------------------------------------- layout
    def _build(self) -> None:
        self.picker = DatasetPicker(self)
        self.folder_button = QPushButton("Open folder…", self)
        self.folder_button.setToolTip("Use every dataset file in a folder (and its subfolders) as one dataset")
        self.folder_button.clicked.connect(self._choose_folder)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setMaximumWidth(260)
        # Wide enough for its longest usual text; a longer one (a model being prepared) is elided.
        self.progress_bar.setMinimumWidth(self.progress_bar.fontMetrics().horizontalAdvance(_LONGEST_PROGRESS) + 24)
        self.progress_bar.setAccessibleName("Reading the dataset")
        self.progress_bar.hide()
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop reading the file; the preview stays")
        self.stop_button.clicked.connect(self._stop)
        self.stop_button.hide()
        self.error_label = QLabel(self)
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()

        top = QHBoxLayout()
        dataset_label = QLabel("&Dataset:", self)
        dataset_label.setBuddy(self.picker.combo)
        top.addWidget(dataset_label)
        top.addWidget(self.picker, 1)
        top.addWidget(self.folder_button)
        top.addWidget(self._build_preference_sets())
        top.addWidget(self.progress_bar)
        top.addWidget(self.stop_button)

        columns = QHBoxLayout()
        columns.addWidget(self._build_settings())
        columns.addWidget(self._build_results(), 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.error_label)
        layout.addLayout(columns, 1)

        self.picker.changed.connect(lambda _path: self._reopen(keep_mapping=False))
        self.table.itemSelectionChanged.connect(self._show_selected_row)

    def _build_settings(self) -> QWidget:
        self.format_combo = QComboBox(self)
        self.format_combo.setAccessibleName("Format")
        self.format_combo.setToolTip("How rows become conversations. Detected from the columns; choose another "
                                     "and map the columns when the detection is wrong.")
        self.format_combo.addItem("Detect automatically", None)
        for spec in FORMATS.values():
            self.format_combo.addItem(spec.title, spec.name)
        self.format_combo.currentIndexChanged.connect(lambda _i: self._reopen(keep_mapping=False))
        self.detected_label = QLabel(self)
        self.detected_label.setWordWrap(True)
        self.mapping_form = QFormLayout()
        self.text_split_combo = QComboBox(self)
        for split in TEXT_SPLITS:
            self.text_split_combo.addItem(_TEXT_SPLIT_NAMES[split], split)
        self.text_split_combo.currentIndexChanged.connect(lambda _i: self._reopen(keep_mapping=True))
        self.text_split_label = QLabel("Plain text:", self)
        self.text_split_label.setBuddy(self.text_split_combo)

        reading = QGroupBox("How to read it", self)
        reading_layout = QFormLayout(reading)
        reading_layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        reading_layout.addRow("Format:", self.format_combo)
        reading_layout.addRow(self.detected_label)
        reading_layout.addRow(self.mapping_form)
        reading_layout.addRow(self.text_split_label, self.text_split_combo)

        self.tokens_check = QCheckBox("Count tokens with", self)
        self.tokens_check.setToolTip("Render every row with this model's chat template and measure it in tokens")
        self.model_picker = ModelPicker(self)
        self.model_picker.setAccessibleName("Model for token counts")
        self.tokens_check.setChecked(self._model_ready(self.model_picker.current_ref()))
        self.tokens_check.toggled.connect(lambda _on: self._reopen(keep_mapping=True))
        self.model_picker.currentIndexChanged.connect(self._model_changed)
        self.max_length_spin = QSpinBox(self)
        self.max_length_spin.setRange(*MAX_LENGTH_RANGE)
        self.max_length_spin.setSingleStep(64)
        self.max_length_spin.setValue(512)
        self.max_length_spin.setSuffix(" tokens")
        self.max_length_spin.setToolTip("Rows longer than this are cut at this many tokens when training: "
                                        "the same setting as the Train page's Max length")
        self.max_length_spin.valueChanged.connect(self._apply_cutoff)
        self.train_on_combo = QComboBox(self)
        self.train_on_combo.addItem("The assistant's replies", "assistant")
        self.train_on_combo.addItem("Every token", "all")
        self.train_on_combo.setToolTip("Which tokens the loss is taken on. Replies only teaches answering; every "
                                       "token also teaches the prompts.")
        self.train_on_combo.currentIndexChanged.connect(lambda _i: self._apply_cutoff())
        self.val_spin = QSpinBox(self)
        self.val_spin.setRange(0, 50)
        self.val_spin.setSuffix(" %")
        self.val_spin.setToolTip("Share of the rows held out of training to measure the eval loss")
        self.val_spin.valueChanged.connect(lambda _v: self._show_counts())

        self.settings_note = QLabel("The next run trains with these: they are the Train page's settings, "
                                    "and a change on either page shows on the other.", self)
        self.settings_note.setWordWrap(True)
        self.settings_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # muted, light or dark
        training = QGroupBox("Preview the training text", self)
        training_layout = QFormLayout(training)
        training_layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        training_layout.addRow(self.tokens_check)
        training_layout.addRow(self.model_picker)
        training_layout.addRow("Max length:", self.max_length_spin)
        training_layout.addRow("Train on:", self.train_on_combo)
        training_layout.addRow("Validation:", self.val_spin)
        training_layout.addRow(self.settings_note)

        column = QWidget(self)
        column.setFixedWidth(310)
        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.addWidget(reading)
        column_layout.addWidget(training)
        column_layout.addStretch(1)
        return column

    def _build_preference_sets(self) -> QWidget:
        """A button in the dataset row whose menu lists the preference sets made in Compare with
        their pair counts; picking one opens it here. In the top row, so the settings column keeps
        its height at the smallest window."""
        self.sets_button = QToolButton(self)
        self.sets_button.setAccessibleName("Preference sets")
        self.sets_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.sets_menu = QMenu(self.sets_button)
        self.sets_menu.triggered.connect(self._open_set)
        self.sets_button.setMenu(self.sets_menu)
        return self.sets_button

    def _build_results(self) -> QWidget:
        self.format_value = QLabel(self)
        self.rows_value = QLabel(self)
        self.usable_value = QLabel(self)
        self.problems_value = QLabel(self)
        self.duplicates_value = QLabel(self)
        self.empty_value = QLabel(self)
        self.split_value = QLabel(self)
        self.truncated_value = QLabel(self)
        self.identical_value = QLabel(self)
        self.prompt_cut_value = QLabel(self)
        # Every count in one line with the reason for each difference: the line the run's log will say.
        self.counts_label = QLabel(self)
        self.counts_label.setWordWrap(True)
        self.counts_label.setAccessibleName("What training makes of the rows")
        self.counts_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        facts = QGridLayout()
        self._facts: dict[str, tuple[QLabel, QLabel]] = {}
        for index, (label, value) in enumerate((
                ("Format:", self.format_value), ("Rows in the file:", self.rows_value),
                ("Usable rows:", self.usable_value), ("Problems:", self.problems_value),
                ("Duplicates:", self.duplicates_value), ("Empty answers:", self.empty_value),
                ("Validation split:", self.split_value), ("Longer than max length:", self.truncated_value),
                ("Identical pairs:", self.identical_value), ("Prompts cut off:", self.prompt_cut_value))):
            name = QLabel(label, self)
            self._facts[label] = (name, value)
            value.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            value.setToolTip(FACT_HELP[label])
            value.setWordWrap(True)  # a long value takes two lines rather than widening the page
            name.setToolTip(FACT_HELP[label])
            top = Qt.AlignmentFlag.AlignTop  # beside a value wrapped onto two lines, the name stays on its first
            facts.addWidget(name, index // 2, 2 * (index % 2), top)
            facts.addWidget(value, index // 2, 2 * (index % 2) + 1, top)
        facts.setColumnStretch(1, 1)
        facts.setColumnStretch(3, 1)
        self.problems_list = QListWidget(self)
        self.problems_list.setAccessibleName("Problems")
        self.problems_list.setToolTip("Rows the trainer will skip, with where they are in the file")

        self.table = QTableWidget(0, len(CHAT_COLUMNS), self)
        self.table.setAccessibleName("Rows")
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        # Fit the narrow columns to their first rows: measuring every preview row took tens of
        # milliseconds of layout whenever a file opened, a visible stall of the window.
        self.table.horizontalHeader().setResizeContentsPrecision(30)
        self.conversation_view = QTextBrowser(self)
        self.conversation_view.setAccessibleName("Training text")
        self.conversation_view.setPlaceholderText("Select a row to see the text the model is trained on.")
        self.histogram = LengthHistogram(self)
        self.histogram.setMinimumHeight(170)
        self.preview_label = QLabel(self)
        self.pair_view = self._build_pair_view()

        below = QSplitter(Qt.Orientation.Horizontal, self)
        below.addWidget(self.conversation_view)
        below.addWidget(self.histogram)
        below.addWidget(self.pair_view)
        below.setSizes([440, 340, 780])
        rows = QWidget(self)
        rows_layout = QVBoxLayout(rows)
        rows_layout.setContentsMargins(0, 0, 0, 0)
        rows_layout.addWidget(self.preview_label)
        rows_layout.addWidget(self.table)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(rows)
        splitter.addWidget(below)
        splitter.setSizes([300, 340])
        results = QWidget(self)
        layout = QVBoxLayout(results)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(facts)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.problems_list)
        layout.addWidget(splitter, 1)
        return results

    def _build_pair_view(self) -> QWidget:
        """The selected pair: its prompt above, the chosen and the rejected answers side by side."""
        view = QWidget(self)
        self.prompt_view = QTextBrowser(view)
        self.prompt_view.setAccessibleName("Prompt")
        self.answer_views: list[QTextBrowser] = []
        self.answer_titles: list[QLabel] = []
        answers = QSplitter(Qt.Orientation.Horizontal, view)
        for name in ("Chosen", "Rejected"):
            box = QWidget(answers)
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(0, 0, 0, 0)
            title = QLabel(box)
            browser = QTextBrowser(box)
            browser.setAccessibleName(f"{name} answer")
            box_layout.addWidget(title)
            box_layout.addWidget(browser, 1)
            answers.addWidget(box)
            self.answer_titles.append(title)
            self.answer_views.append(browser)
        self.prompt_title = QLabel("<b>Prompt</b> (the template rendered; read, not learnt)", view)
        self.pair_legend = QLabel(f'<span style="{_PROMPT_STYLE}">&nbsp;read only&nbsp;</span> '
                                  f'<span style="{_TRAINED_STYLE}">&nbsp;learnt&nbsp;</span> '
                                  f'<span style="{_CUT_STYLE}">&nbsp;cut off&nbsp;</span>', view)
        heading = QHBoxLayout()
        heading.addWidget(self.prompt_title, 1)
        heading.addWidget(self.pair_legend)
        split = QSplitter(Qt.Orientation.Vertical, view)
        split.addWidget(self.prompt_view)
        split.addWidget(answers)
        split.setSizes([140, 260])
        layout = QVBoxLayout(view)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(heading)
        layout.addWidget(split, 1)
        view.hide()
        return view

    # ------------------------------------------------------------ page api
    @property
    def dataset(self) -> Optional[DatasetReport]:
        """The whole-file report of the shown dataset, once it has been read to the end."""
        return self._report

    @property
    def column_choosers(self) -> dict[str, QComboBox]:
        """The column chooser of each field of the format being read, by field name."""
        return dict(self._mapping_combos)

    def refresh(self) -> None:
        """Re-list the datasets and models and inspect the picked file if it has not been yet.

        The window calls this when the page is shown, so a file is only read once someone looks.
        """
        self.picker.refresh()
        self.model_picker.refresh()
        self._list_preference_sets()
        if self._wanted() != self._inspected:
            self._reopen(keep_mapping=True)

    @property
    def busy(self) -> bool:
        return any(task.running for task in self._tasks)

    def training_settings(self) -> Optional[dict[str, Any]]:
        """The dataset shown here and how to read and train on it, as RunConfig fields, so a run
        started from the Train page trains on exactly what this page previews."""
        path = self.picker.current_path()
        if not path:
            return None
        options = self._options(keep_mapping=True)
        settings = {
            "dataset": path,
            "data_format": options.format,
            "columns": dict(options.columns),
            "text_split": options.text_split,
            "train_on": self.train_on_combo.currentData(),
            "val_fraction": self.val_spin.value() / 100,
        }
        # The max length goes back only when it was changed here: the Train page's own value may
        # have moved since it was shown here (a fit to the device ending meanwhile) and must win.
        if self.max_length_spin.value() != self._run_max_length:
            settings["max_length"] = self.max_length_spin.value()
        return settings

    def set_run_settings(self, max_length: int, train_on: str, val_fraction: float) -> None:
        """Show the Train page's max length, loss and validation share (what the next run uses)."""
        self._run_max_length = max_length
        self.max_length_spin.setValue(max_length)
        self.train_on_combo.setCurrentIndex(max(0, self.train_on_combo.findData(train_on)))
        self.val_spin.setValue(round(val_fraction * 100))

    # ------------------------------------------------------------ inspecting
    def _options(self, keep_mapping: bool) -> DataOptions:
        """What the controls ask for. The column choices count only for the format they were made
        for, and are dropped (so the new file's columns are detected) when another file is picked."""
        chosen = self.format_combo.currentData()
        columns = {}
        if keep_mapping and self._mapping_format is not None and chosen in (None, self._mapping_format):
            columns = {field: combo.currentData() for field, combo in self._mapping_combos.items()
                       if combo.currentData() is not None}
        return DataOptions(chosen, columns, self.text_split_combo.currentData())

    def _wanted(self, options: Optional[DataOptions] = None) -> tuple:
        options = options or self._options(keep_mapping=True)
        model = self.model_picker.current_ref() if self.tokens_check.isChecked() else None
        return (self.picker.current_path(), options.format, tuple(sorted(options.columns.items())),
                options.text_split, model)

    def _reopen(self, keep_mapping: bool) -> None:
        options = self._options(keep_mapping)
        if not keep_mapping:
            # The columns chosen for the last file or format are gone with it, not only from this read:
            # a refresh before the new preview lands would otherwise read the new file with them.
            self._mapping_format = None
        self._inspected = self._wanted(options)
        path, model = self._inspected[0], self._inspected[-1]
        self._ticket += 1
        self.error_label.hide()
        for task in self._tasks:
            task.cancel()
        # Finished inspections are let go here, never inside their own signals.
        self._tasks = [task for task in self._tasks if task.running]
        if not path:
            self._set_busy(False)
            self._show_nothing()
            return
        if model != self._tokenizer_model:
            self._tokenizer, self._tokenizer_model = None, None
        task = BackgroundTask(partial(_inspect, path, options, model))
        task.messages.connect(partial(self._opened, self._ticket))
        task.progress.connect(partial(self._progress, self._ticket))
        task.succeeded.connect(partial(self._scanned, self._ticket))
        task.failed.connect(partial(self._failed, self._ticket, options))
        self._tasks.append(task)
        self._set_busy(True)
        self.progress_bar.setRange(0, 0)
        self.progress_bar.setFormat("opening")
        task.start()

    def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def _set_busy(self, busy: bool) -> None:
        self.progress_bar.setVisible(busy)
        self.stop_button.setVisible(busy)

    def _progress(self, ticket: int, done: int, total: int, message: str) -> None:
        if ticket != self._ticket:
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(done)
        shown = self.progress_bar.fontMetrics().elidedText(message, Qt.TextElideMode.ElideRight,
                                                           self.progress_bar.minimumWidth() - 24)
        self.progress_bar.setFormat(shown)
        self.progress_bar.setToolTip(message if shown != message else "")

    def _opened(self, ticket: int, messages: list) -> None:
        if ticket != self._ticket:
            return
        for message in messages:
            if isinstance(message, _Columns):
                self._columns = message.columns
            else:
                self._show_preview(message.source, message.preview)

    def _scanned(self, ticket: int, result: _Scanned) -> None:
        if ticket != self._ticket:
            return
        self._set_busy(False)
        if result.pairs is not None:
            self._tokenizer, self._tokenizer_model = result.tokenizer, result.model
            self._show_pairs(result.pairs)
        elif result.report is None:
            self.rows_value.setText("not counted (stopped)")
            for label in (self.usable_value, self.problems_value, self.duplicates_value, self.empty_value,
                          self.split_value, self.truncated_value):
                label.setText("–")
            self.counts_label.clear()
            self.histogram.set_lengths(None, "stopped before the end of the file")
            self._show_selected_row()  # no longer "counting"
        else:
            self._tokenizer, self._tokenizer_model = result.tokenizer, result.model
            if result.tokenizer is not None:
                self._template, _fallback = chat_template_for(result.tokenizer)
            self._show_report(result.report)
        self.inspectionFinished.emit()

    def _failed(self, ticket: int, options: DataOptions, message: str) -> None:
        if ticket != self._ticket:
            return
        self._set_busy(False)
        self._show_nothing()
        if options.format is not None:
            # Offer the chosen format's fields, so the columns it could not find can be chosen.
            self._set_mapping_fields(options.format, options.columns)
        elif self._columns and "cannot tell the format" in message:
            message += " (choose the format on the left, then a column for each field)"
        self.error_label.setText(f"This dataset cannot be used: {message}")
        self.error_label.show()
        self.inspectionFinished.emit()

    def _mapping_changed(self) -> None:
        # A column chosen by hand fixes the format it was chosen for.
        self.format_combo.blockSignals(True)
        self.format_combo.setCurrentIndex(self.format_combo.findData(self._mapping_format))
        self.format_combo.blockSignals(False)
        self._reopen(keep_mapping=True)

    def _model_changed(self, _index: int) -> None:
        if self.tokens_check.isChecked():
            self._reopen(keep_mapping=True)

    def _choose_folder(self) -> None:
        start = str(Path(self.picker.current_path()).parent) if self.picker.current_path() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of dataset files", start)
        if folder:
            self.picker.set_path(folder)

    def _no_lengths_reason(self) -> str:
        if self.tokens_check.isChecked():
            return "no rows to measure"
        return "Tick \u201cCount tokens with\u201d and choose a model\nto see how long the rows are in tokens"

    def _why_no_tokens(self) -> str:
        """Why the selected row is shown without its tokens: what the checkbox asks and what the
        count is doing (it said "Tick …" while the box was ticked and the count under way)."""
        if not self.tokens_check.isChecked():
            return "Tick \u201cCount tokens with\u201d to see the exact tokens trained on."
        if not self.model_picker.current_ref():
            return "Choose a model beside \u201cCount tokens with\u201d to see the exact tokens trained on."
        if self.busy:
            return (f"Counting tokens with {self.model_picker.currentText()}\u2026 "
                    "the exact tokens trained on show here when it is done.")
        return "Tokens not counted: the reading stopped before the end. Open the file again to count them."

    @staticmethod
    def _model_ready(ref: str) -> bool:
        from engine.models.store import list_models

        return any(record.name == ref and record.ready for record in list_models())

    # --------------------------------------------------------------- showing
    def _show_nothing(self) -> None:
        self._source, self._samples, self._report, self._pairs = None, [], None, None
        self._show_kind(preference=False)
        self.problems_list.clear()
        self.problems_list.hide()
        self.table.setRowCount(0)
        self.table.setColumnCount(len(CHAT_COLUMNS))
        self.table.setHorizontalHeaderLabels(CHAT_COLUMNS)
        set_column_tips(self.table, COLUMN_HELP)
        self.conversation_view.clear()
        self.preview_label.clear()
        self.detected_label.clear()
        self.histogram.set_lengths(None, self._no_lengths_reason())
        self._set_mapping_fields(None, {})
        self.text_split_label.hide()
        self.text_split_combo.hide()
        for label in (self.format_value, self.rows_value, self.usable_value, self.problems_value,
                      self.duplicates_value, self.empty_value, self.split_value, self.truncated_value):
            label.setText("–")
        self.counts_label.clear()

    def _show_preview(self, source: DatasetSource, preview: DatasetPreview) -> None:
        self._source, self._samples, self._report, self._pairs = source, preview.samples, None, None
        self._show_kind(source.is_preference)
        kind = "folder" if source.kind == "folder" else f"{source.kind.upper()} file"
        self.format_value.setText(f"{source.layout.title} · {kind}")
        chosen = self.format_combo.currentData() is not None
        self.detected_label.setText(("Reading as: " if chosen else "Detected: ") + source.layout.title
                                    + (f"\nIgnored columns: {', '.join(source.ignored_columns)}"
                                       if source.ignored_columns else ""))
        self._columns = source.columns
        self._set_mapping_fields(None if source.kind == "text" else source.format, source.mapping)
        is_text = source.kind == "text" or (source.kind == "folder" and source.format == "text")
        self.text_split_label.setVisible(is_text)
        self.text_split_combo.setVisible(is_text)
        waiting = "reading…"
        for label in (self.rows_value, self.usable_value, self.problems_value, self.duplicates_value,
                      self.empty_value, self.split_value, self.identical_value):
            label.setText(waiting)
        self.prompt_cut_value.setText(waiting if self.tokens_check.isChecked() else "choose a model to count tokens")
        self.truncated_value.setText(waiting if self.tokens_check.isChecked() else "choose a model to count tokens")
        self.counts_label.clear()
        self.histogram.set_lengths(None, "measuring…" if self.tokens_check.isChecked() else self._no_lengths_reason())
        self._show_problems(preview.problems)
        self._fill_table(source, preview.samples, complete=preview.complete)
        self.layoutDetected.emit(self._inspected[0], source.format)

    def _set_mapping_fields(self, format_name: Optional[str], mapping: dict[str, str]) -> None:
        """One column chooser per field of the format, set to the columns in use."""
        while self.mapping_form.rowCount():
            self.mapping_form.removeRow(0)
        self._mapping_combos = {}
        self._mapping_format = format_name if self._columns else None
        if self._mapping_format is None:
            return
        spec = FORMATS[format_name]
        for field in spec.fields:
            combo = QComboBox(self)
            combo.setAccessibleName(f"Column for {field}")
            combo.addItem(_NOT_USED if field not in spec.required else _CHOOSE, None)
            for column in self._columns:
                combo.addItem(column, column)
            combo.setCurrentIndex(max(0, combo.findData(mapping.get(field))))
            combo.currentIndexChanged.connect(lambda _i: self._mapping_changed())
            self._mapping_combos[field] = combo
            self.mapping_form.addRow(f"{field}:", combo)

    def _fill_table(self, source: DatasetSource, samples: list[Sample], complete: bool) -> None:
        is_text = source.format == "text"
        labelled = source.format == "unpaired_preference"
        headers = list(TEXT_COLUMNS if is_text else LABELLED_COLUMNS if labelled else PAIR_COLUMNS
                       if source.is_preference else CHAT_COLUMNS)
        in_folder = any(sample.file for sample in samples)
        headers[0] = WHERE_TITLES["folder" if in_folder else samples[0].unit if samples else "line"]
        self.table.clearSelection()
        self.table.setRowCount(0)
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        set_column_tips(self.table, COLUMN_HELP)
        header = self.table.horizontalHeader()
        narrow = 1 if source.is_preference else 2  # a pair's prompt and answers share the width
        for column in range(len(headers)):
            mode = QHeaderView.ResizeMode.ResizeToContents if column < narrow else QHeaderView.ResizeMode.Stretch
            header.setSectionResizeMode(column, mode)
        self.table.setRowCount(len(samples))
        for row, sample in enumerate(samples):
            where = f"{sample.file} {sample.unit} {sample.line}" if in_folder else str(sample.line)
            if is_text:
                content = sample.conversation[0]["content"]
                cells = (where, f"{len(content):,}", _one_line(content))
            elif sample.pair is not None:
                pair = sample.pair
                prompt = _one_line(pair["prompt"][-1]["content"])
                cells = ((where, prompt, first_content(pair["completion"], "assistant"), str(pair["label"]).lower())
                         if labelled else (where, prompt, first_content(pair["chosen"], "assistant"),
                                           first_content(pair["rejected"], "assistant")))
            else:
                cells = (where, str(sum(m["role"] != "system" for m in sample.conversation)),
                         first_content(sample.conversation, "user"), first_content(sample.conversation, "assistant"))
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        # Rows read without a problem: the token counts above may still cut some of them.
        self.preview_label.setText(f"All {len(samples):,} rows read:" if complete
                                   else f"The first {len(samples):,} rows read:")
        if samples:
            self.table.selectRow(0)

    def _show_problems(self, problems: list[RowProblem], total: Optional[int] = None) -> None:
        self.problems_list.clear()
        for problem in problems[:SHOWN_PROBLEMS]:
            self.problems_list.addItem(problem_text(problem))
        more = (total if total is not None else len(problems)) - min(len(problems), SHOWN_PROBLEMS)
        if more > 0:
            self.problems_list.addItem(f"… and {more:,} more")
        self.problems_list.setVisible(bool(problems))
        if problems:
            # As tall as its lines, up to four; it scrolls beyond that.
            lines = min(self.problems_list.count(), 4)
            self.problems_list.setFixedHeight(lines * self.problems_list.sizeHintForRow(0)
                                              + 2 * self.problems_list.frameWidth() + 2)

    def _show_report(self, report: DatasetReport) -> None:
        self._report = report
        self.rows_value.setText(f"{report.total_rows:,}")
        self.duplicates_value.setText(f"{report.duplicates:,}" + (" (repeats of earlier rows)" if report.duplicates
                                                                   else ""))
        self.empty_value.setText(f"{report.empty_answers:,}" + (" (counted among the problems)"
                                                                 if report.empty_answers else ""))
        self.histogram.set_lengths(report.token_lengths, self._no_lengths_reason())
        self._apply_cutoff()
        if report.chat_template_fallback:
            self.detected_label.setText(self.detected_label.text() + "\nThe model has no chat template: "
                                        "training uses ChatML and saves it with the adapter.")

    def _show_pairs(self, scan: PreferenceScan) -> None:
        self._pairs = scan
        self.rows_value.setText(f"{scan.read.total_rows:,}")
        first = scan.read.first_identical
        self.identical_value.setText(f"{scan.read.identical:,}" + (f" (first at {first.where()}; skipped)"
                                                                  if first else ""))
        self._apply_cutoff()

    def _show_kind(self, preference: bool) -> None:
        """The facts and views of a preference file, or those of a conversation file."""
        for label, (name, value) in self._facts.items():
            visible = (label not in _SFT_FACTS or not preference) and (label not in _PAIR_FACTS or preference)
            name.setVisible(visible)
            value.setVisible(visible)
        self.conversation_view.setVisible(not preference)
        self.histogram.setVisible(not preference)
        self.pair_view.setVisible(preference)

    def _show_pair_counts(self) -> None:
        counts = self._pairs.counts(self.max_length_spin.value())
        objective = counts.objective.upper()
        self.counts_label.setText(f"As {objective} trains on it: {counts.sentence()}")
        self.usable_value.setText(f"{counts.rows:,}")
        self.problems_value.setText(f"{_rows(counts.bad_rows)} will be skipped" if counts.bad_rows else "none")
        self._show_problems(counts.problems, total=counts.bad_rows)
        if counts.prompt_cut is None:
            self.prompt_cut_value.setText("choose a model to count tokens")
        else:
            first = counts.first_cut
            self.prompt_cut_value.setText(f"{counts.prompt_cut:,}" + (f" (first at {first.where()}; skipped)"
                                                                      if first else ""))

    def _show_counts(self) -> None:
        """What the next run makes of the rows with these settings: the engine's counts, as its log says them."""
        if self._pairs is not None:
            self._show_pair_counts()
            return
        if self._report is None:
            return
        counts = self._report.row_counts(self.max_length_spin.value(), self.train_on_combo.currentData(),
                                         self.val_spin.value() / 100)
        self.counts_label.setText(counts.sentence())
        self.usable_value.setText(f"{counts.examples:,}")
        self.problems_value.setText(f"{_rows(counts.bad)} will be skipped" if counts.bad else "none")
        self._show_problems(self._report.problems, total=counts.bad)
        train, held_out = counts.split
        self.split_value.setText(f"{train:,} to train on, {held_out:,} to validate" if held_out
                                 else "none (set a share to hold out)")
        if not counts.measured:
            self.truncated_value.setText("choose a model to count tokens")
            return
        parts = [f"{_rows(counts.cut)} ({100 * counts.cut / counts.examples:.1f}%) would be truncated"] \
            if counts.cut else []
        if counts.nothing_to_learn:
            parts.append(f"{counts.nothing_to_learn:,} skipped")  # why: the counts line below says
        self.truncated_value.setText(", ".join(parts) or "none")

    def _apply_cutoff(self) -> None:
        self.histogram.set_cutoff(self.max_length_spin.value())
        self._show_counts()
        self._show_selected_row()

    def _show_selected_row(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or rows[0].row() >= len(self._samples):
            self.conversation_view.clear()
            return
        sample = self._samples[rows[0].row()]
        if sample.pair is not None:
            self._show_pair(sample.pair)
            return
        conversation = sample.conversation
        if self._tokenizer is None:
            self.conversation_view.setHtml(
                conversation_html(conversation) + f"<p><small>{html.escape(self._why_no_tokens())}</small></p>")
            return
        self.conversation_view.setHtml(training_text_html(
            conversation, self._tokenizer, self._template, self.max_length_spin.value(),
            self.train_on_combo.currentData()))

    def _show_pair(self, pair: dict) -> None:
        prompt, answers = pair_html(pair, self._tokenizer, self.max_length_spin.value())
        if self._tokenizer is None:
            prompt += f"<p><small>{html.escape(self._why_no_tokens())}</small></p>"
        self.prompt_view.setHtml(prompt)
        titles = (["<b>Chosen</b> (the better answer)", "<b>Rejected</b> (the worse answer)"] if "chosen" in pair
                  else [f"<b>Completion</b>, labelled {'good' if pair['label'] else 'bad'}"])
        for index, (title, view) in enumerate(zip(self.answer_titles, self.answer_views)):
            shown = index < len(answers)
            title.parentWidget().setVisible(shown)
            if shown:
                title.setText(titles[index])
                view.setHtml(answers[index])

    # ------------------------------------------------------------ preference sets
    def _list_preference_sets(self) -> None:
        self.sets_menu.clear()
        sets = preference_sets()
        for preference_set in sets:
            action = self.sets_menu.addAction(f"{preference_set.name} — {preference_set.pairs:,} "
                                              f"pair{'' if preference_set.pairs == 1 else 's'}")
            action.setData(str(preference_set.path))
            action.setToolTip(str(preference_set.path))
        pairs = sum(preference_set.pairs for preference_set in sets)
        self.sets_button.setText(f"My preferences ({pairs:,} pair{'' if pairs == 1 else 's'})" if sets
                                 else "My preferences")
        self.sets_button.setEnabled(bool(sets))
        self.sets_button.setToolTip(
            "The pairs you marked in Compare (A is better, B is better), one set per name: pick one to look "
            "inside it here." if sets else "None yet: mark the better answers in Compare (A is better, B is "
            "better) and each choice is kept as a pair to train on.")

    def _open_set(self, action: QAction) -> None:
        self.picker.set_path(action.data())
