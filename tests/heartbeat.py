"""A 10 ms timer on the UI thread, recording when it ticks: a late tick is a stall of the window.

Shared by the responsiveness tests and ``bench/ui_latency.py``.
"""

from __future__ import annotations

import faulthandler
import resource
import time

from PySide6.QtCore import Qt, QTimer

INTERVAL_MS = 10


class Heartbeat:
    def __init__(self) -> None:
        self.ticks: list[float] = []
        # The UI thread's own CPU time and involuntary context switches at each tick: a stall
        # the thread spent working is the studio's doing; one it spent waiting is not.
        self.cpu: list[float] = []
        self.preempted: list[int] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.cpu.append(time.thread_time())
        self.preempted.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw)

    def __enter__(self) -> "Heartbeat":
        self.ticks.clear()
        self.cpu.clear()
        self.preempted.clear()
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

    def worst_described(self, most: int = 3) -> str:
        """The ``most`` worst stalls and when each came, counted from the heartbeat's start and
        back from its end: where in a run the window stalled says what stalled it."""
        stalls = self.stalls_ms()
        start, end = self.ticks[0], self.ticks[-1]
        worst = sorted(range(len(stalls)), key=stalls.__getitem__, reverse=True)[:most]
        return ", ".join(f"{stalls[i]:.0f} ms ({(self.cpu[i + 1] - self.cpu[i]) * 1000:.0f} ms of it working, "
                         f"{self.preempted[i + 1] - self.preempted[i]} preemptions) "
                         f"at +{self.ticks[i] - start:.2f} s / -{end - self.ticks[i]:.2f} s" for i in worst)


class StallWatch:
    """What the UI thread was doing when it stalled: every heartbeat tick re-arms faulthandler's
    watchdog, so a tick ``over_ms`` late makes it write every thread's stack, the UI thread's
    among them, from its own C thread, while the stall is still going on.

    A diagnostic for ``bench/ui_latency.py --explain``, never for tests: the watchdog walks the
    threads' frames without the GIL, and a thread ending meanwhile can crash the process (it
    did once, under the suite's churn of worker threads). Sampling the frames from a Python
    thread instead is no better: a frame the sampler still holds when the UI thread leaves it
    is freed on the sampler's thread, Qt objects in it included, which Qt answers with warnings
    and a crash.
    """

    def __init__(self, heartbeat: Heartbeat, over_ms: float = 25.0) -> None:
        import tempfile

        self._heartbeat = heartbeat
        self._over_s = (INTERVAL_MS + over_ms) / 1000
        self._file = tempfile.TemporaryFile(mode="w+")

    def __enter__(self) -> "StallWatch":
        self._heartbeat.timer.timeout.connect(self._arm)
        self._arm()
        return self

    def __exit__(self, *exc_info: object) -> None:
        faulthandler.cancel_dump_traceback_later()
        self._heartbeat.timer.timeout.disconnect(self._arm)

    def _arm(self) -> None:
        faulthandler.dump_traceback_later(self._over_s, file=self._file)

    def report(self, most: int = 5) -> str:
        """The UI thread's stack in the first ``most`` stalls, innermost call first."""
        import threading

        self._file.seek(0)
        main = f"Thread 0x{threading.main_thread().ident:016x}"
        dumps = [dump for dump in self._file.read().split("Timeout (") if dump.strip()]
        lines = []
        for dump in dumps[:most]:
            stack = dump.split(main, 1)[-1].split("\n\n", 1)[0].splitlines()[1:9]
            lines.append("stall:")
            lines += ["    " + line.strip() for line in stack]
        return "\n".join(lines) or "no stall"
