"""The pieces the Chat page is built from: the conversation view, the message box, the
generation settings and the adapter choosers.

They read only metadata (the adapter library's JSON, run folders), so building or
refreshing them on the UI thread stays within a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPlainTextEdit,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from studio.widgets.pickers import KEPT_END_ROLE, ElidingComboBox

if TYPE_CHECKING:
    from engine.chat.blends import ColumnChoice
    from engine.chat.streaming import ChatReply

USER_COLOUR = "#1f5fbf"
ASSISTANT_COLOUR = "#2e7d32"
ERROR_COLOUR = "#c0392b"
NOTE_COLOUR = "#777777"
_REF_ROLE = Qt.ItemDataRole.UserRole
RANDOM_SEED = -1  # the seed box's "random" value


class MessageBox(QPlainTextEdit):
    """Text being written; Ctrl+Enter submits it, Enter starts a new line."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        send_keys = (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if event.key() in send_keys and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            event.accept()
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class Transcript(QTextBrowser):
    """A conversation (or one comparison column) as the user saw it: speaker headings,
    turns, notes in grey, errors in red.

    Text is inserted with a cursor at the end of the document rather than by
    re-rendering HTML, so a streamed token costs the same however long the chat is.
    """

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Conversation")

    def add_turn(self, speaker: str, text: str, colour: str) -> int:
        start = self.begin_turn(speaker, colour)
        self.append_text(text)
        return start

    def begin_turn(self, speaker: str, colour: str) -> int:
        """Start a turn under a heading; returns where it starts, for ``remove_from``."""
        cursor = self._end()
        start = cursor.position()
        first = self.document().isEmpty()
        heading = QTextBlockFormat()
        heading.setTopMargin(0 if first else 12)
        if first:
            cursor.setBlockFormat(heading)
        else:
            cursor.insertBlock(heading)
        cursor.insertText(speaker, _char_format(colour, bold=True))
        cursor.insertBlock(QTextBlockFormat())
        self._scroll_if_following()
        return start

    def append_text(self, text: str, colour: Optional[str] = None, *, italic: bool = False) -> None:
        following = self._following()
        self._end().insertText(text, _char_format(colour, italic=italic))
        if following:
            self._scroll_to_end()

    def add_error(self, text: str) -> None:
        self._add_paragraph(text, _char_format(ERROR_COLOUR))

    def add_note(self, text: str) -> None:
        self._add_paragraph(text, _char_format(NOTE_COLOUR, italic=True))

    def remove_from(self, position: int) -> None:
        """Delete everything from ``position`` (a ``begin_turn`` result) to the end."""
        cursor = self._end()
        cursor.setPosition(min(position, cursor.position()), QTextCursor.MoveMode.KeepAnchor)
        cursor.removeSelectedText()

    def _add_paragraph(self, text: str, fmt: QTextCharFormat) -> None:
        cursor = self._end()
        if not self.document().isEmpty():
            spaced = QTextBlockFormat()
            spaced.setTopMargin(8)
            cursor.insertBlock(spaced)
        cursor.insertText(text, fmt)
        self._scroll_to_end()

    def _end(self) -> QTextCursor:
        cursor = QTextCursor(self.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        return cursor

    def _following(self) -> bool:
        # Only keep scrolling when the user is at the bottom: reading an earlier turn
        # while a reply streams must not yank the view away.
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 4

    def _scroll_if_following(self) -> None:
        if self._following():
            self._scroll_to_end()

    def _scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())


def _char_format(colour: Optional[str], *, bold: bool = False, italic: bool = False) -> QTextCharFormat:
    fmt = QTextCharFormat()
    if colour:
        fmt.setForeground(QColor(colour))
    fmt.setFontWeight(QFont.Weight.Bold if bold else QFont.Weight.Normal)
    fmt.setFontItalic(italic)
    return fmt


# What the figures under a reply mean: the tooltip of the lines that show ``describe_reply``.
REPLY_FIGURES_HELP = ("The last reply's length in tokens (word pieces), how fast it was written in tokens per second, "
                      "how long the first token took to come, and the seed that gives the same reply again.")


def describe_reply(reply: "ChatReply", *, seed: bool = True) -> str:
    """``N tokens · X tok/s · first token Y s`` (and the seed of a sampled reply, unless
    ``seed`` is False: a comparison shows its one seed once)."""
    text = (f"{reply.tokens} tokens · {reply.tokens_per_second:.1f} tok/s · "
            f"first token {reply.time_to_first_token_s:.2f} s")
    return text + (f" · seed {reply.seed}" if seed and reply.seed is not None else "")


class LiveRate:
    """Tokens and tokens per second of a reply while it streams, from when pieces arrive.

    The engine calls back once per token, so counting pieces counts tokens; the final
    figures come from the engine's own clock when the reply ends.
    """

    def __init__(self) -> None:
        self.tokens = 0
        self._first: Optional[float] = None
        self._last: Optional[float] = None

    def add(self, tokens: int, now: float) -> None:
        if self._first is None:
            self._first = now
        self.tokens += tokens
        self._last = now

    def describe(self) -> str:
        if self._first is None or self._last is None or self._last <= self._first:
            return f"{self.tokens} tokens"
        return f"{self.tokens} tokens · {(self.tokens - 1) / (self._last - self._first):.1f} tok/s"


class GenerationSettings(QGroupBox):
    """The system prompt and the sampling settings, shared by chat and compare."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__("Generation", parent)
        self.system_box = QPlainTextEdit(self)
        self.system_box.setAccessibleName("System prompt")
        self.system_box.setPlaceholderText("Optional: how the assistant should behave")
        self.system_box.setToolTip("Sent first, as the system message, with every chat turn and comparison")
        self.system_box.setFixedHeight(96)
        self.temperature_box = _double_box(0.0, 2.0, 0.1, 0.7, (
            "0 always picks the most likely next token, so the same question gets the same answer "
            "(best for comparing adapters). Higher values give more varied replies."))
        self.top_p_box = _double_box(0.01, 1.0, 0.05, 0.9, (
            "Sample only from the most likely tokens that together hold this share of the probability. "
            "1 keeps them all. Ignored at temperature 0."))
        self.top_k_box = QSpinBox(self)
        self.top_k_box.setRange(0, 1000)
        self.top_k_box.setSpecialValueText("off")
        self.top_k_box.setToolTip("Sample only from this many most likely tokens. Ignored at temperature 0.")
        self.repetition_box = _double_box(0.5, 2.0, 0.05, 1.0, (
            "Above 1 makes tokens already in the conversation less likely, against loops; 1 is off."))
        self.max_tokens_box = QSpinBox(self)
        self.max_tokens_box.setRange(1, 8192)
        self.max_tokens_box.setValue(256)
        self.max_tokens_box.setToolTip(
            "The longest reply, in tokens. Generation also ends when the model finishes its turn.")
        self.seed_box = QSpinBox(self)
        self.seed_box.setRange(RANDOM_SEED, 2**31 - 1)
        self.seed_box.setValue(RANDOM_SEED)
        self.seed_box.setSpecialValueText("random")
        self.seed_box.setToolTip(
            "With a fixed seed the same settings give the same reply again. On \"random\" each reply "
            "draws a new one and the status line shows it, so a reply you like can be had again.")
        system_label = QLabel("&System prompt", self)
        system_label.setBuddy(self.system_box)
        form = QFormLayout()
        form.addRow("Temperature", self.temperature_box)
        form.addRow("Top-p", self.top_p_box)
        form.addRow("Top-k", self.top_k_box)
        form.addRow("Repetition penalty", self.repetition_box)
        form.addRow("Max new tokens", self.max_tokens_box)
        form.addRow("Seed", self.seed_box)
        for row in range(form.rowCount()):  # the name explains itself as its box does
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole).widget()
            label.setToolTip(form.itemAt(row, QFormLayout.ItemRole.FieldRole).widget().toolTip())
        layout = QVBoxLayout(self)
        layout.addWidget(system_label)
        layout.addWidget(self.system_box)
        layout.addLayout(form)

    def values(self) -> dict[str, Any]:
        """The keyword arguments of ``ChatSession.generate`` and ``compare``."""
        seed = self.seed_box.value()
        return {
            "max_new_tokens": self.max_tokens_box.value(),
            "temperature": self.temperature_box.value(),
            "top_p": self.top_p_box.value(),
            "top_k": self.top_k_box.value(),
            "repetition_penalty": self.repetition_box.value(),
            "seed": None if seed == RANDOM_SEED else seed,
        }

    def apply(self, settings: dict[str, Any]) -> None:
        """Show saved settings (out-of-range values are clamped by the boxes)."""
        boxes = {"max_new_tokens": self.max_tokens_box, "temperature": self.temperature_box,
                 "top_p": self.top_p_box, "top_k": self.top_k_box, "repetition_penalty": self.repetition_box}
        for name, box in boxes.items():
            if settings.get(name) is not None:
                box.setValue(type(box.value())(settings[name]))
        if "seed" in settings:
            self.seed_box.setValue(RANDOM_SEED if settings["seed"] is None else int(settings["seed"]))

    def system_messages(self) -> list[dict[str, str]]:
        text = self.system_box.toPlainText().strip()
        return [{"role": "system", "content": text}] if text else []


def _double_box(low: float, high: float, step: float, value: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setDecimals(2)
    box.setValue(value)
    box.setToolTip(tip)
    return box


# adapters ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdapterEntry:
    """One adapter the chat can use: a library adapter (ref = its name) or a training
    checkpoint (ref = its folder)."""

    label: str
    ref: str
    tooltip: str
    kept_end: str = ""  # the label's last words that tell it apart: never shortened (pickers.KEPT_END_ROLE)


def adapter_entries(model_ref: str) -> list[AdapterEntry]:
    """The usable library adapters, then the checkpoints of runs on ``model_ref``, newest first."""
    from engine.chat.checkpoints import list_checkpoints
    from engine.adapters.library import list_adapters

    entries = [AdapterEntry(record.name, record.name, record.path) for record in list_adapters()
               if not record.damaged]
    if model_ref:
        for checkpoint in list_checkpoints(model_ref):
            label = f"{checkpoint.label} (checkpoint)"  # the run's name, then its step: kept whole
            entries.append(AdapterEntry(label, checkpoint.path, checkpoint.path, kept_end=label[len(checkpoint.run):]))
    return entries


# A GGUF file in an adapter chooser: its data is this prefix and the file's path, so the choosers
# hold plain strings, and ``column_choice`` tells the file from an adapter.
_GGUF_REF = "gguf:"
# The chooser item that asks for a GGUF file to chat with (studio.pages.chat opens the dialog).
BROWSE_GGUF = "__browse_gguf__"
BROWSE_GGUF_ITEM = ("GGUF file (llama.cpp)…", BROWSE_GGUF)


def gguf_entries(paths: list[str]) -> list[AdapterEntry]:
    """The GGUF files chat can answer with through llama.cpp: those in the studio's GGUF export
    folder, newest first, then ``paths`` (files the user picked), each once."""
    from engine.paths import export_path

    folder = export_path("_", "gguf").parent
    exported = sorted(folder.glob("*.gguf"), key=lambda file: file.stat().st_mtime, reverse=True)
    files = list(dict.fromkeys([str(file) for file in exported] + paths))
    return [AdapterEntry(f"{Path(file).name} (llama.cpp)", _GGUF_REF + file,
                         f"{file}\nAnswered by llama.cpp from the file, as its users will run it") for file in files]


def gguf_ref(path: str) -> str:
    """The chooser data of the GGUF file at ``path``."""
    return _GGUF_REF + path


def is_gguf(ref: Optional[str]) -> bool:
    """Whether a chooser's data names a GGUF file (else the base model or an adapter)."""
    return bool(ref) and ref.startswith(_GGUF_REF)


def column_choice(ref: Optional[str]) -> "ColumnChoice":
    """What a chooser's data answers with: None (the base), an adapter's ref, or a ``GgufFile``."""
    from engine.chat.blends import GgufFile

    if is_gguf(ref):
        return GgufFile(ref[len(_GGUF_REF):])
    return ref


def fill_combo(combo: QComboBox, entries: list[AdapterEntry], *, base_item: Optional[str],
               extras: tuple[tuple[str, str], ...] = ()) -> None:
    """Refill ``combo`` with ``entries`` (after a base-model item when ``base_item`` names one,
    and before ``extras``, (label, data) items), keeping the selection where it still exists.
    Emits ``currentIndexChanged`` only when the selection had to change."""
    keep = combo.currentData(_REF_ROLE)
    had_items = combo.count() > 0
    combo.blockSignals(True)
    combo.clear()
    if base_item is not None:
        combo.addItem(base_item, None)
    for entry in entries:
        combo.addItem(entry.label, entry.ref)
        combo.setItemData(combo.count() - 1, entry.tooltip, Qt.ItemDataRole.ToolTipRole)
        combo.setItemData(combo.count() - 1, entry.kept_end, KEPT_END_ROLE)
    for extra in extras:
        combo.addItem(*extra)
    index = combo.findData(keep, _REF_ROLE) if keep is not None else (0 if base_item is not None else -1)
    combo.setCurrentIndex(max(index, 0))
    combo.blockSignals(False)
    if had_items and combo.currentData(_REF_ROLE) != keep:
        combo.currentIndexChanged.emit(combo.currentIndex())


class ChatAdapterPicker(ElidingComboBox):
    """"No adapter (base model)", the library's adapters, and the checkpoints of training
    runs on the chat's model (a running training's too, once one is written)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(28)
        self.setAccessibleName("Adapter")
        self.set_about("The adapter on top of the base model, or none to chat with the base model as it is. "
                       "Switching adapters keeps the base model loaded. A GGUF file (an export) answers through "
                       "llama.cpp instead, as its users will run it.")
        self.entries: list[AdapterEntry] = []
        self.refresh([])

    def refresh(self, entries: list[AdapterEntry]) -> None:
        self.entries = entries
        fill_combo(self, entries, base_item="No adapter (base model)", extras=(BROWSE_GGUF_ITEM,))

    def current_ref(self) -> Optional[str]:
        ref = self.currentData(_REF_ROLE)
        return str(ref) if ref else None

    def current_label(self) -> str:
        return self.currentText() if self.current_ref() else "base model"

    def set_ref(self, ref: Optional[str]) -> None:
        """Select an adapter by library name or checkpoint folder; None selects the base model."""
        index = 0 if ref is None else self.findData(ref, _REF_ROLE)
        if index >= 0:
            self.setCurrentIndex(index)
