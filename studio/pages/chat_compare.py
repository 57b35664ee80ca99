"""Compare: one prompt to two to four columns (the base model, adapters, a combination of
two adapters), answered with the same seed and settings, side by side.

This module is the view: the columns, their choosers and the prompt, and under them the bars
that turn a judged pair into a preference pair (``studio.pages.chat_preferences``). The Chat
page runs the comparison on its session and feeds the replies in as they stream.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.pages.chat_preferences import Comparison, PreferencePanel
from studio.widgets.chat_widgets import (
    ASSISTANT_COLOUR,
    NOTE_COLOUR,
    REPLY_FIGURES_HELP,
    BROWSE_GGUF,
    BROWSE_GGUF_ITEM,
    AdapterEntry,
    LiveRate,
    MessageBox,
    Transcript,
    column_choice,
    describe_reply,
    fill_combo,
    is_gguf,
)
from studio.widgets.pickers import ElidingComboBox

if TYPE_CHECKING:
    from engine.chat.blends import ColumnChoice
    from engine.chat.compare import ColumnResult

MAX_COLUMNS = 4
_BLEND = "__combination__"  # the chooser item that opens the combination row


class ColumnChooser(QWidget):
    """What one column answers with: the base model, one adapter, two adapters combined, or a
    GGUF file (answered by llama.cpp)."""

    browseRequested = Signal()  # "GGUF file…" was picked: the page asks for a file (pick_file)

    def __init__(self, number: int, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._kept_index = 0  # what to go back to when no file is picked after "GGUF file…"
        self.combo = ElidingComboBox(self)
        self.combo.setAccessibleName(f"Column {number}")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(10)
        self.parts = [ElidingComboBox(self), ElidingComboBox(self)]
        self.weights = [QDoubleSpinBox(self), QDoubleSpinBox(self)]
        self.blend_row = QWidget(self)
        blend = QGridLayout(self.blend_row)
        blend.setContentsMargins(0, 0, 0, 0)
        for row, (part, weight) in enumerate(zip(self.parts, self.weights)):
            part.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            part.setMinimumContentsLength(8)
            part.setAccessibleName(f"Column {number} adapter {row + 1}")
            weight.setRange(-2.0, 2.0)
            weight.setSingleStep(0.1)
            weight.setValue(1.0)
            weight.setPrefix("× ")
            weight.setAccessibleName(f"Column {number} weight {row + 1}")
            weight.setToolTip("How much of this adapter's change to the weights goes into the combination: "
                              "1 is all of it, 0.5 half, a negative weight subtracts it")
            blend.addWidget(part, row, 0)
            blend.addWidget(weight, row, 1)
        blend.setColumnStretch(0, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.blend_row)
        self.combo.currentIndexChanged.connect(self._show_blend_row)
        self.combo.currentIndexChanged.connect(self._picked)
        self.set_entries([])

    def set_entries(self, entries: list[AdapterEntry]) -> None:
        adapters = [entry for entry in entries if not is_gguf(entry.ref)]
        blend = (("Combination of two adapters…", _BLEND),) if adapters else ()
        fill_combo(self.combo, entries, base_item="Base model", extras=(*blend, BROWSE_GGUF_ITEM))
        for part in self.parts:
            fill_combo(part, adapters, base_item=None)
        self._show_blend_row()

    def pick_file(self, ref: Optional[str]) -> None:
        """The file asked for after "GGUF file…" (its chooser data), or None: none was picked."""
        index = self.combo.findData(ref) if ref else -1
        self.combo.setCurrentIndex(index if index >= 0 else self._kept_index)

    def _picked(self, index: int) -> None:
        if self.combo.currentData() == BROWSE_GGUF:
            self.browseRequested.emit()
        else:
            self._kept_index = index

    def select(self, index: int) -> None:
        self.combo.setCurrentIndex(index)

    def choice(self) -> "ColumnChoice":
        from engine.chat.blends import Blend

        data = self.combo.currentData()
        if data != _BLEND:
            return column_choice(data)
        return Blend(tuple((part.currentData(), weight.value()) for part, weight in zip(self.parts, self.weights)))

    def label(self) -> str:
        from engine.chat.blends import Blend

        choice = self.choice()
        if not isinstance(choice, Blend):
            return self.combo.currentText()
        return " + ".join(f"{weight.value():g}×{part.currentText()}" if weight.value() != 1 else part.currentText()
                          for part, weight in zip(self.parts, self.weights))

    def _show_blend_row(self, _index: int = 0) -> None:
        self.blend_row.setVisible(self.combo.currentData() == _BLEND)


class CompareColumn(QWidget):
    """A chooser, the streamed reply, its figures and a copy button."""

    def __init__(self, number: int, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.chooser = ColumnChooser(number, self)
        self.output = Transcript(self)
        self.output.setAccessibleName(f"Column {number} reply")
        self.stats_label = QLabel(self)
        self.stats_label.setToolTip(REPLY_FIGURES_HELP)
        self.stats_label.setStyleSheet(f"color: {NOTE_COLOUR};")
        self.stats_label.setWordWrap(True)
        # Two lines in a narrow column; reserved, so that a column whose chooser is taller
        # (a combination) does not squeeze its figures out of sight.
        self.stats_label.setMinimumHeight(2 * self.stats_label.fontMetrics().lineSpacing() + 2)
        self.copy_button = QPushButton("Copy", self)
        self.copy_button.setToolTip("Copy this reply")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(self._copy)
        self.reply_text = ""
        self.result: Optional["ColumnResult"] = None  # of the latest comparison, once this column ended
        self.rate = LiveRate()
        footer = QHBoxLayout()
        footer.addWidget(self.stats_label, 1)
        footer.addWidget(self.copy_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.chooser)
        layout.addWidget(self.output, 1)
        layout.addLayout(footer)

    def begin(self) -> None:
        self.output.clear()
        self.output.begin_turn(self.chooser.label(), ASSISTANT_COLOUR)
        self.reply_text = ""
        self.rate = LiveRate()
        self.stats_label.setText("waiting for its turn…")
        self.copy_button.setEnabled(False)

    def append(self, pieces: list[str]) -> None:
        self.output.append_text("".join(pieces))
        self.rate.add(len(pieces), time.perf_counter())
        self.stats_label.setText(f"Generating… {self.rate.describe()}")

    def finish(self, result: "ColumnResult") -> None:
        self.result = result
        if result.reply is None:
            self.output.add_error(result.error or "no reply")
            self.stats_label.clear()
            return
        self.reply_text = result.reply.reply
        if result.reply.stopped:
            self.output.append_text("  [stopped]", NOTE_COLOUR, italic=True)
        self.stats_label.setText(describe_reply(result.reply, seed=False))
        self.copy_button.setEnabled(True)

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.reply_text)


class CompareView(QWidget):
    """The comparison's columns and prompt; the Chat page runs what it asks for."""

    compareRequested = Signal()
    stopRequested = Signal()
    fileRequested = Signal(int)  # column (from 0) whose "GGUF file…" was picked: answered by pick_file

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.count_box = QSpinBox(self)
        self.count_box.setRange(2, MAX_COLUMNS)
        self.count_box.setValue(2)
        self.count_box.setAccessibleName("Columns")
        self.count_box.setToolTip("How many replies to put side by side")
        hint = QLabel("Every column answers the same prompt with the same settings and seed, one after another "
                      "on the loaded model; only the adapter differs, or llama.cpp answers from a GGUF file.", self)
        hint.setWordWrap(True)
        hint.setStyleSheet(f"color: {NOTE_COLOUR};")
        self.columns = [CompareColumn(number + 1, self) for number in range(MAX_COLUMNS)]
        self.prompt_box = MessageBox(self)
        self.prompt_box.setAccessibleName("Prompt to compare")
        self.prompt_box.setPlaceholderText("A prompt for every column. Ctrl+Enter compares.")
        self.prompt_box.setFixedHeight(72)
        self.compare_button = QPushButton("Compare", self)
        self.compare_button.setToolTip("Send the prompt to every column (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop the running column and skip the rest")
        self.status_label = QLabel(self)
        self.status_label.setAccessibleName("Comparison status")
        self.status_label.setWordWrap(True)
        self.preferences = PreferencePanel(self.columns, self)

        top = QHBoxLayout()
        top.addWidget(QLabel("Columns:", self))
        top.addWidget(self.count_box)
        top.addSpacing(12)
        top.addWidget(hint, 1)
        grid = QHBoxLayout()
        for column in self.columns:
            grid.addWidget(column, 1)
        buttons = QVBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        compose = QHBoxLayout()
        compose.addWidget(self.prompt_box, 1)
        compose.addLayout(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(grid, 1)
        layout.addWidget(self.preferences)
        layout.addLayout(compose)
        layout.addWidget(self.status_label)

        for index, column in enumerate(self.columns):
            column.chooser.browseRequested.connect(partial(self.fileRequested.emit, index))
        self.count_box.valueChanged.connect(self._show_columns)
        self.compare_button.clicked.connect(self.compareRequested)
        self.prompt_box.submitted.connect(self.compareRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self.preferences.said.connect(self.show_status)
        self._show_columns()

    def set_entries(self, entries: list[AdapterEntry]) -> None:
        """New adapter lists for every chooser. The first time adapters exist, the columns
        are set up as the usual comparison: base, adapter, adapter (and the two combined)."""
        had_adapters = self.columns[0].chooser.parts[0].count() > 0
        for column in self.columns:
            column.chooser.set_entries(entries)
        adapters = sum(not is_gguf(entry.ref) for entry in entries)
        if adapters and not had_adapters:
            self._default_columns(adapters)

    def _default_columns(self, adapters: int) -> None:
        # Adapters are listed first, after the base model, so items 1 and 2 are adapters.
        self.columns[0].chooser.select(0)
        self.columns[1].chooser.select(1)
        self.columns[2].chooser.select(min(2, adapters))
        combination = self.columns[3].chooser
        combination.select(combination.combo.findData(_BLEND))
        combination.parts[1].setCurrentIndex(min(1, adapters - 1))
        # Three columns to start: a fourth reply is one click away, and each costs a reply's time.
        self.count_box.setValue(2 if adapters == 1 else 3)

    def set_columns(self, refs: list[Optional[str]]) -> None:
        """Show one column per chooser data in ``refs`` (None: the base model), in that order."""
        self.count_box.setValue(len(refs))
        for column, ref in zip(self.columns, refs):
            column.chooser.select(0 if ref is None else max(column.chooser.combo.findData(ref), 0))

    def visible_columns(self) -> list[CompareColumn]:
        return self.columns[:self.count_box.value()]

    def choices(self) -> list["ColumnChoice"]:
        """What each visible column answers with; StudioError for an impossible combination."""
        return [column.chooser.choice() for column in self.visible_columns()]

    def prompt(self) -> str:
        return self.prompt_box.toPlainText().strip()

    def begin(self, comparison: Comparison) -> None:
        for column in self.columns:
            column.result = None  # a hidden column has no reply in this comparison
        for column in self.visible_columns():
            column.begin()
        self.preferences.begin(comparison, [column.chooser.label() for column in self.visible_columns()])
        self.status_label.setText("Comparing…")

    def append(self, index: int, pieces: list[str]) -> None:
        self.columns[index].append(pieces)

    def finish_column(self, index: int, result: "ColumnResult") -> None:
        self.columns[index].finish(result)
        self.preferences.column_finished()

    def end(self) -> None:
        """The comparison ended, whole or not."""
        self.preferences.comparison_ended()

    def show_status(self, text: str, colour: Optional[str] = None) -> None:
        self.status_label.setStyleSheet(f"color: {colour};" if colour else "")
        self.status_label.setText(text)

    def set_state(self, *, ready: bool, running: bool) -> None:
        """``ready``: a model is loaded and nothing runs; ``running``: a comparison runs."""
        self.compare_button.setEnabled(ready)
        self.stop_button.setEnabled(running)
        self.count_box.setEnabled(not running)
        for column in self.columns:
            column.chooser.setEnabled(not running)

    def _show_columns(self, _count: int = 0) -> None:
        for index, column in enumerate(self.columns):
            column.setVisible(index < self.count_box.value())
        self.preferences.show_columns(self.count_box.value())
