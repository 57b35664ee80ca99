"""What the streaming passes over a whole dataset (scanning it, writing its examples)
share: counts of good and bad rows, the first problems kept, progress now and then, and
a way to stop.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Optional

from engine.data.dataset import DatasetSource
from engine.data.formats import EMPTY_ANSWER
from engine.data.readers import RowProblem

KEPT_PROBLEMS = 100
_PROGRESS_EVERY_S = 0.1

Progress = Callable[[float], None]
Cancelled = Callable[[], bool]


class DatasetPass:
    """Bookkeeping shared by the streaming passes: counts, kept problems, progress, cancel."""

    def __init__(self, source: DatasetSource, progress: Optional[Progress], cancelled: Optional[Cancelled]):
        self.source, self._progress, self._cancelled = source, progress, cancelled
        self.good = 0
        self.bad = 0
        self.empty_answers = 0
        self.problems: list[RowProblem] = []
        # Every row that cannot train, by its problem's code, and the first of each code:
        # what ``engine.data.trainable`` says when no row can.
        self.unusable: Counter[str] = Counter()
        self.first_unusable: dict[str, RowProblem] = {}
        self._last_report = 0.0

    def problem(self, problem: RowProblem) -> None:
        self.bad += 1
        self.empty_answers += problem.code == EMPTY_ANSWER
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(problem)
        self.cannot_train(problem)

    def cannot_train(self, problem: RowProblem) -> None:
        """Count a row that gives training nothing: a bad row, or a good one that max length cuts to nothing."""
        self.unusable[problem.code] += 1
        self.first_unusable.setdefault(problem.code, problem)

    def tick(self) -> bool:
        """Report progress now and then; False when the caller asked to stop."""
        if self._cancelled is not None and self._cancelled():
            return False
        now = time.monotonic()
        if self._progress is not None and now - self._last_report >= _PROGRESS_EVERY_S:
            self._last_report = now
            self._progress(self.source.fraction_read())
        return True
