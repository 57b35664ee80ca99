"""Preference pairs from Compare: under the columns, a bar for each pair with "A is better",
"B is better", "Tie / skip" and a better answer of one's own. Each choice appends a pair to a
preference set in the library (``engine.data.preference_store``), the file a DPO run trains on.

Which pairs get a bar: column 1 (A) against each other column (B), so two columns have one bar,
four have three. Column 1 is the base model when the columns are first set up, so each bar is
"the base against this adapter": the pairs the usual SFT -> DPO recipe learns from. To judge two
adapters against each other, put one of them in column 1. (Every pair among four columns would
be six bars: too many to judge at the pace of comparing.)

A bar opens once both of its columns have a whole reply: a failed column has none, and a stopped
one is cut short (a trainer would learn the cut as the answer). A choice closes the bar until the
next comparison, so a double click never writes a pair twice.

A written better answer is the chosen answer of two pairs, one against A's reply and one against
B's (one pair when the two replies are the same): the user says both replies are worse than
theirs, and each pair teaches that. The editor
opens with B's reply in it, selected: typing replaces it, and a small fix is a small edit. An
answer the same as A's or B's is refused with the store's line (press "A is better" instead), and
both pairs are checked before either is written, so a refusal leaves nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from engine.data.preference_store import DEFAULT_SET, append_pair, check_pair, count_pairs, set_names, set_path
from engine.errors import StudioError
from studio.widgets.chat_widgets import ERROR_COLOUR, NOTE_COLOUR, MessageBox

if TYPE_CHECKING:
    from engine.chat.blends import AdapterChoice
    from engine.chat.compare import ColumnResult

A_BETTER, B_BETTER, TIE, WRITTEN = "A is better", "B is better", "Tie / skip", "written"


@dataclass(frozen=True)
class Comparison:
    """What every column of one comparison was asked: the messages, the settings and the model."""

    messages: list[dict]
    settings: dict[str, Any]
    model: str


@dataclass(frozen=True)
class Answer:
    """One side of a pair: its text and what produced it (``made_with``'s chosen or rejected)."""

    text: str
    source: dict[str, Any]


def column_answer(number: int, result: "ColumnResult") -> Answer:
    """Column ``number``'s reply, with the adapter choice that gave it."""
    from engine.chat.blends import choice_label

    assert result.reply is not None
    return Answer(result.reply.reply, {"column": number, "answered_by": choice_label(result.choice),
                                       "adapter": _adapter_record(result.choice)})


def _adapter_record(choice: "AdapterChoice") -> Any:
    """The choice as JSON: None (base), a library name or folder, or a combination's [ref, weight] parts."""
    from engine.chat.blends import Blend

    return [[ref, weight] for ref, weight in choice.parts] if isinstance(choice, Blend) else choice


def whole_reply(result: Optional["ColumnResult"]) -> bool:
    return result is not None and result.reply is not None and not result.reply.stopped


class PreferenceBar(QWidget):
    """Column 1 (A) against one other column (B) on one line: who answered, the three choices and
    a better answer. The choice made stays pressed (and the bar closed) until the next comparison."""

    judged = Signal(object, str)  # (this bar, one of A_BETTER, B_BETTER, TIE, WRITTEN)

    def __init__(self, b_number: int, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.b_number = b_number
        self.a_label, self.b_label = QLabel(self), QLabel(self)
        for label in (self.a_label, self.b_label):
            # A long adapter name is cut at the bar's edge (the tooltip has it whole), never widening the view.
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.buttons = {text: self._button(text) for text in (A_BETTER, B_BETTER, TIE)}
        self.buttons[A_BETTER].setToolTip("Column 1's reply is the better one: add the pair to the preference set")
        self.buttons[B_BETTER].setToolTip(f"Column {b_number}'s reply is the better one: add the pair to the "
                                          "preference set")
        self.buttons[TIE].setToolTip("Neither is better, or the pair is not worth teaching: nothing is written")
        self.write_button = QPushButton("Write a better answer…", self)
        self.write_button.setCheckable(True)
        self.write_button.setAccessibleName(f"Column 1 against {b_number}: write a better answer")
        self.write_button.setToolTip("Write the answer you wanted (it starts as B's reply): it is added as better "
                                     "than A's reply and than B's, two pairs")
        self.editor = MessageBox(self)
        self.editor.setAccessibleName(f"Column 1 against {b_number}: better answer")
        self.editor.setPlaceholderText("The answer you wanted. Ctrl+Enter adds it as better than A's and B's.")
        self.editor.setFixedHeight(64)
        self.use_button = QPushButton("Use my answer", self)
        self.use_button.setToolTip("Add this answer as better than both replies (Ctrl+Enter)")
        self.editor_row = QWidget(self)
        editor_layout = QHBoxLayout(self.editor_row)
        editor_layout.setContentsMargins(0, 0, 0, 0)
        editor_layout.addWidget(self.editor, 1)
        editor_layout.addWidget(self.use_button, 0, Qt.AlignmentFlag.AlignTop)
        self.editor_row.hide()

        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setVerticalSpacing(0)
        layout.addWidget(self.a_label, 0, 0)
        layout.addWidget(self.b_label, 1, 0)
        for column, button in enumerate([*self.buttons.values(), self.write_button], start=1):
            layout.addWidget(button, 0, column, 2, 1)
        layout.addWidget(self.editor_row, 2, 0, 1, 5)
        layout.setColumnStretch(0, 1)

        self.write_button.toggled.connect(self._show_editor)
        self.use_button.clicked.connect(lambda: self.judged.emit(self, WRITTEN))
        self.editor.submitted.connect(lambda: self.judged.emit(self, WRITTEN))
        self._b_reply = ""
        self.waiting = False  # for the replies of the comparison under way
        self.reset("column 1", f"column {b_number}")

    def _button(self, text: str) -> QPushButton:
        button = QPushButton(text, self)
        button.setCheckable(True)  # pressed: the choice made for this comparison
        button.setAccessibleName(f"Column 1 against {self.b_number}: {text}")
        button.clicked.connect(lambda: self.judged.emit(self, text))
        return button

    def reset(self, a_name: str, b_name: str) -> None:
        """A new comparison (or none yet): the bar is closed, nothing chosen."""
        for label, side, name in ((self.a_label, "A", a_name), (self.b_label, "B", b_name)):
            label.setText(f"{side}: {name}")
            label.setToolTip(f"{side}: {name}")
        self.editor.clear()
        self.close_with(None)

    def wait(self, a_name: str, b_name: str) -> None:
        self.reset(a_name, b_name)
        self.waiting = True

    def open(self, b_reply: str) -> None:
        """Both replies are whole: the choices can be made."""
        self._b_reply = b_reply
        self.waiting = False
        self._set_enabled(True)

    def close_with(self, judgement: Optional[str]) -> None:
        """Closed until the next comparison, with ``judgement``'s button left pressed (None: none)."""
        self.waiting = False
        self.write_button.setChecked(False)
        self.show_choice(judgement)
        self._set_enabled(False)

    def show_choice(self, judgement: Optional[str]) -> None:
        for text, button in self.buttons.items():
            button.setChecked(text == judgement)

    def written_answer(self) -> str:
        return self.editor.toPlainText().strip()

    def _set_enabled(self, enabled: bool) -> None:
        for button in (*self.buttons.values(), self.write_button, self.use_button):
            button.setEnabled(enabled)
        self.editor.setEnabled(enabled)

    def _show_editor(self, shown: bool) -> None:
        self.editor_row.setVisible(shown)
        if shown:
            if not self.editor.toPlainText():
                self.editor.setPlainText(self._b_reply)
            self.editor.selectAll()
            self.editor.setFocus()


class PreferencePanel(QWidget):
    """The bars under the Compare columns, and under them the preference set they write to, its
    count, and "Train on my preferences". What a choice did (or why it was refused) is said
    through ``said``, on the view's status line."""

    trainRequested = Signal(str, object)  # the set's file, the adapter to start from (or None)
    said = Signal(str, object)  # a line for the view's status, and its colour (None: the usual)

    def __init__(self, columns: Sequence[Any], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._columns = columns  # the CompareColumns; each holds its result of the latest comparison
        self._comparison: Optional[Comparison] = None
        # The adapter of the last pair written to each set in this session: what "Train on my
        # preferences" starts from (the SFT adapter of the SFT -> DPO recipe).
        self._adapters: dict[str, Optional[str]] = {}
        self.bars = [PreferenceBar(number, self) for number in range(2, len(columns) + 1)]
        self.set_row = QWidget(self)
        self.set_box = QComboBox(self.set_row)
        self.set_box.setEditable(True)
        self.set_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.set_box.setMinimumContentsLength(14)
        self.set_box.setAccessibleName("Preference set")
        self.set_box.setToolTip("The preference set in the library that each choice adds a pair to (the better "
                                "and the worse reply): the data preference tuning learns from. Type a new name "
                                "to start another set.")
        self.count_label = QLabel(self.set_row)
        self.count_label.setAccessibleName("Pairs in the preference set")
        self.train_button = QPushButton("Train on my preferences", self.set_row)
        self.train_button.setToolTip("Open the Train page with this set as the dataset and DPO as the objective, "
                                     "starting from the adapter judged last (when one answered)")
        set_label = QLabel("&Preferences to:", self.set_row)
        set_label.setBuddy(self.set_box)

        set_row = QHBoxLayout(self.set_row)
        set_row.setContentsMargins(0, 0, 0, 0)
        set_row.addWidget(set_label)
        set_row.addWidget(self.set_box)
        set_row.addWidget(self.count_label)
        set_row.addWidget(self.train_button)
        set_row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for bar in self.bars:
            layout.addWidget(bar)
            bar.judged.connect(self._judge)
        layout.addWidget(self.set_row)

        self.set_box.editTextChanged.connect(self._show_count)
        self.train_button.clicked.connect(self._train)
        self.refresh_sets()

    # --- the comparison -------------------------------------------------------------------

    def show_columns(self, count: int) -> None:
        for bar in self.bars:
            bar.setVisible(bar.b_number <= count)

    def begin(self, comparison: Comparison, labels: list[str]) -> None:
        """A comparison of the columns named ``labels`` starts: every bar waits for its two replies."""
        self._comparison = comparison
        for bar in self.bars:
            bar.wait(labels[0], labels[bar.b_number - 1] if bar.b_number <= len(labels) else "not compared")

    def column_finished(self) -> None:
        """A column's reply ended: open the bars whose two replies are both whole."""
        a = self._columns[0].result
        for bar in self.bars:
            b = self._columns[bar.b_number - 1].result
            if not bar.waiting or a is None or b is None:
                continue
            if whole_reply(a) and whole_reply(b):
                bar.open(b.reply.reply)
            else:
                bar.close_with(None)  # a failed or stopped reply: nothing to judge

    def comparison_ended(self) -> None:
        """The comparison ended (or failed): a bar still waiting has nothing to judge."""
        for bar in self.bars:
            if bar.waiting:
                bar.close_with(None)

    # --- writing pairs --------------------------------------------------------------------

    def _judge(self, bar: PreferenceBar, judgement: str) -> None:
        pair = f"{bar.a_label.text()} against {bar.b_label.text()}"
        if judgement == TIE:
            bar.close_with(TIE)
            self.said.emit(f"{pair}: skipped, nothing written.", None)
            return
        assert self._comparison is not None
        a_result, b_result = self._columns[0].result, self._columns[bar.b_number - 1].result
        a, b = column_answer(1, a_result), column_answer(bar.b_number, b_result)
        if judgement == A_BETTER:
            pairs = [(a, b)]
        elif judgement == B_BETTER:
            pairs = [(b, a)]
        else:
            mine = Answer(bar.written_answer(), {"written_by": "the user"})
            # Against each reply; one pair when A and B said the same (the second would repeat it).
            pairs = [(mine, a)] + ([(mine, b)] if b.text != a.text else [])
        name = self.set_name()
        prompt = self._comparison.messages
        try:
            set_path(name)
            for chosen, rejected in pairs:  # all checked before any is written
                check_pair(prompt, chosen.text, rejected.text)
            for chosen, rejected in pairs:
                saved = append_pair(name, prompt, chosen.text, rejected.text,
                                    self._made_with(chosen, rejected, a_result))
        except (StudioError, OSError) as exc:
            bar.show_choice(None)
            self.said.emit(f"Not recorded: {exc}", ERROR_COLOUR)
            return
        bar.close_with(judgement)
        what = "your answer is better than both" if judgement == WRITTEN else judgement
        self.said.emit(f"Recorded ({pair}): {what}. {_pairs(saved.pairs)} in {name}.", None)
        self._adapters[name] = _adapter_of(b_result.choice, a_result.choice)
        self.refresh_sets()

    def _made_with(self, chosen: Answer, rejected: Answer, a_result: "ColumnResult") -> dict[str, Any]:
        comparison = self._comparison
        # The seed every column used (drawn when the settings say "random").
        settings = {**comparison.settings, "seed": a_result.reply.seed}
        return {"model": comparison.model, "settings": settings, "chosen": chosen.source,
                "rejected": rejected.source}

    # --- the set ---------------------------------------------------------------------------

    def set_name(self) -> str:
        return self.set_box.currentText().strip()

    def refresh_sets(self) -> None:
        """The library's sets in the chooser (the default one too when it has none yet), the count shown."""
        current = self.set_name() or DEFAULT_SET
        names = set_names()
        if DEFAULT_SET not in names:
            names.append(DEFAULT_SET)
        self.set_box.blockSignals(True)
        self.set_box.clear()
        self.set_box.addItems(names)
        self.set_box.setEditText(current)
        self.set_box.blockSignals(False)
        self._show_count()

    def _show_count(self, _text: str = "") -> None:
        try:
            path = set_path(self.set_name())
        except StudioError as exc:
            self.count_label.setStyleSheet(f"color: {ERROR_COLOUR};")
            self.count_label.setText("not a name")
            self.count_label.setToolTip(str(exc))
            self.train_button.setEnabled(False)
            return
        pairs = count_pairs(path) if path.is_file() else 0
        self.count_label.setStyleSheet(f"color: {NOTE_COLOUR};")
        self.count_label.setText(_pairs(pairs) if path.is_file() else "new set")
        self.count_label.setToolTip(str(path))
        self.train_button.setEnabled(pairs > 0)

    def _train(self) -> None:
        name = self.set_name()
        self.trainRequested.emit(str(set_path(name)), self._adapters.get(name))


def _adapter_of(b: "AdapterChoice", a: "AdapterChoice") -> Optional[str]:
    """The adapter a preference run on this pair starts from: B's, the column judged against
    column 1, else A's; None when neither is one adapter (the base, a combination)."""
    return next((choice for choice in (b, a) if isinstance(choice, str)), None)


def _pairs(count: int) -> str:
    return f"{count} pair" + ("" if count == 1 else "s")
