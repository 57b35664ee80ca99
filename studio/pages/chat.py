"""Chat: talk to a base model, with or without an adapter, to see what training changed.

The page owns one ``engine.chat.ChatSession``. Loading it, swapping its adapter,
generating a reply and unloading it each run in a ``BackgroundTask``, one at a
time, and the controls follow that one task. The base model is loaded once per
model: picking another adapter only hot-swaps the adapter on the loaded base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QKeyEvent, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from studio.widgets.pickers import AdapterPicker, ModelPicker
from studio.workers import BackgroundTask, TaskReporter

if TYPE_CHECKING:
    from engine.chat import ChatReply, ChatSession

# torch takes one thread per core by default; leaving one core free keeps the window
# responsive while a reply streams.
CHAT_THREADS = max(1, (os.cpu_count() or 2) - 1)

_USER_COLOUR = "#1f5fbf"
_ASSISTANT_COLOUR = "#2e7d32"
_ERROR_COLOUR = "#c0392b"
_NOTE_COLOUR = "#777777"


@dataclass
class _Loaded:
    """What a load task hands back: the session, and why the adapter failed if it did."""

    session: "ChatSession"
    model_ref: str
    adapter_ref: Optional[str]
    adapter_error: Optional[str]


class MessageBox(QPlainTextEdit):
    """The message being written; Ctrl+Enter sends it, Enter starts a new line."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        send_keys = (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if event.key() in send_keys and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            event.accept()
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class Transcript(QTextBrowser):
    """The conversation as the user saw it: speaker headings, turns, errors in red.

    Text is inserted with a cursor at the end of the document rather than by
    re-rendering HTML, so a streamed token costs the same however long the chat is.
    """

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Conversation")
        self.setPlaceholderText("Load a model, type a message below and press Send (Ctrl+Enter).")

    def add_turn(self, speaker: str, text: str, colour: str) -> None:
        self.begin_turn(speaker, colour)
        self.append_text(text)

    def begin_turn(self, speaker: str, colour: str) -> None:
        cursor = self._end()
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

    def append_text(self, text: str, colour: Optional[str] = None, *, italic: bool = False) -> None:
        following = self._following()
        self._end().insertText(text, _char_format(colour, italic=italic))
        if following:
            self._scroll_to_end()

    def add_error(self, text: str) -> None:
        cursor = self._end()
        if not self.document().isEmpty():
            spaced = QTextBlockFormat()
            spaced.setTopMargin(8)
            cursor.insertBlock(spaced)
        cursor.insertText(text, _char_format(_ERROR_COLOUR))
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


def describe_reply(reply: "ChatReply") -> str:
    """The status line under the chat: ``N tokens · X tok/s · first token Y s``."""
    return (
        f"{reply.tokens} tokens · {reply.tokens_per_second:.1f} tok/s · "
        f"first token {reply.time_to_first_token_s:.2f} s"
    )


class ChatPage(QWidget):
    """Pick a model and an adapter, load, and chat; replies stream in as they are generated."""

    replyFinished = Signal(object)  # the ChatReply of every reply that ended, stopped or not
    sessionChanged = Signal()  # a load, adapter swap or unload ended, whether or not it worked

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._session: Optional[ChatSession] = None
        self._session_model: Optional[str] = None
        self._session_model_label = ""
        self._session_adapter: Optional[str] = None
        # The latest task, kept until the next one starts. Python owns it (no Qt parent):
        # with PySide 6.12, deleteLater on a finished task crashes now and then. The one
        # before it is kept too, because a task can start from the previous one's
        # finished signal, and dropping a QObject inside its own signal is not safe.
        self._task: Optional[BackgroundTask] = None
        self._previous_task: Optional[BackgroundTask] = None
        self._task_kind = ""
        # Each task's signals carry the ticket it started with; close_session() moves the
        # ticket on, so whatever an abandoned task still reports is recognised as stale.
        self._ticket = 0
        self._pickers_moved_while_busy = False
        self._history: list[dict[str, str]] = []
        self._build()
        self._update_controls()

    # --- layout -----------------------------------------------------------------------

    def _build(self) -> None:
        self.model_picker = ModelPicker(self)
        self.adapter_picker = AdapterPicker(self)
        self.load_button = QPushButton("Load model", self)
        self.load_button.setToolTip(
            "Load the picked base model for chatting. It stays loaded: picking another adapter "
            "swaps only the adapter; picking another model unloads this one."
        )
        self.busy_bar = QProgressBar(self)
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(140)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setAccessibleName("Working")
        self.busy_bar.hide()
        self.session_label = QLabel(self)
        self.session_label.setAccessibleName("Loaded model")

        self.max_tokens_box = QSpinBox(self)
        self.max_tokens_box.setRange(1, 8192)
        self.max_tokens_box.setValue(256)
        self.max_tokens_box.setToolTip(
            "The longest reply, in tokens. Generation also ends when the model finishes its turn."
        )
        self.temperature_box = QDoubleSpinBox(self)
        self.temperature_box.setRange(0.0, 2.0)
        self.temperature_box.setSingleStep(0.1)
        self.temperature_box.setDecimals(2)
        self.temperature_box.setValue(0.7)
        self.temperature_box.setToolTip(
            "0 always picks the most likely next token, so the same question gets the same answer "
            "(best for comparing adapters). Higher values give more varied replies."
        )

        self.transcript = Transcript(self)
        self.message_box = MessageBox(self)
        self.message_box.setPlaceholderText("Type a message. Ctrl+Enter sends it.")
        self.message_box.setAccessibleName("Message")
        self.message_box.setFixedHeight(90)
        self.send_button = QPushButton("Send", self)
        self.send_button.setToolTip("Send the message (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop the reply now; what was generated so far is kept")
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.setToolTip("Start a new conversation; the model stays loaded")
        self.status_label = QLabel(self)
        self.status_label.setAccessibleName("Reply statistics")
        self.status_label.setStyleSheet(f"color: {_NOTE_COLOUR};")

        top = QGridLayout()
        top.addWidget(_buddy_label("&Model:", self.model_picker), 0, 0)
        top.addWidget(self.model_picker, 0, 1)
        top.addWidget(self.load_button, 0, 2)
        top.addWidget(_buddy_label("&Adapter:", self.adapter_picker), 1, 0)
        top.addWidget(self.adapter_picker, 1, 1)
        top.setColumnStretch(1, 1)

        session_row = QHBoxLayout()
        session_row.addWidget(self.session_label, 1)
        session_row.addWidget(self.busy_bar)
        session_row.addSpacing(16)
        session_row.addWidget(_buddy_label("Max new &tokens:", self.max_tokens_box))
        session_row.addWidget(self.max_tokens_box)
        session_row.addSpacing(16)
        session_row.addWidget(_buddy_label("T&emperature:", self.temperature_box))
        session_row.addWidget(self.temperature_box)

        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        compose = QHBoxLayout()
        compose.addWidget(self.message_box, 1)
        compose.addLayout(buttons)

        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(session_row)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(compose)
        layout.addWidget(self.status_label)

        self.load_button.clicked.connect(self.load)
        self.send_button.clicked.connect(self.send)
        self.message_box.submitted.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.model_picker.currentIndexChanged.connect(self._pickers_moved)
        self.adapter_picker.currentIndexChanged.connect(self._pickers_moved)

    # --- public actions -----------------------------------------------------------------

    @property
    def session(self) -> Optional["ChatSession"]:
        return self._session

    @property
    def busy(self) -> bool:
        return self._task is not None and self._task.running

    @property
    def generating(self) -> bool:
        return self.busy and self._task_kind == "generate"

    def refresh(self) -> None:
        """Re-read the model list and the adapter library (a new model or adapter may exist)."""
        self.model_picker.refresh()
        self.adapter_picker.refresh()

    def load(self) -> None:
        """Load the picked model (once), with the picked adapter on top."""
        model_ref = self.model_picker.current_ref()
        if self.busy or self._session is not None or not model_ref:
            return
        adapter_ref = self.adapter_picker.current_ref()

        def load_session(_reporter: TaskReporter) -> _Loaded:
            from engine.chat import ChatSession

            session = ChatSession(model_ref, threads=CHAT_THREADS)
            session.load()
            try:
                if adapter_ref is not None:
                    session.set_adapter(adapter_ref)
            except StudioError as exc:
                # The base is loaded and stays useful: report the adapter, keep the session.
                return _Loaded(session, model_ref, None, str(exc))
            return _Loaded(session, model_ref, adapter_ref, None)

        self._session_model_label = self.model_picker.currentText()
        self._start("load", f"Loading {self._session_model_label}…", load_session, self._loaded, self._load_failed)

    def send(self) -> None:
        """Send the message box's text as the next user turn and stream the reply."""
        if self.busy:
            return
        text = self.message_box.toPlainText().strip()
        if not text:
            self.transcript.add_error("Type a message first: there is nothing to send.")
            return
        if not self._session_ready():
            self.transcript.add_error("Load the model first: press \"Load model\".")
            return
        session = self._session
        self._history.append({"role": "user", "content": text})
        conversation = list(self._history)  # the worker gets its own list; the page keeps editing its own
        max_new_tokens = self.max_tokens_box.value()
        temperature = self.temperature_box.value()

        def generate(reporter: TaskReporter) -> "ChatReply":
            return session.generate(
                conversation,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                on_token=reporter.emit,
                stop_event=reporter.cancel_event,
            )

        self.message_box.clear()
        self.transcript.add_turn("You", text, _USER_COLOUR)
        self.transcript.begin_turn(f"Assistant · {_adapter_label(self._session_adapter)}", _ASSISTANT_COLOUR)
        self.status_label.setText("Generating…")
        self._start("generate", "", generate, self._replied, partial(self._reply_failed, text))

    def stop(self) -> None:
        """End the reply being generated; the tokens so far stay in the conversation."""
        if self.generating:
            self._task.cancel()

    def clear(self) -> None:
        """Forget the conversation (the model stays loaded)."""
        if self.generating:
            return
        self._history.clear()
        self.transcript.clear()
        self.status_label.clear()

    def close_session(self) -> None:
        """Stop any reply and unload the model now; the window calls this when it closes.

        It waits for the worker (a stopped reply ends within a token) so the model is
        never closed under a running generation.
        """
        ended = True
        if self.busy:
            self._ticket += 1
            self._task.cancel()
            # A load cannot be interrupted; if it outlasts the wait, its session is
            # closed when it arrives (see _task_succeeded).
            ended = self._task.join(timeout=10.0)
        if ended:
            self._task = None
        session = self._session
        self._forget_session()
        if session is not None and ended:
            session.close()
        self.busy_bar.hide()
        self._update_controls()

    # --- tasks --------------------------------------------------------------------------

    def _start(
        self,
        kind: str,
        busy_text: str,
        fn: Callable[[TaskReporter], Any],
        on_success: Callable[[Any], None],
        on_failure: Callable[[str], None],
    ) -> None:
        task = BackgroundTask(fn)
        self._previous_task, self._task, self._task_kind = self._task, task, kind
        self._ticket += 1
        task.succeeded.connect(partial(self._task_succeeded, self._ticket, on_success))
        task.failed.connect(partial(self._task_failed, self._ticket, on_failure))
        task.finished.connect(partial(self._task_finished, self._ticket))
        if kind == "generate":
            task.messages.connect(partial(self._tokens_arrived, self._ticket))
        if busy_text:
            self.session_label.setText(busy_text)
            self.busy_bar.show()
        self._update_controls()
        task.start()

    def _task_succeeded(self, ticket: int, on_success: Callable[[Any], None], result: Any) -> None:
        if ticket == self._ticket:
            on_success(result)
        elif isinstance(result, _Loaded):
            # close_session() gave up waiting for this load; the page no longer wants it.
            result.session.close()

    def _task_failed(self, ticket: int, on_failure: Callable[[str], None], message: str) -> None:
        if ticket == self._ticket:
            on_failure(message)

    def _task_finished(self, ticket: int) -> None:
        if ticket != self._ticket:
            self._update_controls()  # an abandoned task ended: the controls can come back
            return
        self.busy_bar.hide()
        self._update_controls()
        if self._task_kind != "generate":
            self.sessionChanged.emit()
        if self._pickers_moved_while_busy:
            self._pickers_moved_while_busy = False
            self._follow_pickers()
            self._update_controls()

    def _loaded(self, loaded: _Loaded) -> None:
        self._session = loaded.session
        self._session_model = loaded.model_ref
        self._session_adapter = loaded.adapter_ref
        if loaded.adapter_error:
            self.transcript.add_error(f"The model is loaded, but the adapter is not: {loaded.adapter_error}")

    def _load_failed(self, message: str) -> None:
        self.transcript.add_error(f"Could not load {self._session_model_label}: {message}")

    def _swap_adapter(self) -> None:
        session = self._session
        adapter_ref = self.adapter_picker.current_ref()
        label = _adapter_label(adapter_ref)

        def swap(_reporter: TaskReporter) -> Optional[str]:
            session.set_adapter(adapter_ref)
            return adapter_ref

        def swapped(ref: Optional[str]) -> None:
            self._session_adapter = ref

        def swap_failed(message: str) -> None:
            self.transcript.add_error(f"Could not switch to {label}: {message}")

        self._start("swap", f"Switching to {label}…", swap, swapped, swap_failed)

    def _unload(self) -> None:
        session = self._session
        self._forget_session()
        self._start(
            "unload",
            "Unloading the previous model…",
            lambda _reporter: session.close(),
            _ignore,
            lambda message: self.transcript.add_error(f"Unloading the previous model failed: {message}"),
        )

    def _forget_session(self) -> None:
        self._session = None
        self._session_model = None
        self._session_adapter = None

    def _tokens_arrived(self, ticket: int, pieces: list) -> None:
        if ticket == self._ticket:
            self.transcript.append_text("".join(pieces))

    def _replied(self, reply: "ChatReply") -> None:
        self._history.append({"role": "assistant", "content": reply.reply})
        if reply.stopped:
            self.transcript.append_text("  [stopped]", _NOTE_COLOUR, italic=True)
        self.status_label.setText(describe_reply(reply))
        self.replyFinished.emit(reply)

    def _reply_failed(self, text: str, message: str) -> None:
        # The model never answered this turn: take it out of the history and hand the
        # text back so the user can send it again.
        self._history.pop()
        if not self.message_box.toPlainText():
            self.message_box.setPlainText(text)
        self.transcript.add_error(message)
        self.status_label.clear()

    # --- following the pickers ----------------------------------------------------------

    def _pickers_moved(self, _index: int) -> None:
        if self.busy:
            self._pickers_moved_while_busy = True
        else:
            self._follow_pickers()
            self._update_controls()

    def _follow_pickers(self) -> None:
        """Unload when another model is picked; hot-swap when only the adapter changed."""
        if self._session is None:
            return
        if self._session_model != self.model_picker.current_ref():
            self._unload()
        elif self._session_adapter != self.adapter_picker.current_ref():
            self._swap_adapter()

    def _session_ready(self) -> bool:
        return self._session is not None and self._session_model == self.model_picker.current_ref()

    def _show_session(self) -> None:
        if self._session is None:
            self.session_label.setText("No model loaded.")
        else:
            self.session_label.setText(
                f"Loaded: {self._session_model_label} · adapter: {_adapter_label(self._session_adapter)}"
            )

    def _update_controls(self) -> None:
        idle = not self.busy
        generating = self.generating
        ready = idle and self._session_ready()
        if idle:
            self._show_session()
        self.model_picker.setEnabled(idle)
        self.adapter_picker.setEnabled(idle)
        self.load_button.setEnabled(idle and self._session is None and bool(self.model_picker.current_ref()))
        self.send_button.setEnabled(ready)
        self.send_button.setToolTip("Send the message (Ctrl+Enter)" if ready else "Load a model to chat")
        self.stop_button.setEnabled(generating)
        self.clear_button.setEnabled(not generating)
        self.max_tokens_box.setEnabled(not generating)
        self.temperature_box.setEnabled(not generating)


def _adapter_label(ref: Optional[str]) -> str:
    # Library adapters are listed under their name, which is also their reference.
    return ref or "base model"


def _ignore(_value: object) -> None:
    """For a task whose success needs no reaction beyond the controls updating."""


def _buddy_label(text: str, buddy: QWidget) -> QLabel:
    label = QLabel(text)
    label.setBuddy(buddy)
    return label
