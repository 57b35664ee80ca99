"""The main window: a sidebar of pages (Home, Models, Data, Train, Adapters, Chat, Evaluate, Serve),
the menus and keyboard shortcuts, the status bar, and what the window remembers.

Pages know nothing of each other; this window connects them: a new adapter from
Train refreshes Adapters and Chat, a model added on Models refreshes the pickers
on Train and Chat.

A page is built the first time it is needed (shown, or asked for by its attribute,
``window.train_page``): the window opens with Home alone, before the plotting and
training libraries are loaded, and shows itself within a second or so. The first
paint is announced by ``firstShown``; Home starts its background work only then, so
that nothing competes with the window for the CPU while it appears.
"""

from __future__ import annotations

import gc
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QByteArray, QEvent, QObject, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QSplitter,
    QStackedWidget,
    QSystemTrayIcon,
    QWidget,
)

from engine.core.choices import RunStatus
from engine.run.events import RunFinished
from studio import workers
from studio.icons import page_icon
from studio.settings import app_settings
from studio.widgets.error_dialog import show_error
from studio.window_state import fit_to_screen, from_text, remember_header, remember_splitter, room_on_screen, to_text

log = logging.getLogger(__name__)

_STATE_MESSAGES = {
    "starting": "Checking the run against this machine…",
    "running": "Training…",
    "pausing": "Pausing the run after this step…",
    "paused": "Training paused",
    "resuming": "Resuming the run…",
    "stopping": "Stopping the run and saving the adapter…",
}
RECENT_RUNS = 10
# Every page fits the minimum size (tests/studio/test_window_fits.py); the default, on a screen
# with room for it, shows the tables and plots more comfortably.
MINIMUM_SIZE = QSize(1024, 680)
DEFAULT_SIZE = QSize(1280, 800)
NOTICE_MS = 15_000
READY = "Ready"  # what the status bar says while nothing goes on


@dataclass(frozen=True)
class PageSpec:
    title: str
    icon: str  # studio/resources/icons/pages/<icon>.svg
    module: str
    cls: str
    table: Optional[str] = None  # the attribute holding the table whose columns are remembered


PAGES = (
    PageSpec("Home", "home", "studio.pages.home", "HomePage", "runs_view"),
    PageSpec("Models", "models", "studio.pages.models", "ModelsPage", "table"),
    PageSpec("Data", "data", "studio.pages.data", "DataPage"),
    PageSpec("Train", "train", "studio.pages.train.page", "TrainPage"),
    PageSpec("Adapters", "adapters", "studio.pages.adapters", "AdaptersPage", "table"),
    PageSpec("Chat", "chat", "studio.pages.chat", "ChatPage"),
    PageSpec("Evaluate", "evaluate", "studio.pages.evaluate", "EvaluatePage"),
    PageSpec("Serve", "serve", "studio.pages.serve", "ServePage", "log_view"),
)


def fix_for_run_error(error: str) -> str:
    """What to try after a failed run, from the words of its error."""
    text = error.lower()
    if "out of memory" in text:
        return ("Lower the batch size or the max length on the Train page (or close other programs that use "
                "the memory), then start again.")
    if "not finite" in text or "nan" in text.split() or "diverged" in text:
        return "Lower the learning rate on the Train page, then start again."
    if "not found" in text or "no such file" in text:
        return "Check that the model and the dataset are still where they were, then start again."
    if "ended unexpectedly" in text:
        return ("The run's train.log has the training process's last words. Once the cause is fixed, the run "
                "resumes from its last checkpoint.")
    return "The Train page's log and the run folder's train.log tell more; fix the cause and start again."


class MainWindow(QMainWindow):
    firstShown = Signal()  # the window has been painted once
    librariesLoaded = Signal()  # the app's start-up import of the training libraries ended (studio.app)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LoRA Studio")
        self.settings = app_settings()
        self._pages: dict[str, QWidget] = {}
        self._painted = False
        self._data_page_visited = False
        self._run_state = "idle"
        self._keep_frozen = False
        self._tray: Optional[QSystemTrayIcon] = None
        self._evaluated_name = "the adapter"  # the run whose evaluation of itself the notice waits for
        self._dialogs: dict[str, QWidget] = {}

        self.sidebar = QListWidget()
        self.sidebar.setAccessibleName("Pages")
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setFixedWidth(170)
        self.sidebar.setSpacing(2)
        self.stack = QStackedWidget()
        for number, spec in enumerate(PAGES, start=1):
            item = QListWidgetItem(page_icon(spec.icon), spec.title)
            item.setToolTip(f"{spec.title} (Ctrl+{number})")
            item.setSizeHint(QSize(150, 40))
            self.sidebar.addItem(item)
            self.stack.addWidget(QWidget())  # where the page goes once it is built
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self._build_menus()
        self._build_status_bar()

        self._open_on_screen(from_text(self.settings.get("window.geometry")))
        self.sidebar.currentRowChanged.connect(self._show_page)
        self.sidebar.setCurrentRow(0)
        self.installEventFilter(self)  # until the first paint (see eventFilter)

    # ------------------------------------------------------------------ screen
    def _open_on_screen(self, saved: QByteArray) -> None:
        """Open as the window was last left, or at the default size, either way within the screen
        it opens on (the screen the remembered place is on, if it is still connected)."""
        restored = not saved.isEmpty() and self.restoreGeometry(saved)
        if not restored:
            self.resize(DEFAULT_SIZE)
        screen = QGuiApplication.screenAt(self.geometry().center()) if restored else None
        self.fit_into((screen or self.screen()).availableGeometry())

    def fit_into(self, available: QRect) -> None:
        """Keep the window, frame included, within ``available`` (a screen's free area): no bigger,
        and wholly on it. A screen smaller than the minimum size lowers the minimum to fit."""
        self.setMinimumSize(MINIMUM_SIZE.boundedTo(room_on_screen(available).size()))
        if self.windowState() & (Qt.WindowState.WindowMaximized | Qt.WindowState.WindowFullScreen):
            return  # the window manager fits it to the screen
        fitted = fit_to_screen(self.geometry(), available)
        if self.testAttribute(Qt.WidgetAttribute.WA_Moved):
            self.setGeometry(fitted)  # a remembered place: kept on the screen
        else:
            self.resize(fitted.size())  # where a new window opens is the window manager's choice

    # ------------------------------------------------------------------ pages
    @property
    def home_page(self) -> QWidget:
        return self.page("Home")

    @property
    def models_page(self) -> QWidget:
        return self.page("Models")

    @property
    def data_page(self) -> QWidget:
        return self.page("Data")

    @property
    def train_page(self) -> QWidget:
        return self.page("Train")

    @property
    def adapters_page(self) -> QWidget:
        return self.page("Adapters")

    @property
    def chat_page(self) -> QWidget:
        return self.page("Chat")

    @property
    def evaluate_page(self) -> QWidget:
        return self.page("Evaluate")

    @property
    def serve_page(self) -> QWidget:
        return self.page("Serve")

    def page(self, title: str) -> QWidget:
        """The page with this sidebar title, built now if it was not yet."""
        if title not in self._pages:
            self._build_page(title)
        return self._pages[title]

    def built(self, title: str) -> Optional[QWidget]:
        """The page if it was built (a page never built has nothing to update)."""
        return self._pages.get(title)

    def show_page(self, title: str) -> None:
        """Switch to the page with this sidebar title."""
        for row, spec in enumerate(PAGES):
            if spec.title == title:
                self.sidebar.setCurrentRow(row)
                return
        raise KeyError(title)

    def current_title(self) -> str:
        return PAGES[self.stack.currentIndex()].title

    def _build_page(self, title: str) -> None:
        row, spec = next((row, spec) for row, spec in enumerate(PAGES) if spec.title == title)
        page = getattr(importlib.import_module(spec.module), spec.cls)()
        standin = self.stack.widget(row)
        current = self.stack.currentIndex()
        self.stack.insertWidget(row, page)
        self.stack.removeWidget(standin)
        standin.deleteLater()
        self.stack.setCurrentIndex(current)
        self._pages[title] = page
        for index, splitter in enumerate(page.findChildren(QSplitter)):
            remember_splitter(splitter, f"layout.{spec.icon}.splitter{index}", self.settings)
        if spec.table:
            remember_header(getattr(page, spec.table).horizontalHeader(), f"layout.{spec.icon}.columns",
                            self.settings)
        connect = getattr(self, f"_connect_{spec.icon}", None)
        if connect is not None:
            connect(page)

    def _connect_home(self, home: QWidget) -> None:
        home.runsOpened.connect(self._remember_runs)
        home.resumeRequested.connect(lambda run_dir: self._on_train_page(lambda train: train.resume_run(Path(run_dir))))
        home.watchRequested.connect(lambda run_dir: self._on_train_page(lambda train: train.watch_run(Path(run_dir))))
        home.trainMoreRequested.connect(
            lambda run_dir: self._on_train_page(lambda train: train.ask_train_more(Path(run_dir))))

    def _on_train_page(self, act) -> None:
        """Take a run from the Home page to the Train page, unless that page is busy with another."""
        train = self.train_page
        self.show_page("Train")
        if train.busy:
            self.statusBar().showMessage("The Train page is busy with a run: stop it or wait for it to end first.",
                                         NOTICE_MS)
            return
        act(train)

    def _connect_data(self, data: QWidget) -> None:
        # Its dataset and reading choices go to the Train page when that is shown (_show_page); the
        # layout of each file it opens goes at once, for the Train page's objective to follow.
        data.layoutDetected.connect(lambda path, layout: self.train_page.set_dataset_layout(path, layout))

    def _connect_models(self, models: QWidget) -> None:
        models.modelsChanged.connect(self._on_models_changed)

    def _connect_train(self, train: QWidget) -> None:
        train.adapterSaved.connect(self._on_adapter_saved)
        train.modelSaved.connect(lambda _path: self._refresh_if_built("Models"))
        train.modelSaved.connect(lambda _path: self._on_models_changed())
        train.runStateChanged.connect(self._on_run_state)
        train.progressChanged.connect(self.statusBar().showMessage)
        train.runFinished.connect(self._on_run_finished)
        train.evaluationFinished.connect(self._on_run_evaluated)
        self._restore_last_choices(train)
        self._train_model = train.model_picker.current_ref()
        self._apply_model_settings(train)
        train.model_picker.currentIndexChanged.connect(
            lambda _index: self.settings.set("last.model", train.model_picker.current_ref()))
        train.model_picker.currentIndexChanged.connect(lambda _index: self._switch_model_settings(train))
        train.dataset_picker.changed.connect(lambda path: self.settings.set("last.dataset", path))

    # The Train page's settings, per model: what was last set (or trained) for a model comes
    # back when that model is picked again. Kept under "train.per_model", keyed by model ref.
    def _remember_model_settings(self, train: QWidget) -> None:
        if not self._train_model:
            return
        per_model = self.settings.get("train.per_model", {})
        per_model[self._train_model] = {key: value for key, value in train.form.values().items() if key != "name"}
        self.settings.set("train.per_model", per_model)

    def _apply_model_settings(self, train: QWidget) -> None:
        saved = self.settings.get("train.per_model", {}).get(self._train_model)
        if saved:
            train.form.apply(saved)

    def _switch_model_settings(self, train: QWidget) -> None:
        model = train.model_picker.current_ref()
        if model == self._train_model:
            return
        self._remember_model_settings(train)
        self._train_model = model
        self._apply_model_settings(train)

    def _connect_adapters(self, adapters: QWidget) -> None:
        adapters.adaptersChanged.connect(lambda: self._refresh_if_built("Chat"))
        adapters.adaptersChanged.connect(lambda: self._refresh_if_built("Evaluate"))
        adapters.adaptersChanged.connect(lambda: self._refresh_if_built("Serve"))
        adapters.modelsChanged.connect(self._on_models_changed)
        adapters.chatWithFileRequested.connect(self.chat_with_file)

    def chat_with_file(self, path: str, adapter: str) -> None:
        """A GGUF export's "Chat with this file": the Chat page, with the file beside its adapter."""
        chat = self.chat_page
        self.show_page("Chat")
        chat.chat_with_file(path, adapter)

    def _connect_chat(self, chat: QWidget) -> None:
        chat.sessionChanged.connect(self._refreeze_after_unload)
        chat.trainPreferencesRequested.connect(self.train_on_preferences)

    def train_on_preferences(self, dataset_path: str, from_adapter: Optional[str]) -> None:
        """Compare's "Train on my preferences": the Train page set up for a DPO run on the set,
        from the adapter that answered in the pairs (the SFT -> DPO recipe) when one did."""
        self._on_train_page(lambda train: train.start_preference_setup(dataset_path, from_adapter))

    def _connect_serve(self, serve: QWidget) -> None:
        serve.servingChanged.connect(self._refreeze_after_unload)

    def _restore_last_choices(self, train: QWidget) -> None:
        """The model and dataset of the last session, when they are still there."""
        model = self.settings.get("last.model")
        if model and (train.model_picker.findData(model) >= 0 or Path(model).is_dir()):
            train.model_picker.set_ref(model)
        dataset = self.settings.get("last.dataset")
        if dataset and Path(dataset).exists():
            train.dataset_picker.set_path(dataset)

    def _show_page(self, row: int) -> None:
        title = PAGES[row].title
        page = self.page(title)
        # One current dataset across Data and Train: the Data page opens on the Train page's
        # dataset, max length, loss and validation share, and what was chosen on the Data page
        # is what the next run trains on.
        if title == "Train" and self._data_page_visited:
            self._data_page_visited = False
            page.set_data_settings(self.data_page.training_settings())
        elif title == "Data":
            self._data_page_visited = True
            if self.train_page.dataset_picker.current_path():
                page.picker.set_path(self.train_page.dataset_picker.current_path())
            page.set_run_settings(**self.train_page.next_run_data_settings())
        elif title == "Evaluate" and self.built("Data") is not None:
            self._offer_data_page_dataset(page)
        self.stack.setCurrentIndex(row)
        self.start_action.setEnabled(title == "Train")
        if self._painted:
            page.refresh()

    def _offer_data_page_dataset(self, evaluate: QWidget) -> None:
        """The dataset open on the Data page, read as it reads it, is one the Evaluate page offers."""
        settings = self.data_page.training_settings()
        if settings:
            evaluate.offer_dataset(settings["dataset"], {"format": settings["data_format"],
                                                         "columns": settings["columns"],
                                                         "text_split": settings["text_split"]})

    def _refresh_if_built(self, title: str) -> None:
        page = self.built(title)
        if page is not None:
            page.refresh()

    # -------------------------------------------------------------- first paint
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # Installed on the window until its first paint, then removed: a Python override of
        # paintEvent would run for every repaint, each one a wait for the GIL while workers run.
        if watched is self and event.type() == QEvent.Type.Paint:
            self.removeEventFilter(self)
            self._painted = True
            QTimer.singleShot(0, self._after_first_paint)
        return False

    def _after_first_paint(self) -> None:
        self.page(self.current_title()).refresh()
        self.firstShown.emit()

    # ---------------------------------------------------------- menus and bars
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.recent_menu = file_menu.addMenu("Recent runs")
        self.recent_menu.aboutToShow.connect(self._fill_recent_runs)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        go_menu = self.menuBar().addMenu("&Go")
        for number, spec in enumerate(PAGES, start=1):
            self._action(go_menu, spec.title, lambda row=number - 1: self.sidebar.setCurrentRow(row),
                         f"Ctrl+{number}")

        run_menu = self.menuBar().addMenu("&Run")
        self.start_action = self._action(run_menu, "Start training", self._start_training,
                                         "Ctrl+Return", "Ctrl+Enter")
        self.start_action.setToolTip("Start a run with the Train page's settings (on the Train page)")
        self.stop_action = self._action(run_menu, "Stop training", self._stop_training, "Ctrl+.")
        self.stop_action.setToolTip("Stop the run after the current step and save the adapter trained so far")
        self.stop_action.setEnabled(False)

        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "First-run guide", self.show_guide)
        self._action(help_menu, "Logs", self.show_logs)
        self._action(help_menu, "About LoRA Studio", self.show_about)

    def _action(self, menu: QMenu, text: str, slot, *keys) -> QAction:
        action = QAction(text, self)
        if keys:
            action.setShortcuts([QKeySequence(key) for key in keys])
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.addAction(action)  # shortcuts work whether or not the menu bar is shown
        return action

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.background_label = QLabel()
        self.background_busy = QProgressBar()
        self.background_busy.setRange(0, 0)
        self.background_busy.setMaximumSize(80, 12)
        self.background_busy.setTextVisible(False)
        bar.addPermanentWidget(self.background_label)
        bar.addPermanentWidget(self.background_busy)
        notice = self.settings.take_notice()
        if notice:
            bar.showMessage(notice, NOTICE_MS)
        self.set_background_note("")
        bar.messageChanged.connect(lambda _message: self._say_ready())

    def show_home_problem(self, text: str) -> None:
        """A problem with the studio's home (it is read-only) that stays in the status bar."""
        self.home_problem_label = QLabel(text)
        self.home_problem_label.setWordWrap(True)
        self.statusBar().insertPermanentWidget(0, self.home_problem_label, 1)

    def set_background_note(self, text: str) -> None:
        """A quiet note of work going on in the background (empty: none)."""
        self.background_label.setText(text)
        self.background_label.setVisible(bool(text))
        self.background_busy.setVisible(bool(text))
        self._say_ready()

    def _say_ready(self) -> None:
        """"Ready" when the status bar says nothing else and no work goes on in the background;
        never beside a note of such work (it said "Ready" and "Loading the training libraries…" at once)."""
        bar = self.statusBar()
        busy = bool(self.background_label.text())
        if busy and bar.currentMessage() == READY:
            bar.clearMessage()
        elif not busy and not bar.currentMessage():
            bar.showMessage(READY)

    def _fill_recent_runs(self) -> None:
        self.recent_menu.clear()
        recent = [run for run in self.settings.get("runs.recent", []) if Path(run).is_dir()]
        for run_dir in recent:
            action = self.recent_menu.addAction(Path(run_dir).name)
            action.setToolTip(run_dir)
            action.triggered.connect(lambda _checked=False, run=run_dir: self.open_run(run))
        if not recent:
            self.recent_menu.addAction("No runs opened yet").setEnabled(False)

    def open_run(self, run_dir: str) -> QWidget:
        """Show a run's curves and config (the Home page's run window)."""
        return self.home_page.open_runs([run_dir])

    def _remember_runs(self, run_dirs: list[str]) -> None:
        recent = [run for run in self.settings.get("runs.recent", []) if run not in run_dirs]
        self.settings.set("runs.recent", (list(run_dirs) + recent)[:RECENT_RUNS])

    # ----------------------------------------------------------------- dialogs
    def show_guide(self) -> QWidget:
        from studio.widgets.first_run_guide import FirstRunGuide

        return self._show_dialog("guide", lambda: FirstRunGuide(self.show_page, self.page, self))

    def show_logs(self) -> QWidget:
        from studio.widgets.log_viewer import LogViewer

        return self._show_dialog("logs", lambda: LogViewer(self))

    def show_about(self) -> QWidget:
        from studio.widgets.about_dialog import AboutDialog

        return self._show_dialog("about", lambda: AboutDialog(self))

    def _show_dialog(self, name: str, make) -> QWidget:
        """One window of each kind: shown again (and raised) when asked for again."""
        if name not in self._dialogs:
            self._dialogs[name] = make()
        dialog = self._dialogs[name]
        dialog.show()
        dialog.raise_()
        dialog.activateWindow()
        return dialog

    # ----------------------------------------------------------------- training
    def _start_training(self) -> None:
        if self.current_title() == "Train":
            self.train_page.start_button.click()

    def _stop_training(self) -> None:
        train = self.built("Train")
        if train is not None and train.run_active:
            train.stop_button.click()

    def _on_adapter_saved(self, path: str) -> None:
        self._refresh_if_built("Adapters")
        self._refresh_if_built("Chat")
        self._refresh_if_built("Evaluate")
        self._refresh_if_built("Serve")
        self.statusBar().showMessage(f"New adapter in the library: {path}", NOTICE_MS)

    def _on_models_changed(self) -> None:
        train = self.built("Train")
        if train is not None:
            train.model_picker.refresh()
        self._refresh_if_built("Chat")
        self._refresh_if_built("Evaluate")
        self._refresh_if_built("Serve")

    def _on_run_state(self, state: str) -> None:
        if state == "starting" and self._run_state == "idle":
            # A run is starting: its child loads the model in a few seconds; a chat or served model
            # that would leave it too little memory goes first.
            for title in ("Chat", "Serve"):
                page = self.built(title)
                if page is not None:
                    page.make_room_for_training(self.train_page.build_config())
            self._remember_model_settings(self.train_page)
        elif state == "running" and self._run_state == "starting":
            self._refresh_runs()  # the run has its folder now: Home lists it as running
        self._run_state = state
        self.stop_action.setEnabled(state != "idle")
        if state in _STATE_MESSAGES:
            self.statusBar().showMessage(_STATE_MESSAGES[state])

    def _on_run_finished(self, event: RunFinished) -> None:
        self._refresh_runs()
        name = Path(event.adapter).name if event.adapter else "the run"
        if event.status == RunStatus.FAILED:
            error = event.error or "the training process ended without saying why"
            self.statusBar().showMessage("Training failed: see the Train page")
            show_error(self, f"Training failed: {error.splitlines()[0][:200]}", fix_for_run_error(error), error)
            self.notify("Training failed", error.splitlines()[0][:200])
        elif self.train_page.evaluating:
            # The run scores itself against the base now: the notice waits for that line.
            self._evaluated_name = name
            self.statusBar().showMessage(f"Training {event.status}: evaluating {name} against the base…")
        else:
            self.statusBar().showMessage(f"Training {event.status}")
            loss = f", final loss {event.final_loss:.4f}" if event.final_loss is not None else ""
            self.notify(f"Training {event.status}", f"{name} is in the library{loss}." if event.adapter
                        else f"The run {event.status} at step {event.step}.")

    def _on_run_evaluated(self, line: str) -> None:
        """A completed run's evaluation of itself ended: the finished-run notice, with its score."""
        self.statusBar().showMessage(line)
        self.notify("Training completed", f"{self._evaluated_name} is in the library. {line}")

    def _refresh_runs(self) -> None:
        home = self.built("Home")
        if home is not None:
            home.refresh_runs()

    def notify(self, title: str, message: str) -> bool:
        """Tell the user something happened while they were elsewhere; False when they are here."""
        if self.isActiveWindow() and not self.isMinimized():
            return False
        QApplication.alert(self)  # the taskbar entry flashes or bounces until the window is activated
        if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
            if self._tray is None:
                self._tray = QSystemTrayIcon(self.windowIcon(), self)
                self._tray.setToolTip("LoRA Studio")
                self._tray.messageClicked.connect(self._come_back)
            self._tray.show()
            self._tray.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 10_000)
        log.info("Notified: %s: %s", title, message)
        return True

    def _come_back(self) -> None:
        self.show_page("Train")
        self.showNormal()
        self.raise_()
        self.activateWindow()

    # ------------------------------------------------------------------ memory
    def keep_long_lived_objects_frozen(self) -> None:
        """Freeze what is alive now out of the garbage collector's sight (the app calls this once the
        training libraries are loaded): a full collection scanning torch's and transformers' objects
        takes about 300 ms, a visible stall whenever one falls."""
        gc.freeze()
        self._keep_frozen = True

    def _refreeze_after_unload(self) -> None:
        # Unloading a chat model or stopping a server unfreezes everything so that the model's reference
        # cycles can be collected. Collect them now, at the end of the unload the user asked for, and
        # freeze again (a model still loaded on the other page is frozen with the rest).
        if self._keep_frozen and gc.get_freeze_count() == 0:
            gc.collect()
            gc.freeze()

    # ------------------------------------------------------------------- close
    def closeEvent(self, event: QCloseEvent) -> None:
        train = self.built("Train")
        keep_training = False
        if train is not None and train.run_active:
            answer = self._ask_about_the_run()
            if answer == "cancel":
                event.ignore()
                return
            keep_training = answer == "keep"
        self.settings.set("window.geometry", to_text(self.saveGeometry()))
        if train is not None:
            self._remember_model_settings(train)
        self.settings.flush()
        chat = self.built("Chat")
        if chat is not None:
            chat.close_session()
        serve = self.built("Serve")
        if serve is not None:
            serve.stop()  # thaws the served model, so that closing it collects its reference cycles
        workers.shutdown_all(keep_training=keep_training)
        event.accept()

    def _ask_about_the_run(self) -> str:
        """Quitting during a run: "keep" it training without the window, "stop" it (saving the
        adapter so far) or "cancel" the quit."""
        box = QMessageBox(QMessageBox.Icon.Question, "A run is training",
                          "A training run is still going. Keep it training without the window, or stop it "
                          "and save the adapter trained so far?", parent=self)
        box.setInformativeText("A run kept training shows on the Home page at the next start, where Watch "
                               "follows it again.")
        keep = box.addButton("Keep training", QMessageBox.ButtonRole.AcceptRole)
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.DestructiveRole)
        box.setEscapeButton(box.addButton(QMessageBox.StandardButton.Cancel))  # Esc keeps the window open
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        return "keep" if clicked is keep else "stop" if clicked is stop else "cancel"
