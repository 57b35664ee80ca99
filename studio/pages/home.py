"""The Home page: what hardware the studio found, how to start, and the history of runs.

Finding devices imports torch (seconds on a cold start), so it runs in a
``BackgroundTask``; the page shows "Looking for devices…" until it answers.

The runs history lists every run folder, running or not, with its status, time spent,
last loss and a mini loss curve. Reading runs is ``engine.jobs.history.RunHistory`` on a worker
thread: the first look at hundreds of runs takes a moment, later ones re-read only the
runs that changed. While the page is shown it looks again every few seconds, so a run
going on elsewhere (the command line) moves along, and a folder deleted behind the
studio's back simply drops out. Opening a run shows its full curves and configuration;
selecting several and pressing Compare overlays their loss curves.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import (
    QAbstractTableModel,
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QDesktopServices, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.core.choices import ENDED_WELL, RunStatus
from engine.core.units import gib
from engine.jobs.history import RunHistory, format_duration
from studio import theme
from studio.widgets.column_tips import set_column_tips
from studio.widgets.error_dialog import show_error
from studio.widgets.sparkline import SPARK_ROLE, SparklineDelegate
from studio.workers import BackgroundTask, TaskReporter

RUN_COLUMNS = ("Run", "Status", "Started", "Duration", "Steps", "Last loss", "Loss")
# What each column of the two tables means to the user, and what is good: the headers' tooltips.
RUN_COLUMN_HELP = {
    "Run": "The run's folder name: the date, the dataset and the method. Double-click to see its curves.",
    "Status": "Running, completed, stopped (by you, adapter saved), failed, or interrupted (cut off; Resume goes on).",
    "Started": "When the run started; the list puts the newest first.",
    "Duration": "Time spent training, added up over its sessions when it was resumed.",
    "Steps": "Training steps done of the run's total; each step learns from one batch.",
    "Last loss": "The training loss at the run's last step: its final loss once it has ended, the loss now "
                 "(marked so) while it trains. Lower is better; compare it between runs on the same dataset only.",
    "Loss": "The training loss over the run: it should fall and level off.",
}
DEVICE_COLUMN_HELP = {
    "Device": "A GPU or the CPU the studio can train on: runs use the first GPU, or the CPU when there is none.",
    "Kind": "cuda: an NVIDIA (or AMD) GPU; mps: an Apple GPU; cpu: the processor. A GPU trains many times faster.",
    "Total memory": "All of the device's memory (for the CPU, the computer's RAM).",
    "Free memory": "What is free now for a run (Check again reads it anew); the Train page checks its estimate "
                   "against it.",
    "bf16": "Whether it computes in bf16, a 16-bit number format that halves memory and keeps training steady. "
            "Yes is good: Precision Auto then uses it.",
    "Compute": "For a GPU, its compute capability (8.0 and up has bf16 and fast attention); for the CPU, its cores "
               "and threads.",
    "Driver": "The NVIDIA driver's version (empty for the CPU). A driver older than PyTorch needs stops it from "
              "using the GPU.",
    "Use": "How busy the device is, in percent: high before a run starts means another program is using it.",
    "Temperature": "The device's temperature; a GPU above about 85 °C slows itself down.",
}
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
# How often the shown page looks at the runs again; a slow read waits proportionally longer.
RUNS_POLL_MS = 5000
RESUME_TIP = "Continue the run from its last checkpoint on the Train page"
# How often the shown page reads the devices' use and free memory again while a run trains.
HARDWARE_POLL_MS = 5000

GET_STARTED = (
    "<h2>Welcome to LoRA Studio</h2>"
    "<p>Teach a language model a new style in a few minutes, on the hardware you have:</p>"
    "<ol>"
    "<li>Open the <b>Train</b> page (Ctrl+4).</li>"
    "<li>Keep the <b>starter</b> model and the <b>pirate</b> sample dataset.</li>"
    "<li>Press <b>Start</b> (Ctrl+Enter) and watch the loss fall.</li>"
    "<li>Open <b>Chat</b> (Ctrl+6), pick the new adapter and talk like a pirate.</li>"
    "</ol>"
    "<p>Help ▸ First-run guide walks through it page by page.</p>"
)


def _gib(value: Optional[int]) -> str:
    return gib(value) if value else "unknown"


def _when(started: Optional[float]) -> str:
    return datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else ""


def _device_row(device: Any) -> list[str]:
    """One row of the devices table: what the device is, its memory and its live readings."""
    cores = device.cores or device.threads
    if device.kind == "cpu" and cores:
        compute = f"{cores} cores, {device.threads or cores} threads"
    else:
        compute = device.compute_capability or ""
    use = f"{device.utilization_percent:.0f}%" if device.utilization_percent is not None else ""
    temperature = f"{device.temperature_c:.0f} °C" if device.temperature_c is not None else ""
    return [device.name, device.kind, _gib(device.total_bytes), _gib(device.free_bytes),
            "yes" if device.bf16 else "no", compute, device.driver or "", use, temperature]


def recovery_offer(records: list[Any]) -> Optional[tuple[str, Any]]:
    """The newest run a previous session left behind, and what to offer for it.

    ("watch", record) for a run still training with no window following it (the studio
    closed or crashed while its training process went on); ("resume", record) for one cut
    off without finishing (the training process or the computer went down). None otherwise.
    Called on the first look at the runs after start-up, when no run can be this window's.
    """
    newest_first = sorted(records, key=lambda r: r.summary.started or 0, reverse=True)
    for record in newest_first:
        if record.summary.status == RunStatus.RUNNING:
            return "watch", record
    # Only the newest run: an old crash the user has long moved on from is no news.
    if newest_first and newest_first[0].summary.resumable and _cut_off(newest_first[0].summary):
        return "resume", newest_first[0]
    return None


def _cut_off(run: Any) -> bool:
    """Ended by something outside the run (a kill, a crash, a power cut), not by its own error."""
    return run.status == RunStatus.INTERRUPTED or (run.status == RunStatus.FAILED and "ended unexpectedly" in (run.error or ""))


def _find_hardware(reporter: TaskReporter) -> tuple[list[Any], dict[str, str]]:
    from engine.hardware import detect_devices, versions

    return detect_devices(), versions()


def _read_devices(reporter: TaskReporter) -> tuple[list[Any], None]:
    """The devices again, for their live readings: the versions do not change meanwhile."""
    from engine.hardware import detect_devices

    return detect_devices(), None


def _table(headers: list[str]) -> QTableWidget:
    """A read-only table whose columns fit what they hold, the last one taking the spare width.
    In a narrow window it scrolls sideways rather than squeeze the device's name to "A… E…"
    (a stretched first column is the one Qt shrinks when the others need the room)."""
    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setWordWrap(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            table.setItem(r, c, item)


class RunsModel(QAbstractTableModel):
    """The runs history as a table model: one row per ``engine.jobs.history.RunRecord``."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._records: list[Any] = []

    def set_records(self, records: list[Any]) -> None:
        self.beginResetModel()
        self._records = list(records)
        self.endResetModel()

    def record(self, row: int) -> Any:
        return self._records[row]

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._records)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(RUN_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return RUN_COLUMNS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return RUN_COLUMN_HELP[RUN_COLUMNS[section]]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        record = self._records[index.row()]
        run, column = record.summary, RUN_COLUMNS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(record, column)
        if role == SORT_ROLE:
            return self._sort_key(record, column)
        if role == SPARK_ROLE and column == "Loss":
            return record.spark
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{run.error}\n{run.run_dir}" if run.error else run.run_dir
        if role == Qt.ItemDataRole.ForegroundRole and column == "Status" and run.status == RunStatus.FAILED:
            return QColor(theme.colours().error)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in ("Duration", "Steps", "Last loss"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(record: Any, column: str) -> str:
        run = record.summary
        if column == "Run":
            return run.name
        if column == "Status":
            return run.status
        if column == "Started":
            return _when(run.started)
        if column == "Duration":
            return format_duration(record.duration_s)
        if column == "Steps":
            return f"{run.steps} / {run.total_steps}" if run.total_steps else str(run.steps)
        if column == "Last loss":
            if run.final_loss is None:
                return ""
            return f"{run.final_loss:.4f}" if run.loss_is_final else f"{run.final_loss:.4f} (now)"
        return ""

    @staticmethod
    def _sort_key(record: Any, column: str) -> Any:
        run = record.summary
        numbers = {"Started": run.started, "Duration": record.duration_s, "Steps": run.steps,
                   "Last loss": run.final_loss, "Loss": run.final_loss}
        if column in numbers:
            value = numbers[column]
            return float(value) if value is not None else -1.0
        return run.name if column == "Run" else run.status


class HomePage(QWidget):
    hardwareLoaded = Signal()  # the device table shows the latest detection (or why it failed)
    runsLoaded = Signal()  # the runs list shows the latest look at the runs folder
    runsOpened = Signal(list)  # run folders the user opened (one) or compared (several)
    # What the Train page should do with a run from the list (the window connects them).
    resumeRequested = Signal(str)
    watchRequested = Signal(str)
    trainMoreRequested = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._task: Optional[BackgroundTask] = None
        self._hardware_known = False
        self._detect_on_request = False
        self._runs_training = False  # the runs list shows a run that is training
        self._runs_task: Optional[BackgroundTask] = None
        self._runs_again = False
        self._runs_stale = False
        self._runs_started = 0.0
        self._history = RunHistory()
        self._recovery_checked = False

        welcome = QLabel(GET_STARTED)
        welcome.setWordWrap(True)
        welcome.setTextFormat(Qt.TextFormat.RichText)

        self.devices_table = _table(["Device", "Kind", "Total memory", "Free memory", "bf16", "Compute",
                                     "Driver", "Use", "Temperature"])
        set_column_tips(self.devices_table, DEVICE_COLUMN_HELP)
        self.devices_table.setAccessibleName("Devices found")
        self.devices_table.setMaximumHeight(140)
        self.hardware_status = QLabel()
        self.hardware_status.setWordWrap(True)
        self.versions_label = QLabel()
        self.versions_label.setWordWrap(True)
        self.versions_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detect_button = QPushButton("Check again")
        self.detect_button.setToolTip("Look for devices again and re-read their free memory")
        self.detect_button.clicked.connect(self._detect_on_click)
        hardware_box = QGroupBox("Hardware")
        hardware_layout = QVBoxLayout(hardware_box)
        status_row = QHBoxLayout()
        status_row.addWidget(self.hardware_status, 1)
        status_row.addWidget(self.detect_button)
        hardware_layout.addLayout(status_row)
        hardware_layout.addWidget(self.devices_table)
        hardware_layout.addWidget(self.versions_label)

        top = QWidget()
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(welcome, 1, Qt.AlignmentFlag.AlignTop)
        top_layout.addWidget(hardware_box, 2)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self._build_runs())
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(self._build_recovery())
        layout.addWidget(self.splitter)

        self._poll = QTimer(self)
        self._poll.setSingleShot(True)
        self._poll.setInterval(RUNS_POLL_MS)
        self._poll.timeout.connect(self.refresh_runs)
        # The devices' use and free memory move while a run trains: read again while it does.
        self._readings = QTimer(self)
        self._readings.setSingleShot(True)
        self._readings.timeout.connect(self._read_devices_again)

    def _build_recovery(self) -> QWidget:
        """The note that offers to watch or resume what the last session left running."""
        self.recovery_box = QGroupBox("Left from last time")
        self.recovery_label = QLabel()
        self.recovery_label.setWordWrap(True)
        self.recovery_button = QPushButton()
        self.recovery_button.clicked.connect(self._act_on_recovery)
        dismiss = QPushButton("Dismiss")
        dismiss.setToolTip("Hide this note; the run stays in the list below")
        dismiss.clicked.connect(self.recovery_box.hide)
        row = QHBoxLayout(self.recovery_box)
        row.addWidget(self.recovery_label, 1)
        row.addWidget(self.recovery_button)
        row.addWidget(dismiss)
        self.recovery_box.hide()
        self._recovery: Optional[tuple[str, Any]] = None
        return self.recovery_box

    def _build_runs(self) -> QWidget:
        self.runs_model = RunsModel(self)
        proxy = QSortFilterProxyModel(self)
        proxy.setSourceModel(self.runs_model)
        proxy.setSortRole(SORT_ROLE)
        self.runs_view = QTableView()
        self.runs_view.setModel(proxy)
        self.runs_view.setAccessibleName("Runs")
        self.runs_view.setSortingEnabled(True)
        self.runs_view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
        self.runs_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.runs_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.runs_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.runs_view.verticalHeader().setVisible(False)
        self.runs_view.setItemDelegateForColumn(RUN_COLUMNS.index("Loss"), SparklineDelegate(self.runs_view))
        header = self.runs_view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        # Widths that leave the loss curve room in the smallest window (1024 px: the table is ~810 wide).
        for column, width in zip(RUN_COLUMNS, (240, 90, 120, 90, 80, 90)):
            header.resizeSection(RUN_COLUMNS.index(column), width)
        self.runs_view.doubleClicked.connect(lambda _index: self.open_selected())
        self.runs_view.selectionModel().selectionChanged.connect(lambda *_: self._update_buttons())

        self.runs_summary = QLabel()
        self.runs_summary.setWordWrap(True)  # beside six buttons: wraps instead of widening the page
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show the run's loss, eval loss and learning rate curves and its settings "
                                    "(or double-click it)")
        self.open_button.clicked.connect(self.open_selected)
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Overlay the loss curves of the selected runs (select several with "
                                       "Ctrl or Shift)")
        self.compare_button.clicked.connect(self.open_selected)
        self.folder_button = QPushButton("Open folder")
        self.folder_button.setToolTip("Show the run folder (config.json, events.jsonl, train.log, checkpoints)")
        self.folder_button.clicked.connect(self._open_folder)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(RESUME_TIP)
        self.resume_button.clicked.connect(lambda: self._request(self.resumeRequested))
        self.watch_button = QPushButton("Watch")
        self.watch_button.setToolTip("Follow the run, still training, on the Train page (and stop it there)")
        self.watch_button.clicked.connect(lambda: self._request(self.watchRequested))
        self.more_button = QPushButton("Train more…")
        self.more_button.setToolTip("Continue the finished run for more steps or epochs into a new adapter version")
        self.more_button.clicked.connect(lambda: self._request(self.trainMoreRequested))
        row = QHBoxLayout()
        row.addWidget(self.runs_summary, 1)
        for button in (self.open_button, self.compare_button, self.folder_button, self.resume_button,
                       self.watch_button, self.more_button):
            row.addWidget(button)
        box = QGroupBox("Runs")
        box_layout = QVBoxLayout(box)
        box_layout.addLayout(row)
        box_layout.addWidget(self.runs_view, 1)
        self._update_buttons()
        return box

    # ------------------------------------------------------------ page api
    def refresh(self) -> None:
        """Called when the page is shown: re-read the runs; find the hardware the first time."""
        self.refresh_runs()
        if not self._hardware_known:
            self.detect_hardware()

    def refresh_runs(self) -> None:
        """Look at the runs folder again; ``runsLoaded`` once the list shows what is there.

        A look that needs no run read is done at once. Runs that are new, changed or still
        going are read on a worker thread. A hidden page only notes that it is out of date.
        """
        self._poll.stop()
        if not self.isVisible():
            self._runs_stale = True
            return
        if self._runs_task is not None:
            self._runs_again = True
            return
        self._runs_stale = False
        records = self._history.known()
        if records is not None:
            self._show_runs(records)
            self._runs_done()
            return
        history = self._history
        self._runs_started = time.perf_counter()
        self._runs_task = BackgroundTask(
            lambda reporter: history.refresh(lambda done, total: reporter.progress(done, total)), parent=self,
            needs_libraries=False)
        self._runs_task.progress.connect(self._runs_progress)
        self._runs_task.succeeded.connect(self._show_runs)
        self._runs_task.failed.connect(self._runs_failed)
        self._runs_task.finished.connect(self._runs_done)
        self._runs_task.start()

    def selected_runs(self) -> list[str]:
        """The selected runs' folders, top to bottom."""
        return [record.run_dir for record in self._selected_records()]

    def _selected_records(self) -> list[Any]:
        proxy = self.runs_view.model()
        rows = sorted(index.row() for index in self.runs_view.selectionModel().selectedRows())
        return [self.runs_model.record(proxy.mapToSource(proxy.index(row, 0)).row()) for row in rows]

    def select_runs(self, run_dirs: list[str]) -> None:
        proxy = self.runs_view.model()
        wanted = set(run_dirs)
        selection = QItemSelection()
        for row in range(proxy.rowCount()):
            if self.runs_model.record(proxy.mapToSource(proxy.index(row, 0)).row()).run_dir in wanted:
                selection.select(proxy.index(row, 0), proxy.index(row, proxy.columnCount() - 1))
        self.runs_view.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def open_selected(self) -> Optional[QWidget]:
        selected = self.selected_runs()
        return self.open_runs(selected) if selected else None

    def open_runs(self, run_dirs: list[str]) -> QWidget:
        """Show one run's curves and config, or several runs' loss curves overlaid."""
        from studio.widgets.run_viewer import RunViewer

        viewer = RunViewer(run_dirs, self)
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)  # one window per opening, gone when closed
        viewer.runsGone.connect(lambda _gone: self.refresh_runs())
        viewer.show()
        self.runsOpened.emit(list(run_dirs))
        return viewer

    # --------------------------------------------------------------- runs
    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._runs_stale:
            QTimer.singleShot(0, self._refresh_if_stale)
        elif self._runs_task is None:
            self._poll.start()
        self._schedule_readings()

    def _refresh_if_stale(self) -> None:
        if self._runs_stale:
            self.refresh_runs()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._poll.stop()
        self._readings.stop()

    def _runs_progress(self, done: int, total: int, _message: str) -> None:
        if not self.runs_model.rowCount():
            self.runs_summary.setText(f"Reading the runs… {done} of {total}")

    def _show_runs(self, records: list[Any]) -> None:
        selected = self.selected_runs()
        self.runs_model.set_records(records)
        self.select_runs(selected)
        running = sum(record.summary.status == RunStatus.RUNNING for record in records)
        self._runs_training = bool(running)
        self._schedule_readings()
        if not records:
            self.runs_summary.setText("No runs yet: your training runs will be listed here.")
        else:
            self.runs_summary.setText(f"{len(records)} run{'s' if len(records) != 1 else ''}"
                                      + (f" · {running} running" if running else ""))
        self._update_buttons()
        if not self._recovery_checked:
            self._recovery_checked = True
            self._offer_recovery(recovery_offer(records))

    def _offer_recovery(self, offer: Optional[tuple[str, Any]]) -> None:
        self._recovery = offer
        if offer is None:
            return
        action, record = offer
        run = record.summary
        if action == "watch":
            self.recovery_label.setText(f"<b>{run.name}</b> is still training (step {run.steps}), but no window "
                                        "follows it: the studio closed while it ran.")
            self.recovery_button.setText("Watch")
        else:
            total = f" of {run.total_steps}" if run.total_steps else ""
            self.recovery_label.setText(f"<b>{run.name}</b> ended before it finished, at step {run.steps}{total} "
                                        "(its training process or the computer went down). It can go on from "
                                        f"its checkpoint at step {run.checkpoint_step}.")
            self.recovery_button.setText("Resume")
        self.recovery_box.show()

    def _act_on_recovery(self) -> None:
        if self._recovery is None:
            return
        action, record = self._recovery
        self.recovery_box.hide()
        (self.watchRequested if action == "watch" else self.resumeRequested).emit(record.run_dir)

    def _request(self, signal: Any) -> None:
        selected = self.selected_runs()
        if len(selected) == 1:
            signal.emit(selected[0])

    def _runs_failed(self, message: str) -> None:
        # Said in place: the page looks again every few seconds, and a dialog each time would be a storm.
        self.runs_summary.setText(f"Could not read the runs: {message}")

    def _runs_done(self) -> None:
        if self._runs_task is not None:
            self._runs_task.deleteLater()
            self._runs_task = None
            took_ms = (time.perf_counter() - self._runs_started) * 1000
            self._poll.setInterval(max(RUNS_POLL_MS, int(10 * took_ms)))
        if self._runs_again:
            self._runs_again = False
            self.refresh_runs()
        elif self.isVisible():
            self._poll.start()
        self.runsLoaded.emit()

    def _update_buttons(self) -> None:
        selected = self._selected_records()
        count = len(selected)
        self.open_button.setEnabled(count == 1)
        self.compare_button.setEnabled(count >= 2)
        self.folder_button.setEnabled(count == 1)
        run = selected[0].summary if count == 1 else None
        status = run.status if run is not None else None
        self.resume_button.setEnabled(run is not None and status != RunStatus.RUNNING and run.resumable)
        # A run that trained all its steps says why Resume is off: Train more continues it.
        self.resume_button.setToolTip((run and run.nothing_to_resume) or RESUME_TIP)
        self.watch_button.setEnabled(status == RunStatus.RUNNING)
        self.more_button.setEnabled(status in ENDED_WELL and not (run and run.resumable))

    def _open_folder(self) -> None:
        selected = self.selected_runs()
        if selected and Path(selected[0]).is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(selected[0]))
        elif selected:
            self.refresh_runs()  # it was deleted meanwhile: the list catches up

    # ----------------------------------------------------------- hardware
    def detect_hardware(self) -> None:
        if self._task is not None:
            return
        self.hardware_status.setText("Looking for devices…")
        self.detect_button.setEnabled(False)
        self._start_hardware_task(_find_hardware)

    def _read_devices_again(self) -> None:
        """The devices' live readings again, quietly: the table changes, nothing else does."""
        if self._task is None and self.isVisible():
            self._start_hardware_task(_read_devices)

    def _schedule_readings(self) -> None:
        """Read the devices again after a while, if the page is shown and a run trains."""
        if self._runs_training and self._hardware_known and self.isVisible():
            if not self._readings.isActive():
                self._readings.start(HARDWARE_POLL_MS)
        else:
            self._readings.stop()

    def _start_hardware_task(self, find: Any) -> None:
        # torch, not transformers: it need not wait while the app imports the training libraries.
        self._task = BackgroundTask(find, parent=self, needs_libraries=False)
        self._task.succeeded.connect(self._show_hardware)
        self._task.failed.connect(self._show_hardware_error)
        self._task.finished.connect(self._task_done)
        self._task.start()

    def _detect_on_click(self) -> None:
        self._detect_on_request = True
        self.detect_hardware()

    def _show_hardware(self, result: tuple[list[Any], Optional[dict[str, str]]]) -> None:
        devices, versions = result
        _fill(
            self.devices_table,
            [_device_row(device) for device in devices],
        )
        accelerators = [d for d in devices if d.kind != "cpu"]
        if accelerators:
            found = f"Training will use {accelerators[0].name}."
        else:
            found = "No GPU found: training runs on the CPU. The starter model and the samples still train in minutes."
        # Use and free memory are a reading at one moment: say which.
        self.hardware_status.setText(f"{found} Use and free memory measured at {datetime.now():%H:%M:%S}.")
        if versions is not None:
            self.versions_label.setText(
                "Versions: " + " · ".join(f"{name} {version}" for name, version in versions.items())
            )
        self._hardware_known = True

    def _show_hardware_error(self, message: str) -> None:
        self.hardware_status.setText(f"Could not look for devices: {message}")
        if self._detect_on_request:  # asked for: answer with the whole story
            show_error(self, "Could not look for devices.",
                       "Check that torch is installed in the studio's environment (make run installs it), "
                       "then press Check again.", message)

    def _task_done(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.deleteLater()
        self._detect_on_request = False
        self.detect_button.setEnabled(True)
        self._schedule_readings()
        self.hardwareLoaded.emit()
