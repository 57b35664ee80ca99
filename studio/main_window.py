"""The main window: a sidebar of pages (Home, Models, Data, Train, Adapters, Chat).

Pages know nothing of each other; this window connects them: a new adapter from
Train refreshes Adapters and Chat, a model added on Models refreshes the pickers
on Train and Chat.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QSize
from PySide6.QtGui import QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QStyle,
    QWidget,
)

from engine.events import RunFinished
from studio import workers
from studio.pages.adapters import AdaptersPage
from studio.pages.chat import ChatPage
from studio.pages.data import DataPage
from studio.pages.home import HomePage
from studio.pages.models import ModelsPage
from studio.pages.train import TrainPage

_STATE_MESSAGES = {
    "starting": "Checking the run against this machine…",
    "running": "Training…",
    "pausing": "Pausing the run after this step…",
    "paused": "Training paused",
    "resuming": "Resuming the run…",
    "stopping": "Stopping the run and saving the adapter…",
}


class MainWindow(QMainWindow):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LoRA Studio")
        self.setMinimumSize(1024, 680)
        self.resize(1280, 800)

        self.home_page = HomePage()
        self.models_page = ModelsPage()
        self.data_page = DataPage()
        self.train_page = TrainPage()
        self.adapters_page = AdaptersPage()
        self.chat_page = ChatPage()
        style = self.style()
        pages = [
            ("Home", QStyle.StandardPixmap.SP_DirHomeIcon, self.home_page),
            ("Models", QStyle.StandardPixmap.SP_DriveHDIcon, self.models_page),
            ("Data", QStyle.StandardPixmap.SP_FileDialogDetailedView, self.data_page),
            ("Train", QStyle.StandardPixmap.SP_MediaPlay, self.train_page),
            ("Adapters", QStyle.StandardPixmap.SP_DirIcon, self.adapters_page),
            ("Chat", QStyle.StandardPixmap.SP_MessageBoxQuestion, self.chat_page),
        ]

        self._data_page_visited = False
        self.sidebar = QListWidget()
        self.sidebar.setAccessibleName("Pages")
        self.sidebar.setIconSize(QSize(22, 22))
        self.sidebar.setFixedWidth(170)
        self.sidebar.setSpacing(2)
        self.stack = QStackedWidget()
        for number, (title, icon, page) in enumerate(pages, start=1):
            item = QListWidgetItem(style.standardIcon(icon), title)
            item.setToolTip(f"{title} (Ctrl+{number})")
            item.setSizeHint(QSize(150, 40))
            self.sidebar.addItem(item)
            self.stack.addWidget(page)
            shortcut = QShortcut(QKeySequence(f"Ctrl+{number}"), self)
            shortcut.activated.connect(lambda row=number - 1: self.sidebar.setCurrentRow(row))
        self.sidebar.currentRowChanged.connect(self._show_page)

        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.sidebar)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.train_page.adapterSaved.connect(self._on_adapter_saved)
        self.train_page.modelSaved.connect(lambda _path: self.models_page.refresh())
        self.train_page.modelSaved.connect(lambda _path: self._on_models_changed())
        self._run_state = "idle"
        self.train_page.runStateChanged.connect(self._on_run_state)
        self.train_page.progressChanged.connect(self.statusBar().showMessage)
        self.train_page.runFinished.connect(self._on_run_finished)
        self.models_page.modelsChanged.connect(self._on_models_changed)
        self.adapters_page.adaptersChanged.connect(self.chat_page.refresh)
        self.adapters_page.modelsChanged.connect(self._on_models_changed)

        self.statusBar().showMessage("Ready")
        self.sidebar.setCurrentRow(0)

    def show_page(self, title: str) -> None:
        """Switch to the page with this sidebar title."""
        for row in range(self.sidebar.count()):
            if self.sidebar.item(row).text() == title:
                self.sidebar.setCurrentRow(row)
                return
        raise KeyError(title)

    def _show_page(self, row: int) -> None:
        page = self.stack.widget(row)
        # One current dataset across Data and Train: the Data page opens on the Train page's
        # dataset, and what was chosen on the Data page is what the next run trains on.
        if page is self.train_page and self._data_page_visited:
            self._data_page_visited = False
            self.train_page.set_data_settings(self.data_page.training_settings())
        elif page is self.data_page:
            self._data_page_visited = True
            if self.train_page.dataset_picker.current_path():
                self.data_page.picker.set_path(self.train_page.dataset_picker.current_path())
        self.stack.setCurrentIndex(row)
        page.refresh()

    def _on_adapter_saved(self, path: str) -> None:
        self.adapters_page.refresh()
        self.chat_page.refresh()
        self.statusBar().showMessage(f"New adapter in the library: {path}")

    def _on_models_changed(self) -> None:
        self.train_page.model_picker.refresh()
        self.chat_page.refresh()

    def _on_run_state(self, state: str) -> None:
        if state == "starting" and self._run_state == "idle":
            # A run is starting: its child loads the model in a few seconds; a chat model that
            # would leave it too little memory goes first.
            self.chat_page.make_room_for_training(self.train_page.build_config())
        self._run_state = state
        if state in _STATE_MESSAGES:
            self.statusBar().showMessage(_STATE_MESSAGES[state])

    def _on_run_finished(self, event: RunFinished) -> None:
        self.home_page.refresh_runs()
        if event.status == "failed":
            self.statusBar().showMessage("Training failed: see the Train page")
        else:
            self.statusBar().showMessage(f"Training {event.status}")

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.train_page.run_active:
            answer = QMessageBox.question(
                self,
                "Stop training?",
                "A training run is still going. Stop it, save the adapter trained so far, and quit?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.chat_page.close_session()
        workers.shutdown_all()
        event.accept()
