"""Serve: the picked model and adapters behind an OpenAI-compatible HTTP server on this machine
(``engine.serve.server.LocalServer``), for editors, chat front-ends and scripts to use.

The server's whole life is one ``BackgroundTask``: its thread starts the server (loading the
model takes seconds), reports it serving, waits for the task's cancel event and stops it (which
ends running generations and joins the server's threads). Stop sets that event; closing the
window cancels and joins every task the same way (``workers.shutdown_all``), so no server
outlives the window. The server reports each request it answered on its own threads; the task
hands those events to the page in batches, ten times a second, and the page polls the server's
cheap ``stats()`` once a second for the live rates.
"""

from __future__ import annotations

import gc

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from studio import theme
from studio.widgets.pickers import ModelPicker
from studio.widgets.serve_connect import ConnectPanel
from studio.widgets.serve_log import LiveFigures, RequestLogView
from studio.widgets.serve_settings import ServeSettingsForm
from studio.widgets.trust_dialog import confirm_model_code
from studio.workers import TaskReporter, TaskSlot

if TYPE_CHECKING:
    from engine.serve.server import LocalServer, ServeSettings

_EVENTS_MS = 100  # the server's events reach the page in batches, ten times a second
_STATS_MS = 1000
_SETTINGS_WIDTH = 260


@dataclass
class _Serving:
    """The task's first message: the server is up."""

    server: "LocalServer"
    url: str
    model_names: list[str]


def serve(settings: "ServeSettings", reporter: TaskReporter) -> None:
    """Run a server with ``settings`` until the task is cancelled (on the worker thread)."""
    from engine.serve.server import LocalServer

    server = LocalServer(settings, on_event=reporter.emit)
    server.start()
    try:
        reporter.emit(_Serving(server, server.url, list(server.model_names)))
        reporter.cancel_event.wait()
    finally:
        server.stop()


def adapters_made_for(model_ref: str) -> list[str]:
    """The names of the library's adapters that go on ``model_ref`` (on a worker thread: it reads
    the model's weight files to fingerprint them). A model not on disk yet (the starter before its
    first use) cannot be fingerprinted: every usable adapter is listed, and the server checks the
    ones chosen when it loads them."""
    from engine.adapters.base_model import adapters_for
    from engine.adapters.library import list_adapters
    from engine.models.store import model_folder

    try:
        records = adapters_for(model_folder(model_ref))
    except StudioError:
        records = [record for record in list_adapters() if not record.damaged]
    return [record.name for record in records]


class ServePage(QWidget):
    """Pick a model and adapters, Start; the URL, snippets, live figures and the request log; or export
    them for vLLM ("Serve elsewhere…")."""

    servingChanged = Signal(str)  # "serving", "stopped" or "failed", once the page shows it
    requestsLogged = Signal(list)  # each batch of RequestLogged events, once the log shows it
    adaptersListed = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._task = TaskSlot(self._update_controls)
        self._list_task = TaskSlot()
        self._server: Optional["LocalServer"] = None
        self._stopping = False
        self._froze = False  # this page froze the garbage collector's view when its server started
        self._stop_notice: Optional[str] = None  # why the server was stopped, when the page stopped it
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(_STATS_MS)
        self._stats_timer.timeout.connect(self._show_stats)
        self._build()
        self.refresh()
        self._update_controls()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.model_picker = ModelPicker(self)
        self.model_picker.setAccessibleName("Model")
        self.model_picker.set_about("The base model the server loads once; each checked adapter is swapped onto it "
                                    "for the requests that name it.")
        self.start_button = QPushButton("Start", self)
        self.start_button.setToolTip("Load the model and start serving it, with the checked adapters")
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop serving: requests being answered end now, and the model is unloaded")
        self.elsewhere_button = QPushButton("Serve elsewhere…", self)
        self.busy_bar = QProgressBar(self)
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setAccessibleName("Working")
        self.busy_bar.hide()
        self.state_label = QLabel("Not serving.", self)
        self.state_label.setAccessibleName("Server state")
        self.error_label = QLabel(self)
        self.error_label.setAccessibleName("Error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(f"color: {theme.colours().error};")
        self.error_label.hide()
        self.form = ServeSettingsForm(self)
        self.form.setFixedWidth(_SETTINGS_WIDTH)
        self.connect_panel = ConnectPanel(self)
        self.figures = LiveFigures(self)
        self.log_view = RequestLogView(self)

        model_label = QLabel("&Model:", self)
        model_label.setBuddy(self.model_picker)
        top = QHBoxLayout()
        top.addWidget(model_label)
        top.addWidget(self.model_picker, 1)
        top.addWidget(self.start_button)
        top.addWidget(self.stop_button)
        top.addWidget(self.elsewhere_button)
        state = QHBoxLayout()
        state.addWidget(self.state_label, 1)
        state.addWidget(self.busy_bar)
        log_box = QWidget(self)
        log_layout = QVBoxLayout(log_box)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_layout.addWidget(self.figures)
        log_layout.addWidget(self.log_view, 1)
        right = QSplitter(Qt.Orientation.Vertical, self)
        right.addWidget(self.connect_panel)
        right.addWidget(log_box)
        right.setStretchFactor(1, 1)
        right.setChildrenCollapsible(False)
        body = QHBoxLayout()
        body.addWidget(self.form)
        body.addWidget(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(state)
        layout.addWidget(self.error_label)
        layout.addLayout(body, 1)

        self.model_picker.currentIndexChanged.connect(lambda _index: self._list_adapters())
        self.form.changed.connect(self._update_controls)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.elsewhere_button.clicked.connect(self.serve_elsewhere)

    # ------------------------------------------------------------------ api
    @property
    def serving(self) -> bool:
        """A server is up (or being started or stopped)."""
        return self._task.busy

    @property
    def server(self) -> Optional["LocalServer"]:
        """The running server, None until it is up."""
        return self._server

    def refresh(self) -> None:
        """Re-read the models and the adapters made for the picked one."""
        self.model_picker.refresh()
        self._list_adapters()

    def settings(self) -> "ServeSettings":
        """What Start serves, as the page's choices say."""
        from engine.chat.devices import chat_threads
        from engine.serve.server import ServeSettings

        return ServeSettings(model=self.model_picker.current_ref(), adapters=self.form.checked_adapters(),
                             host=self.form.host, port=self.form.port_spin.value(), api_key=self.form.api_key,
                             threads=chat_threads())

    def start(self) -> None:
        """Start serving the picked model and checked adapters, on a worker thread."""
        if self.serving or not self.model_picker.current_ref():
            return
        if not confirm_model_code(self, self.model_picker.current_ref()):
            return
        settings = self.settings()
        self._say_error("")
        self._stopping = False
        self.log_view.clear()
        self._show_state(f"Loading {self.model_picker.currentText()}…", busy=True)
        self._task.start(lambda reporter: serve(settings, reporter), self._stopped, self._failed,
                         on_messages=self._arrived, poll_ms=_EVENTS_MS)
        self._update_controls()

    def stop(self) -> None:
        """Stop serving (off the UI thread: it waits for the requests being answered to end)."""
        if self.serving and not self._stopping:
            self._stopping = True
            self._stats_timer.stop()
            if self._froze:
                gc.unfreeze()
                self._froze = False
            self._task.cancel()
            self._show_state("Stopping…", busy=True)
            self._update_controls()

    def make_room_for_training(self, config: Any) -> None:
        """A training run (a RunConfig) is starting: stop serving, saying why, when the memory
        estimator says the run would not fit beside the served model (as the Chat page unloads)."""
        from engine.chat.room import room_for_training

        server = self._server
        if server is None or self._stopping or server.session is None:
            return
        try:
            room = room_for_training(server.session, config)
        except StudioError:
            return  # whether it fits is unknown: the server keeps serving, as Chat keeps its model
        if room is None or room.fits:
            return
        self._stop_notice = (f"Stopped serving to make room for training: {room.describe()}, counting the "
                             "served model. Start it again when the run is over.")
        self.stop()

    def serve_elsewhere(self) -> QDialog:
        """Open the dialog that exports the picked model's checked adapters for vLLM."""
        from studio.widgets.serve_elsewhere import ServeElsewhereDialog

        dialog = ServeElsewhereDialog(self.model_picker.current_ref(), self.form.checked_adapters(), self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    # ------------------------------------------------------------------ outcomes
    def _arrived(self, batch: list[Any]) -> None:
        from engine.serve.events import RequestLogged

        logged = []
        for message in batch:
            if isinstance(message, _Serving):
                self._started(message)
            elif isinstance(message, RequestLogged):
                logged.append(message)
        if logged:
            self.log_view.add(logged)
            self.requestsLogged.emit(logged)

    def _started(self, serving: _Serving) -> None:
        if self._stopping:
            return  # Stop was pressed while the model loaded: the task stops it right away
        # The served model's objects live as long as it serves: frozen, the full collections that
        # requests' garbage sets off skip them (a scan of them all stalled the window 300 ms; see the
        # Chat page). Stop thaws them, so that closing the model can collect its reference cycles.
        gc.freeze()
        self._froze = True
        self._server = serving.server
        self.connect_panel.show_serving(serving.url, serving.model_names, self.form.api_key)
        self._show_state(f"Serving at {serving.url}", busy=False)
        self._show_stats()
        self._stats_timer.start()
        self._update_controls()
        self.servingChanged.emit("serving")

    def _stopped(self, _result: None) -> None:
        self._forget_server()
        notice, self._stop_notice = self._stop_notice, None
        self._show_state(notice or "Stopped.", busy=False)
        self._update_controls()
        self.servingChanged.emit("stopped")

    def _failed(self, message: str) -> None:
        self._forget_server()
        self._show_state("Not serving.", busy=False)
        self._say_error(message)
        self._update_controls()
        self.servingChanged.emit("failed")

    def _forget_server(self) -> None:
        self._stats_timer.stop()
        self._server = None
        self._stopping = False
        self.connect_panel.show_idle()
        self.figures.clear()

    def _show_stats(self) -> None:
        if self._server is not None:
            self.figures.show_stats(self._server.stats())

    def _show_state(self, text: str, *, busy: bool) -> None:
        self.state_label.setText(text)
        self.busy_bar.setVisible(busy)

    def _say_error(self, text: str) -> None:
        """The one line of a refusal or failure, in red; empty hides it."""
        self.error_label.setText(text)
        self.error_label.setVisible(bool(text))

    # ------------------------------------------------------------------ adapters
    def _list_adapters(self) -> None:
        model = self.model_picker.current_ref()
        if not model:
            self.form.set_adapters([])
            return

        def listed(names: list[str]) -> None:
            self.form.set_adapters(names)
            self.adaptersListed.emit()

        self._list_task.start(lambda _reporter: adapters_made_for(model), listed,
                              lambda message: self._say_error(f"Could not list the adapters: {message}"),
                              needs_libraries=False)

    # ------------------------------------------------------------------ controls
    def _update_controls(self) -> None:
        idle = not self.serving
        self.model_picker.setEnabled(idle)
        self.form.setEnabled(idle)
        self.start_button.setEnabled(idle and bool(self.model_picker.current_ref()))
        self.stop_button.setEnabled(not idle and not self._stopping)
        adapters = bool(self.model_picker.current_ref() and self.form.checked_adapters())
        self.elsewhere_button.setEnabled(adapters)
        self.elsewhere_button.setToolTip(
            "Write a folder that serves the checked adapters over this model on vLLM's multi-LoRA server, on a "
            "machine with a GPU" if adapters else "Check the adapters to serve elsewhere first")
