"""Starts the studio window.

Importing this module loads Qt and pyqtgraph but never torch, transformers or
peft: the window opens in a second or two, and torch is loaded in the
background the first time something needs it.
"""

from __future__ import annotations

import os
import sys

import pyqtgraph as pg
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from engine.paths import RESOURCES
from studio import workers

APP_ICON = RESOURCES / "icons" / "lora-studio.svg"


def _set_torch_threads(reporter: workers.TaskReporter) -> int:
    """Leave one core to the window: chat and other in-process torch work would otherwise
    take every core and make the UI stutter. Training runs in its own process and keeps all."""
    import torch

    threads = max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return threads


def main() -> int:
    app = QApplication.instance() or QApplication(sys.argv)
    app.setApplicationName("LoRA Studio")
    app.setApplicationDisplayName("LoRA Studio")
    # Lets Wayland/X11 shells match the window to packaging/lora-studio.desktop and its icon.
    app.setDesktopFileName("lora-studio")
    app.setWindowIcon(QIcon(str(APP_ICON)))
    pg.setConfigOptions(antialias=True)
    app.aboutToQuit.connect(workers.shutdown_all)

    from studio.main_window import MainWindow

    window = MainWindow()
    window.show()
    workers.BackgroundTask(_set_torch_threads, parent=app).start()
    return app.exec()
