"""The Evaluate page's progress: answers done of the whole evaluation's, with the time left.

The runner reports ``(done, total, message)`` after each batch of answers (``engine.eval.runner``).
The time left is measured from the first report, not from the start: before it the model loads,
which takes as long for one answer as for a thousand and would make the first estimates far off.
"""

from __future__ import annotations

import time
from typing import Optional

from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QWidget

PROGRESS_HELP = ("Answers written of the evaluation's total (every candidate answers every example). The time "
                 "left is the time so far per answer, times the answers to go.")


def time_left(elapsed_s: float, done: int, total: int) -> Optional[float]:
    """The seconds left at the pace so far; None before anything is done."""
    if done <= 0:
        return None
    return elapsed_s / done * max(total - done, 0)


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class EvalProgress(QWidget):
    """A progress bar with the answers done and the time left, and what is being done now."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar(self)
        self.bar.setAccessibleName("Evaluation progress")
        self.bar.setToolTip(PROGRESS_HELP)
        self.bar.setTextVisible(True)
        self.step_label = QLabel(self)
        self.step_label.setAccessibleName("Evaluation step")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.step_label)
        self._first_report: Optional[tuple[float, int]] = None
        self.idle("no evaluation yet")

    def idle(self, text: str) -> None:
        """No evaluation running: ``text`` says how the last one ended."""
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat(text)
        self.step_label.clear()

    def begin(self) -> None:
        """An evaluation starts: the model loads before the first answer, for an unknown time."""
        self._first_report = None
        self.bar.setRange(0, 0)
        self.step_label.setText("Loading the model…")

    def report(self, done: int, total: int, message: str) -> None:
        now = time.perf_counter()
        if self._first_report is None:
            self._first_report = (now, done)
        started, done_then = self._first_report
        left = time_left(now - started, done - done_then, total - done_then)
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(done)
        text = f"{done} / {total} answers"
        self.bar.setFormat(text + (f" · ETA {clock(left)}" if left is not None else " · ETA estimating…"))
        self.step_label.setText(message)
