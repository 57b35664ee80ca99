"""Guards against a Qt binding that corrupts Python's reference counts.

PySide6 6.12.0 dropped a reference to None on every call of a method returning
nothing and to True on every signal emit; after enough calls Python aborts with
"none_dealloc". The studio makes millions of such calls in a long session.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel


class _Emitter(QObject):
    ping = Signal()


def test_qt_calls_and_signals_keep_python_reference_counts_intact(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    emitter = _Emitter()
    none_before, true_before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(2000):
        label.setText("x")
        emitter.ping.emit()
    # Other code may take or drop a few references meanwhile; a leak per call shows as thousands.
    assert sys.getrefcount(None) - none_before > -100
    assert sys.getrefcount(True) - true_before > -100
