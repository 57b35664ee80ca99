"""Chat: talk to a base model, with or without an adapter, and compare adapters side by side.

The page owns one ``engine.chat.session.ChatSession``. Loading it, swapping its adapter,
generating a reply, running a comparison and unloading it each run in a
``BackgroundTask``, one at a time, and the controls follow that one task. The base
model is loaded once per model: picking another adapter only hot-swaps the adapter on
the loaded base, and a comparison switches adapters between its columns on the same
session.

Beside the adapters, chat and each comparison column can answer from a GGUF file (an
export) through llama.cpp, as the file's users will run it: the page's
``engine.chat.gguf_session.GgufFiles`` holds the files it opened, loaded with the model and
closed with it, so an export is judged side by side with the adapter it came from.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics, QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.core.names import is_plain_name
from engine.errors import StudioError
from studio.pages.chat_compare import ColumnChooser, CompareView
from studio.pages.chat_preferences import Comparison
from studio.widgets.chat_widgets import (
    ASSISTANT_COLOUR,
    BROWSE_GGUF,
    ERROR_COLOUR,
    NOTE_COLOUR,
    REPLY_FIGURES_HELP,
    USER_COLOUR,
    ChatAdapterPicker,
    GenerationSettings,
    LiveRate,
    MessageBox,
    Transcript,
    adapter_entries,
    column_choice,
    describe_reply,
    gguf_entries,
    gguf_ref,
    is_gguf,
)
from studio.widgets.pickers import ModelPicker
from studio.widgets.trust_dialog import confirm_model_code
from studio.workers import TaskReporter, TaskSlot

if TYPE_CHECKING:
    from engine.chat.compare import ColumnResult
    from engine.chat.gguf_session import GgufFiles
    from engine.chat.session import ChatSession
    from engine.chat.streaming import ChatReply

_TRANSCRIPT_FILTERS = "Markdown (*.md);;JSON (*.json)"


@dataclass
class _Loaded:
    """What a load task hands back: the session, the GGUF files it can open, and why the
    adapter (or file) failed if it did."""

    session: "ChatSession"
    files: "GgufFiles"
    model_ref: str
    adapter_ref: Optional[str]
    adapter_error: Optional[str]


class ChatPage(QWidget):
    """Pick a model and load it; chat with it (and an adapter) or compare adapters on it."""

    replyFinished = Signal(object)  # the ChatReply of every chat reply that ended, stopped or not
    compareFinished = Signal(list)  # the ColumnResults of every comparison that ended
    sessionChanged = Signal()  # a load, adapter swap or unload ended, whether or not it worked
    # "Train on my preferences": the preference set's file, and the adapter to start from (or None)
    trainPreferencesRequested = Signal(str, object)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._session: Optional[ChatSession] = None
        self._files: Optional[GgufFiles] = None  # the GGUF files open beside the session
        self._gguf_paths: list[str] = []  # GGUF files picked on this page, listed beside the exports
        self._picked_adapter: Optional[str] = None  # the adapter picker's choice before "GGUF file…"
        self._load_when_idle = False  # chat_with_file: load the picked model once the running task ends
        self._session_model: Optional[str] = None
        self._session_model_label = ""
        self._session_adapter: Optional[str] = None
        self._session_adapter_label = "base model"
        # One task at a time; close_session() lets go of a running one, and an abandoned task
        # ending brings the controls back.
        self._task = TaskSlot(self._update_controls)
        self._task_kind = ""
        self._pickers_moved_while_busy = False
        # A training run that started while a load was running, and the notice of an
        # unload that waits for the running task: both are dealt with when it ends.
        self._training_waiting: Any = None
        self._unload_notice: Optional[str] = None
        self._history: list[dict[str, str]] = []
        self._reply_start: Optional[int] = None  # where the last reply's turn starts in the transcript
        self._last_reply_start: Optional[int] = None
        self._live = LiveRate()
        self._build()
        self.refresh()
        self._update_controls()

    # --- layout -----------------------------------------------------------------------

    def _build(self) -> None:
        self.model_picker = ModelPicker(self)
        self.model_picker.setAccessibleName("Model")
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
        self.session_label.setWordWrap(True)  # a long model and adapter name takes two lines, not more width
        self.settings = GenerationSettings(self)
        self.settings.setFixedWidth(300)
        self.keep_settings_button = QPushButton(self)
        self.keep_settings_button.setFixedWidth(300)
        self.compare_view = CompareView(self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self._build_chat_tab(), "Chat")
        self.tabs.addTab(self.compare_view, "Compare")

        top = QHBoxLayout()
        top.addWidget(_buddy_label("&Model:", self.model_picker))
        top.addWidget(self.model_picker)
        top.addWidget(self.load_button)
        top.addSpacing(12)
        top.addWidget(self.session_label, 1)
        top.addWidget(self.busy_bar)
        body = QHBoxLayout()
        body.addWidget(self.tabs, 1)
        side = QVBoxLayout()
        side.addWidget(self.settings)
        side.addWidget(self.keep_settings_button)
        side.addStretch(1)
        body.addLayout(side)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(body, 1)

        self.load_button.clicked.connect(self.load)
        self.model_picker.currentIndexChanged.connect(self._model_moved)
        self.adapter_picker.currentIndexChanged.connect(self._adapter_moved)
        self.compare_view.fileRequested.connect(self._column_wants_file)
        self.keep_settings_button.clicked.connect(self.keep_settings)
        self.compare_view.compareRequested.connect(self.compare)
        self.compare_view.stopRequested.connect(self.stop)
        self.compare_view.preferences.trainRequested.connect(self.trainPreferencesRequested)

    def _build_chat_tab(self) -> QWidget:
        tab = QWidget(self)
        self.adapter_picker = ChatAdapterPicker(tab)
        self.transcript = Transcript(tab)
        self.transcript.setPlaceholderText("Load a model, type a message below and press Send (Ctrl+Enter).")
        self.message_box = MessageBox(tab)
        self.message_box.setPlaceholderText("Type a message. Ctrl+Enter sends it.")
        self.message_box.setAccessibleName("Message")
        self.message_box.setFixedHeight(80)
        self.send_button = _button("Send", "Send the message (Ctrl+Enter)", tab)
        self.stop_button = _button("Stop", "Stop the reply now; what was generated so far is kept", tab)
        self.regenerate_button = _button(
            "Regenerate", "Answer the last message again. With the seed on \"random\" the reply is a new one; "
            "with a fixed seed and the same settings it is the same reply.", tab)
        self.copy_button = _button("Copy reply", "Copy the last reply to the clipboard", tab)
        self.clear_button = _button("Clear", "Start a new conversation; the model stays loaded", tab)
        self.save_button = _button("Save…", "Save the conversation as Markdown or JSON", tab)
        self.open_button = _button("Open…", "Open a saved conversation to read it or go on with it", tab)
        self.status_label = QLabel(tab)
        self.status_label.setAccessibleName("Reply statistics")
        self.status_label.setToolTip(REPLY_FIGURES_HELP)
        self.status_label.setStyleSheet(f"color: {NOTE_COLOUR};")

        adapter_row = QHBoxLayout()
        adapter_row.addWidget(_buddy_label("&Adapter:", self.adapter_picker))
        adapter_row.addWidget(self.adapter_picker, 1)
        send_buttons = QVBoxLayout()
        send_buttons.addWidget(self.send_button)
        send_buttons.addWidget(self.stop_button)
        send_buttons.addStretch(1)
        compose = QHBoxLayout()
        compose.addWidget(self.message_box, 1)
        compose.addLayout(send_buttons)
        actions = QHBoxLayout()
        for button in (self.regenerate_button, self.copy_button, self.clear_button):
            actions.addWidget(button)
        actions.addStretch(1)
        actions.addWidget(self.save_button)
        actions.addWidget(self.open_button)
        layout = QVBoxLayout(tab)
        layout.addLayout(adapter_row)
        layout.addWidget(self.transcript, 1)
        layout.addLayout(compose)
        layout.addLayout(actions)
        layout.addWidget(self.status_label)

        self.send_button.clicked.connect(self.send)
        self.message_box.submitted.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.copy_button.clicked.connect(self.copy_reply)
        self.clear_button.clicked.connect(self.clear)
        self.save_button.clicked.connect(self._save_dialog)
        self.open_button.clicked.connect(self._open_dialog)
        return tab

    # --- public actions -----------------------------------------------------------------

    @property
    def session(self) -> Optional["ChatSession"]:
        return self._session

    @property
    def busy(self) -> bool:
        return self._task.busy

    @property
    def generating(self) -> bool:
        """A chat reply or a comparison is being generated."""
        return self.busy and self._task_kind in ("generate", "compare")

    def refresh(self) -> None:
        """Re-read the model list, the adapter library and the runs' checkpoints."""
        self.model_picker.refresh()
        self._refresh_adapters()
        self.compare_view.preferences.refresh_sets()

    def load(self) -> None:
        """Load the picked model (once), with the picked adapter on top."""
        model_ref = self.model_picker.current_ref()
        if self.busy or self._session is not None or not model_ref:
            return
        if not confirm_model_code(self, model_ref):
            return
        adapter_ref = self.adapter_picker.current_ref()

        def load_session(_reporter: TaskReporter) -> _Loaded:
            from engine.chat.devices import chat_threads
            from engine.chat.gguf_session import GgufFiles
            from engine.chat.session import ChatSession

            session = ChatSession(model_ref, threads=chat_threads())
            session.load()
            files = GgufFiles(threads=chat_threads())
            try:
                _answering(session, files, adapter_ref)
            except StudioError as exc:
                # The base is loaded and stays useful: report the adapter, keep the session.
                return _Loaded(session, files, model_ref, None, str(exc))
            return _Loaded(session, files, model_ref, adapter_ref, None)

        self._session_model_label = self.model_picker.currentText()
        adapter_label = self.adapter_picker.current_label()
        self._start("load", f"Loading {self._session_model_label}…", load_session,
                    partial(self._loaded, adapter_label), self._load_failed)

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
        self._history.append({"role": "user", "content": text})
        self.message_box.clear()
        self.transcript.add_turn("You", text, USER_COLOUR)
        self._generate_reply(partial(self._send_failed, text))

    def regenerate(self) -> None:
        """Answer the last user message again, replacing the reply it had."""
        if self.busy or not self._history or not self._session_ready():
            return
        if self._history[-1]["role"] == "assistant":
            self._history.pop()
            if self._last_reply_start is not None:
                self.transcript.remove_from(self._last_reply_start)
        self._generate_reply(self._regenerate_failed)

    def stop(self) -> None:
        """End the reply or comparison being generated; what was generated so far is kept."""
        if self.generating:
            self._task.cancel()

    def copy_reply(self) -> None:
        replies = [message["content"] for message in self._history if message["role"] == "assistant"]
        if replies:
            QGuiApplication.clipboard().setText(replies[-1])
            self.status_label.setText("Copied the last reply to the clipboard.")

    def clear(self) -> None:
        """Forget the conversation (the model stays loaded)."""
        if self.generating:
            return
        self._history.clear()
        self._last_reply_start = None
        self.transcript.clear()
        self.status_label.clear()
        self._update_controls()

    def keep_settings(self) -> None:
        """Keep the sampling controls as the picked library adapter's chat settings (engine.adapters.library)."""
        from engine.adapters.library import set_chat_settings

        name = self._library_adapter()
        if name is None:
            return
        try:
            set_chat_settings(name, self.settings.values())
        except StudioError as exc:
            self.status_label.setText(f"Could not keep the settings for {name}: {exc}")
            return
        self.status_label.setText(f"Kept these settings for {name}: picking it fills them in, and its GGUF "
                                  "export's Modelfile carries them.")

    def save_transcript_to(self, path: str) -> Optional[Path]:
        """Save the conversation (Markdown for .md, else JSON); None when it failed, as the chat says."""
        from engine.chat.transcripts import ChatTranscript, save_transcript

        transcript = ChatTranscript(
            messages=self.settings.system_messages() + self._history,
            model=self._session_model_label or self.model_picker.currentText() or None,
            adapter=self._session_adapter_label if self._session_adapter else None,
            settings=self.settings.values(),
        )
        try:
            saved = save_transcript(path, transcript)
        except StudioError as exc:
            self.transcript.add_error(f"Could not save the chat: {exc}")
            return None
        self.status_label.setText(f"Saved the chat to {saved}")
        return saved

    def open_transcript_from(self, path: str) -> bool:
        """Show a saved conversation and go on from it; False when it could not be read."""
        from engine.chat.transcripts import load_transcript

        if self.generating:
            return False
        try:
            loaded = load_transcript(path)
        except StudioError as exc:
            self.transcript.add_error(f"Could not open the chat: {exc}")
            return False
        system = [message["content"] for message in loaded.messages if message["role"] == "system"]
        self.settings.system_box.setPlainText("\n\n".join(system))
        self.settings.apply(loaded.settings)
        self._history = [message for message in loaded.messages if message["role"] != "system"]
        self.transcript.clear()
        self._last_reply_start = None
        speaker = f"Assistant · {loaded.adapter}" if loaded.adapter else "Assistant"
        for message in self._history:
            if message["role"] == "user":
                self.transcript.add_turn("You", message["content"], USER_COLOUR)
            else:
                self._last_reply_start = self.transcript.add_turn(speaker, message["content"], ASSISTANT_COLOUR)
        source = loaded.model or "an unnamed model"
        self.transcript.add_note(
            f"Opened {Path(path).name}, a chat with {source}"
            + (f" and adapter {loaded.adapter}" if loaded.adapter else "")
            + ". New replies come from the model loaded here."
        )
        self.status_label.clear()
        self._update_controls()
        return True

    def compare(self) -> None:
        """Send the compare prompt to every visible column, one after another."""
        view = self.compare_view
        if self.busy:
            return
        prompt = view.prompt()
        if not prompt:
            view.show_status("Type a prompt first: there is nothing to compare.", ERROR_COLOUR)
            return
        if not self._session_ready():
            view.show_status("Load the model first: press \"Load model\".", ERROR_COLOUR)
            return
        try:
            choices = view.choices()
        except StudioError as exc:
            view.show_status(str(exc), ERROR_COLOUR)
            return
        session, files = self._session, self._files
        messages = self.settings.system_messages() + [{"role": "user", "content": prompt}]
        settings = self.settings.values()

        def run(reporter: TaskReporter) -> list["ColumnResult"]:
            return session.compare(
                messages, choices, **settings, stop_event=reporter.cancel_event,
                on_token=lambda index, piece: reporter.emit((index, piece)),
                on_column=lambda index, result: reporter.emit((index, result)),
                open_file=files.open,
            )

        view.begin(Comparison(messages, settings, self._session_model))
        self._start("compare", "", run, self._compared, self._compare_failed)

    def make_room_for_training(self, config: Any) -> None:
        """A training run (a RunConfig) is starting: unload the chat model, with a notice in
        the chat, when the memory estimator says the run would not fit beside it."""
        from engine.chat.room import room_for_training

        session = self._session
        if session is None:
            if self.busy and self._task_kind == "load":
                self._training_waiting = config  # decided once the model is in memory
            return
        try:
            room = room_for_training(session, config)
        except StudioError as exc:
            self.transcript.add_note(f"A training run started; whether it fits beside the chat model is unknown "
                                     f"({exc}), so the model stays loaded.")
            return
        if room is None or room.fits:
            return
        self._unload_notice = (f"Unloaded {self._session_model_label} to make room for training: {room.describe()}, "
                               "counting the chat model. Load it again when the run is over.")
        if self.busy:
            self._task.cancel()  # a reply or comparison ends within a token; the unload follows it
        else:
            self._unload_for_training()

    def close_session(self) -> None:
        """Stop any reply and unload the model now; the window calls this when it closes.

        It waits for the worker (a stopped reply ends within a token) so the model is
        never closed under a running generation.
        """
        # A load cannot be interrupted; if it outlasts the wait, its session is
        # closed when it arrives (see _close_abandoned).
        ended = self._task.let_go(10.0)
        session, files = self._session, self._files
        self._forget_session()
        if session is not None and ended:
            gc.unfreeze()
            session.close()
            files.close()
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
        on_messages = {"generate": self._tokens_arrived, "compare": self._compare_arrived}.get(kind)
        self._task_kind = kind
        self._task.start(fn, on_success, on_failure, on_messages=on_messages, on_finished=self._task_finished,
                         on_disowned=self._close_abandoned)
        if busy_text:
            self.session_label.setText(busy_text)
            self.busy_bar.show()
        self._update_controls()

    @staticmethod
    def _close_abandoned(result: Any) -> None:
        if isinstance(result, _Loaded):
            # close_session() gave up waiting for this load; the page no longer wants it.
            result.session.close()
            result.files.close()

    def _task_finished(self) -> None:
        self.busy_bar.hide()
        self._update_controls()
        if self._task_kind in ("load", "swap", "unload"):
            self.sessionChanged.emit()
        if self._training_waiting is not None and not self.busy:
            config, self._training_waiting = self._training_waiting, None
            self.make_room_for_training(config)
        if self._unload_notice is not None and not self.busy:
            self._unload_for_training()
        elif self._pickers_moved_while_busy and not self.busy:
            self._pickers_moved_while_busy = False
            self._follow_pickers()
            self._update_controls()
        self._load_if_wanted()

    def _loaded(self, adapter_label: str, loaded: _Loaded) -> None:
        # Torch, transformers and the model's modules are hundreds of thousands of objects
        # that live as long as the model: a full garbage collection scanning them all took
        # 300 ms, a stall of the window whenever one fell while a reply streamed. Frozen,
        # collections skip them; they are thawed when the model is unloaded (_unload, close_session).
        gc.freeze()
        self._session, self._files = loaded.session, loaded.files
        self._session_model = loaded.model_ref
        self._session_adapter = loaded.adapter_ref
        self._session_adapter_label = adapter_label if loaded.adapter_ref else "base model"
        if loaded.adapter_error:
            self.transcript.add_error(f"The model is loaded, but the adapter is not: {loaded.adapter_error}")
        self._focus_the_prompt()

    def _focus_the_prompt(self) -> None:
        """Put the keyboard focus where the user types next, once a model is loaded.

        The Load button is disabled while it loads, and Qt hands a disabled widget's focus
        to the next one in the chain: the System prompt, where a first message typed went.
        The focus is moved only when it is on this page (or nowhere), never taken from
        another page the user went to meanwhile."""
        focused = QApplication.focusWidget()
        if not self.isVisible() or (focused is not None and not self.isAncestorOf(focused)):
            return
        prompt = self.compare_view.prompt_box if self.tabs.currentWidget() is self.compare_view else self.message_box
        prompt.setFocus(Qt.FocusReason.OtherFocusReason)

    def _load_failed(self, message: str) -> None:
        self.transcript.add_error(f"Could not load {self._session_model_label}: {message}")

    def _swap_adapter(self) -> None:
        session, files = self._session, self._files
        adapter_ref = self.adapter_picker.current_ref()
        label = self.adapter_picker.current_label()

        def swap(_reporter: TaskReporter) -> Optional[str]:
            _answering(session, files, adapter_ref)
            return adapter_ref

        def swapped(ref: Optional[str]) -> None:
            self._session_adapter, self._session_adapter_label = ref, label

        def swap_failed(message: str) -> None:
            self.transcript.add_error(f"Could not switch to {label}: {message}")

        verb = "Opening" if is_gguf(adapter_ref) else "Switching to"
        self._start("swap", f"{verb} {label}…", swap, swapped, swap_failed)

    def _unload(self, notice: Optional[str] = None) -> None:
        session, files = self._session, self._files
        self._forget_session()
        gc.unfreeze()  # so that closing the session can collect the model's reference cycles

        def unloaded(_result: object) -> None:
            if notice:
                self.transcript.add_note(notice)
                self.status_label.setText(notice)

        self._start(
            "unload",
            "Unloading the model…",
            lambda _reporter: (session.close(), files.close()),
            unloaded,
            lambda message: self.transcript.add_error(f"Unloading the model failed: {message}"),
        )

    def _unload_for_training(self) -> None:
        notice, self._unload_notice = self._unload_notice, None
        if self._session is not None:
            self._unload(notice)

    def _forget_session(self) -> None:
        self._session = self._files = None
        self._session_model = None
        self._session_adapter = None
        self._session_adapter_label = "base model"

    # --- replies ------------------------------------------------------------------------

    def _generate_reply(self, on_failure: Callable[[str], None]) -> None:
        session, files, adapter_ref = self._session, self._files, self._session_adapter
        conversation = self.settings.system_messages() + list(self._history)  # the worker gets its own list
        settings = self.settings.values()

        def generate(reporter: TaskReporter) -> "ChatReply":
            # The session's adapter is already active (load and swap made it so); a file is open.
            answering = files.open(column_choice(adapter_ref)) if is_gguf(adapter_ref) else session
            return answering.generate(conversation, **settings, on_token=reporter.emit,
                                      stop_event=reporter.cancel_event)

        self._reply_start = self.transcript.begin_turn(f"Assistant · {self._session_adapter_label}",
                                                       ASSISTANT_COLOUR)
        self._live = LiveRate()
        self.status_label.setText("Generating…")
        self._start("generate", "", generate, self._replied, on_failure)

    def _tokens_arrived(self, pieces: list) -> None:
        self.transcript.append_text("".join(pieces))
        self._live.add(len(pieces), time.perf_counter())
        self.status_label.setText(f"Generating… {self._live.describe()}")

    def _replied(self, reply: "ChatReply") -> None:
        self._history.append({"role": "assistant", "content": reply.reply})
        self._last_reply_start = self._reply_start
        if reply.stopped:
            self.transcript.append_text("  [stopped]", NOTE_COLOUR, italic=True)
        self.status_label.setText(describe_reply(reply))
        self.replyFinished.emit(reply)

    def _send_failed(self, text: str, message: str) -> None:
        # The model never answered this turn: take it out of the history and hand the
        # text back so the user can send it again.
        self._history.pop()
        if not self.message_box.toPlainText():
            self.message_box.setPlainText(text)
        self.transcript.add_error(message)
        self.status_label.clear()

    def _regenerate_failed(self, message: str) -> None:
        self.transcript.add_error(message)
        self.status_label.clear()

    def _compare_arrived(self, batch: list) -> None:
        view = self.compare_view
        pending: list[str] = []
        streaming = -1
        for index, item in batch:
            if isinstance(item, str):
                if index != streaming and pending:
                    view.append(streaming, pending)
                    pending = []
                streaming = index
                pending.append(item)
            else:
                if pending:
                    view.append(streaming, pending)
                    pending = []
                view.finish_column(index, item)
        if pending:
            view.append(streaming, pending)

    def _compared(self, results: list["ColumnResult"]) -> None:
        seeds = {result.reply.seed for result in results if result.reply is not None} - {None}
        stopped = any(result.reply is not None and result.reply.stopped for result in results)
        text = f"Compared {len(results)} columns" + (f" with seed {seeds.pop()}" if seeds else " greedily")
        self.compare_view.show_status(text + (" (stopped)" if stopped else "."))
        self.compare_view.end()
        self.compareFinished.emit(results)

    def _compare_failed(self, message: str) -> None:
        self.compare_view.show_status(message, ERROR_COLOUR)
        self.compare_view.end()

    # --- files ----------------------------------------------------------------------------

    def _save_dialog(self) -> None:
        path, chosen = QFileDialog.getSaveFileName(self, "Save the chat", str(Path.home() / "chat.md"),
                                                   _TRANSCRIPT_FILTERS)
        if path:
            if not Path(path).suffix:
                path += ".json" if chosen.startswith("JSON") else ".md"
            self.save_transcript_to(path)

    def _open_dialog(self) -> None:
        path, _chosen = QFileDialog.getOpenFileName(self, "Open a chat", str(Path.home()),
                                                    "Chats (*.md *.json);;All files (*)")
        if path:
            self.open_transcript_from(path)

    # --- following the pickers ----------------------------------------------------------

    def _refresh_adapters(self) -> None:
        entries = adapter_entries(self.model_picker.current_ref()) + gguf_entries(self._gguf_paths)
        self.adapter_picker.refresh(entries)
        self.compare_view.set_entries(entries)

    # --- GGUF files -----------------------------------------------------------------------

    def add_gguf_file(self, path: str) -> Optional[str]:
        """List the GGUF file at ``path`` in the adapter pickers; its chooser data, or None (with
        the reason in the chat) when there is no such file. Whether llama.cpp can open it is said
        when it is opened (``engine.gguf.runtime``; importing llama.cpp takes too long to ask here)."""
        if not Path(path).is_file():
            self.transcript.add_error(f"Cannot chat with a GGUF file: there is no GGUF file at {path}")
            return None
        path = str(Path(path).expanduser().resolve())
        if path not in self._gguf_paths:
            self._gguf_paths.append(path)
        self._refresh_adapters()
        return gguf_ref(path)

    def chat_with_file(self, path: str, adapter: Optional[str] = None) -> None:
        """Set the page up to try the GGUF file at ``path``: chat answers from it, and Compare
        puts it beside ``adapter`` (the adapter it was exported from) on that adapter's base
        model, which is loaded when it is not yet."""
        ref = self.add_gguf_file(path)
        if ref is None:
            return
        if self.generating:
            self.transcript.add_note(f"{Path(path).name} is listed in the adapter pickers: pick it once this reply "
                                     "has ended.")
            return
        if adapter is not None:
            from engine.adapters.library import read_adapter_meta, resolve_adapter

            try:
                base = read_adapter_meta(resolve_adapter(adapter)).get("base_model")
            except StudioError:
                base = None
            if base:
                self.model_picker.set_ref(str(base))  # another model than the loaded one is loaded instead
            self.compare_view.set_columns([adapter, ref])
            self.tabs.setCurrentWidget(self.compare_view)
        self.adapter_picker.set_ref(ref)
        self._load_when_idle = True
        self._load_if_wanted()

    def _load_if_wanted(self) -> None:
        """Load the picked model once nothing runs, when ``chat_with_file`` asked for it."""
        if self._load_when_idle and not self.busy:
            self._load_when_idle = False
            if self._session is None:
                self.load()

    def _adapter_moved(self, index: int) -> None:
        if self.adapter_picker.currentData() == BROWSE_GGUF:
            self._ask_for_file(self.adapter_picker.set_ref, self._picked_adapter)
            return
        self._picked_adapter = self.adapter_picker.current_ref()
        self._pickers_moved(index)
        self._adapter_picked(index)

    def _column_wants_file(self, column: int) -> None:
        chooser: ColumnChooser = self.compare_view.columns[column].chooser
        self._ask_for_file(chooser.pick_file, None)

    def _ask_for_file(self, pick: Callable[[Optional[str]], None], otherwise: Optional[str]) -> None:
        """Ask for a GGUF file and ``pick`` it; ``pick(otherwise)`` when none was chosen."""
        path, _chosen = QFileDialog.getOpenFileName(self, "Chat with a GGUF file", str(Path.home()),
                                                    "GGUF (*.gguf);;All files (*)")
        pick((self.add_gguf_file(path) if path else None) or otherwise)

    def _model_moved(self, index: int) -> None:
        self._refresh_adapters()  # checkpoints are listed for the picked model
        self._pickers_moved(index)

    def _pickers_moved(self, _index: int) -> None:
        if self.busy:
            self._pickers_moved_while_busy = True
        else:
            self._follow_pickers()
            self._update_controls()

    def _library_adapter(self) -> Optional[str]:
        """The picked adapter when it is a library entry (named, as resolve_adapter reads a name);
        None for the base model or a run's checkpoint (a folder), which keep no settings."""
        ref = self.adapter_picker.current_ref()
        return ref if ref is not None and is_plain_name(ref) else None

    def _adapter_picked(self, _index: int) -> None:
        """Fill the sampling controls from the picked adapter's chat settings, when it has some."""
        from engine.adapters.library import chat_settings, read_adapter_meta
        from engine.paths import adapters_dir

        name = self._library_adapter()
        settings = chat_settings(read_adapter_meta(adapters_dir() / name)) if name else {}
        if settings:
            self.settings.apply(settings)
            self.status_label.setText(f"Sampling settings from {name}'s chat settings.")

    def _show_keep_button(self, name: Optional[str]) -> None:
        button = self.keep_settings_button
        text = f"Keep these settings for {name}" if name else "Keep these settings for the adapter"
        # A long adapter name is shortened on the button and whole in its tooltip.
        button.setText(QFontMetrics(button.font()).elidedText(text, Qt.TextElideMode.ElideMiddle, button.width() - 16))
        button.setToolTip(f"{text}: picking it again fills them in, and its GGUF export's Modelfile carries them"
                          if name else "Pick an adapter of the library to keep these settings as its own")
        button.setEnabled(name is not None and not self.generating)

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
                f"Loaded: {self._session_model_label} · chat adapter: {self._session_adapter_label}"
            )

    def _update_controls(self) -> None:
        idle = not self.busy
        generating = self.generating
        ready = idle and self._session_ready()
        if idle:
            self._show_session()
        has_reply = any(message["role"] == "assistant" for message in self._history)
        self.model_picker.setEnabled(idle)
        self.adapter_picker.setEnabled(idle)
        self.load_button.setEnabled(idle and self._session is None and bool(self.model_picker.current_ref()))
        self.send_button.setEnabled(ready)
        self.send_button.setToolTip("Send the message (Ctrl+Enter)" if ready else "Load a model to chat")
        self.stop_button.setEnabled(generating and self._task_kind == "generate")
        self.regenerate_button.setEnabled(ready and bool(self._history))
        self.copy_button.setEnabled(has_reply)
        self.clear_button.setEnabled(not generating)
        self.save_button.setEnabled(bool(self._history) and not generating)
        self.open_button.setEnabled(not generating)
        self.settings.setEnabled(not generating)
        self._show_keep_button(self._library_adapter())
        self.compare_view.set_state(ready=ready, running=generating and self._task_kind == "compare")


def _answering(session: "ChatSession", files: "GgufFiles", ref: Optional[str]) -> Any:
    """What answers as the chooser data ``ref`` says: the GGUF file it names (opened now when it
    is not yet), else ``session`` with that adapter (None: the base) made active."""
    if is_gguf(ref):
        return files.open(column_choice(ref))
    session.set_adapter(ref)
    return session


def _button(text: str, tip: str, parent: QWidget) -> QPushButton:
    button = QPushButton(text, parent)
    button.setToolTip(tip)
    return button


def _buddy_label(text: str, buddy: QWidget) -> QLabel:
    label = QLabel(text)
    label.setBuddy(buddy)
    return label
