"""A 10 ms timer on the UI thread, recording when it ticks: a late tick is a stall of the window.

Shared by the responsiveness tests and ``bench/ui_latency.py``.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer

INTERVAL_MS = 10


class Heartbeat:
    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self) -> "Heartbeat":
        self.ticks.clear()
        self.timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.timer.stop()

    def stalls_ms(self) -> list[float]:
        """How late each tick came, in milliseconds (0 for a tick on time)."""
        return [max(0.0, (later - earlier) * 1000 - INTERVAL_MS) for earlier, later in zip(self.ticks, self.ticks[1:])]

    def worst_ms(self) -> float:
        assert len(self.ticks) > 5, f"the heartbeat ticked only {len(self.ticks)} times"
        return max(self.stalls_ms())
