"""In the studio's process the garbage collector runs on the UI thread, never on a worker thread.

Why: a collection deletes every piece of garbage it finds, whatever thread it runs on, and the
garbage includes Qt objects: closed dialogs and menus, finished tasks, an earlier window. A QObject
deleted on a worker thread holds Qt's signal-slot locks while PySide waits there for the
interpreter's lock; the UI thread, holding the interpreter's lock, waits for those same Qt locks,
and the window freezes for good. Seen twice in the suite: a chat unload's collection, and a
training start's automatic collection (building the model to check it, on its worker thread), each
deleted a finished task's QObject while the UI thread deleted a menu.

So, while ``UiThreadGarbage`` is on:
- automatic collection is off (it runs on whichever thread allocates), and the UI thread collects
  on a short timer by the collector's own thresholds, as pyqtgraph's ``GarbageCollector`` does for
  the same reason; a short period keeps each collection small (a worker that allocates fast leaves
  a tenth of a second's objects to scan, not a second's);
- the engine's deliberate collections (``engine.core.garbage.collect``: a chat model unloaded, a
  merge checked) made on a worker thread are run by the UI thread while the worker waits: from the
  event loop, or from ``BackgroundTask.join`` when the UI thread is waiting for that very worker (a
  closing window stopping the server). The wait is bounded all the same; past it the collection is
  left to the timer.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading

from PySide6.QtCore import QObject, QThread, QTimer, Qt, Signal

from engine.core import garbage

log = logging.getLogger(__name__)

# How often the UI thread looks at the collector's counts; a check with nothing to collect costs a
# few microseconds.
CHECK_INTERVAL_MS = 100
# How long a worker's deliberate collection waits for the UI thread before leaving it to the timer.
ROUTED_WAIT_S = 5.0


class UiThreadGarbage(QObject):
    """Collects garbage on the thread it was made on (the UI thread) for as long as it is on."""

    _requested = Signal()  # a worker asked for a collection (in _asked)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self.collect_due)
        self._asked: "queue.SimpleQueue[threading.Event]" = queue.SimpleQueue()  # set once collected
        self._requested.connect(self.serve_requests, Qt.ConnectionType.QueuedConnection)
        self._automatic_was_on = gc.isenabled()

    @property
    def on(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        self._automatic_was_on = gc.isenabled()
        gc.disable()
        garbage.route(self.collect)
        self._timer.start()

    def stop(self) -> None:
        """Back to automatic collection, after collecting here what is garbage already."""
        self._timer.stop()
        garbage.route(None)
        gc.collect()
        if self._automatic_was_on:
            gc.enable()

    def collect_due(self) -> None:
        """The generations whose counts passed their thresholds, youngest first, as the automatic
        collector would have collected them."""
        young, middle, old = gc.get_count()
        if young > self._thresholds[0]:
            gc.collect(0)
            if middle > self._thresholds[1]:
                gc.collect(1)
                if old > self._thresholds[2]:
                    gc.collect(2)

    def collect(self) -> None:
        """A full collection on the UI thread, for the engine (``engine.core.garbage.collect``)."""
        if self.on_ui_thread():
            gc.collect()
            return
        done = threading.Event()
        self._asked.put(done)
        self._requested.emit()
        if not done.wait(ROUTED_WAIT_S):
            log.info("The UI thread was busy for %.0f s; the collection is left to its next check", ROUTED_WAIT_S)

    def serve_requests(self) -> None:
        """Run the collection workers are waiting for, if any (on the UI thread)."""
        waiting = []
        while True:
            try:
                waiting.append(self._asked.get_nowait())
            except queue.Empty:
                break
        if waiting:
            gc.collect()
            for done in waiting:
                done.set()

    def on_ui_thread(self) -> bool:
        return QThread.currentThread() == self.thread()


_policy: list[UiThreadGarbage] = []  # made once per process, on the UI thread


def collect_on_ui_thread(app: QObject) -> UiThreadGarbage:
    """Switch the policy on for this process (the studio at start; again: no change)."""
    if not _policy:
        _policy.append(UiThreadGarbage(app))
    if not _policy[0].on:
        _policy[0].start()
    return _policy[0]


def back_to_automatic() -> None:
    """Switch it off again (the test suite, between tests that have a window and tests that do not)."""
    if _policy and _policy[0].on:
        _policy[0].stop()


def serve_requests() -> None:
    """For the UI thread while it waits for a worker: the collections workers wait for, run now."""
    if _policy and _policy[0].on and _policy[0].on_ui_thread():
        _policy[0].serve_requests()
