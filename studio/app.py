"""Starts the studio window.

Importing this module loads Qt but neither pyqtgraph nor torch, transformers or peft:
the window opens on Home in about a second. Once it has been painted, a background task
loads the plotting and training libraries (several seconds on a cold start) while the
status bar says so quietly; the pages that need them open without a pause afterwards.
The first-run guide appears then too, unless it was dismissed for good.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from engine.desktop import APP_ID
from studio import theme, workers
from studio.garbage import collect_on_ui_thread
from studio.icons import APP_ICON
from studio.logs import log_exception, start_logging
from studio.main_window import MainWindow
from studio.settings import app_settings
from studio.widgets.error_dialog import show_error
from studio.widgets.first_run_guide import DISMISSED_KEY
from studio.workers import describe_error

LOADING_NOTE = "Loading the training libraries…"
# How long a thread may hold the GIL while another waits for it. Every call from Qt into Python
# (a slot, a paint of a plot) first takes the GIL; with Python's 5 ms, a worker reading a dataset
# made the window wait that long again and again, stalls of 150-300 ms. 1 ms keeps them under 50.
GIL_SWITCH_INTERVAL_S = 0.001

log = logging.getLogger(__name__)


@dataclass
class Libraries:
    """What loading the libraries came to: how long it took, or the traceback of what failed."""

    seconds: float
    threads: int = 0
    failure: Optional[str] = None
    details: Optional[str] = None


def load_libraries(_reporter: workers.TaskReporter) -> Libraries:
    """Import pyqtgraph, torch, transformers and peft (on a worker thread).

    The objects the imports make by the hundred thousand are collected on the UI thread, a
    tenth of a second's worth at a time (``studio.garbage``), and frozen out of the collector's
    sight once loaded (``finish_loading``). Other tasks that need these libraries wait for this
    import (``workers.begin_library_import``). A failure is handed back as data, traceback
    included, for the dialog.
    """
    started = time.perf_counter()
    try:
        import pyqtgraph  # noqa: F401  (the pages with plots then open without a pause)
        import torch

        # Leave one core to the window: chat and other in-process torch work would otherwise
        # take every core and make the UI stutter. Training runs in its own process and keeps all.
        threads = max(1, (os.cpu_count() or 2) - 1)
        torch.set_num_threads(threads)
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except Exception as exc:  # reported in the window: the studio still opens pages and files
        return Libraries(time.perf_counter() - started, failure=describe_error(exc), details=traceback.format_exc())
    finally:
        workers.end_library_import()  # the tasks that waited for this import go ahead
    return Libraries(time.perf_counter() - started, threads)


def finish_loading(window: MainWindow, libraries: Libraries) -> None:
    """Back on the UI thread: freeze what the imports made, say what happened."""
    window.set_background_note("")
    if libraries.failure is None:
        window.keep_long_lived_objects_frozen()
        log.info("Training libraries loaded in %.1f s; torch uses %d threads", libraries.seconds, libraries.threads)
    if libraries.failure is not None:
        show_error(window, f"The training libraries could not be loaded: {libraries.failure}",
                   "Training and chat need torch, transformers and peft. Run `make run` in the studio's folder "
                   "(it installs them), then start the studio again.", libraries.details)
    window.librariesLoaded.emit()


def load_libraries_in_background(window: MainWindow) -> workers.BackgroundTask:
    window.set_background_note(LOADING_NOTE)
    workers.begin_library_import()
    task = workers.BackgroundTask(load_libraries, parent=window, needs_libraries=False)
    task.succeeded.connect(lambda libraries: finish_loading(window, libraries))
    task.failed.connect(lambda message: finish_loading(window, Libraries(0.0, failure=message)))
    task.finished.connect(task.deleteLater)
    return task.start()


def error_hook(window: MainWindow) -> Callable[..., None]:
    """For ``sys.excepthook``: an exception nobody caught on the UI thread (a bug) is logged and
    shown once in the error dialog, and the window goes on. While one such dialog is open,
    further ones are only logged, so a bug that repeats cannot bury the window in dialogs."""
    open_box: list[QMessageBox] = []

    def hook(exc_type, exc, tb) -> None:
        details = log_exception(exc_type, exc, tb)
        if open_box and open_box[0].isVisible():
            return
        box = show_error(window, f"Something went wrong: {describe_error(exc)}",
                         "This is a bug in LoRA Studio; the window goes on working. The details (also in "
                         "Help ▸ Logs) help to report it.", details)
        open_box[:] = [box]
        box.finished.connect(lambda _result: open_box.clear())

    return hook


def check_home(window: MainWindow) -> None:
    """At start: sweep what killed operations left staged in the home (in the background: a
    killed merge can leave gigabytes), and say once, for good, in the status bar when the home
    is read-only; the window still opens and lists what is there."""
    from engine.errors import StudioError
    from engine.paths import sweep_home, writable_home

    try:
        writable_home()
    except StudioError as exc:
        log.warning("%s", exc)
        window.show_home_problem(str(exc))
        return
    task = workers.BackgroundTask(lambda _reporter: sweep_home(), parent=window, needs_libraries=False)
    task.finished.connect(task.deleteLater)
    task.start()


def identified(argv: list[str]) -> list[str]:
    """``argv`` for QApplication with the X11 WM_CLASS instance name set to the desktop entry's
    StartupWMClass: Qt otherwise takes the program's file name, which is launch.py, __main__.py or
    python as often as lora-studio. (Qt's xcb platform reads ``-name``; others ignore it.)"""
    return [*(argv[:1] or [APP_ID]), "-name", APP_ID, *argv[1:]]


def start(argv: Optional[list[str]] = None) -> tuple[QApplication, MainWindow]:
    """Create the application and the window, show it, and arrange the start-up work."""
    app = QApplication.instance() or QApplication(identified(argv if argv is not None else sys.argv))
    # The name launchers and taskbars know the studio by, the desktop entry's (engine.desktop): as
    # the application name it is the X11 WM_CLASS's class, as the desktop file name the Wayland app
    # id (and KDE's hint); the display name is what window titles and dialogs show.
    app.setApplicationName(APP_ID)
    app.setApplicationDisplayName("LoRA Studio")
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(QIcon(str(APP_ICON)))
    log.info("Log file: %s", start_logging())
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    theme.follow_system(app)
    collect_on_ui_thread(app)
    app.aboutToQuit.connect(workers.shutdown_all)
    app.aboutToQuit.connect(lambda: app_settings().flush())

    window = MainWindow()
    sys.excepthook = error_hook(window)
    check_home(window)
    window.firstShown.connect(lambda: load_libraries_in_background(window))
    if not app_settings().get(DISMISSED_KEY, False):
        window.firstShown.connect(window.show_guide)
    window.show()
    return app, window


def main() -> int:
    app, _window = start()
    return app.exec()
