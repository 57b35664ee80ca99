"""The only place in the studio that crosses threads.

Work runs on plain Python threads. Nothing on those threads touches a Qt object:
they put messages into a queue, and a QTimer on the UI thread drains the queue a
few dozen times a second and emits ordinary signals. That batches floods (a
token stream, a training run's events) at the source, and a slow consumer can
never stall the producer.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
import weakref
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QTimer, Signal

from engine.errors import StudioError
from studio import garbage

_live_tasks: "weakref.WeakSet[BackgroundTask]" = weakref.WeakSet()
_live_runners: "weakref.WeakSet[TrainingRunner]" = weakref.WeakSet()
# Clear while the app imports torch, transformers and peft at start-up (studio.app). Two threads
# importing transformers at once can each find the other's half-imported modules and fail
# ("cannot import name 'AutoModel' from 'transformers'"), so tasks wait for that import to end.
_libraries_imported = threading.Event()
_libraries_imported.set()
_SHOWN_TIMEOUT_S = 1.0
# How often a UI thread waiting for a worker looks for a garbage collection the worker asked of it.
_JOIN_SLICE_S = 0.02


def begin_library_import() -> None:
    """Tasks that need the training libraries wait from now on (call it before the import starts)."""
    _libraries_imported.clear()


def end_library_import() -> None:
    """The import is over, done or failed (from any thread): waiting tasks go ahead."""
    _libraries_imported.set()


def describe_error(exc: BaseException) -> str:
    """One readable line for the window. Unexpected errors keep their type for bug reports."""
    if isinstance(exc, StudioError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: close other programs or pick smaller settings"
    return f"{type(exc).__name__}: {exc}"


class TaskReporter:
    """Handed to the task's function: how it reports progress and checks for cancellation."""

    def __init__(self, outbox: "queue.Queue[tuple[str, Any]]") -> None:
        self._outbox = outbox
        self.cancel_event = threading.Event()

    def progress(self, done: int, total: int, message: str = "") -> None:
        self._outbox.put(("progress", (done, total, message)))

    def emit(self, payload: Any, *, wait_until_shown: bool = False) -> None:
        """Send ``payload`` to the UI thread. ``wait_until_shown``: block until the window has
        handled it and repainted (a second at most), so that drawing it does not compete with
        this thread for the interpreter; for a large update that the user waits for, like a
        dataset's first rows before the whole file is read."""
        self._outbox.put(("message", payload))
        if wait_until_shown:
            shown = threading.Event()
            self._outbox.put(("shown", shown))
            shown.wait(_SHOWN_TIMEOUT_S)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()


class BackgroundTask(QObject):
    """Runs ``fn(reporter)`` on a worker thread and reports back through signals.

    ``messages`` carries everything ``reporter.emit`` sent since the last tick, as one
    list, so a stream of many small pieces costs one signal per tick.
    """

    progress = Signal(int, int, str)
    messages = Signal(list)
    succeeded = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, fn: Callable[[TaskReporter], Any], *, parent: Optional[QObject] = None, poll_ms: int = 33,
                 needs_libraries: bool = True):
        """``needs_libraries=False``: ``fn`` imports none of transformers and peft (reading runs,
        files, package versions), so it need not wait while the app imports them at start-up."""
        super().__init__(parent)
        self._fn = fn
        self._needs_libraries = needs_libraries
        self._outbox: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._reporter = TaskReporter(self._outbox)
        self._thread: Optional[threading.Thread] = None
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._drain)
        self._done = False

    def start(self) -> "BackgroundTask":
        _live_tasks.add(self)
        self._thread = threading.Thread(target=self._run, name="studio-task", daemon=True)
        self._thread.start()
        self._timer.start()
        return self

    def cancel(self) -> None:
        self._reporter.cancel_event.set()

    @property
    def running(self) -> bool:
        return not self._done

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the worker thread (not for the signals); True when it has ended.

        Meanwhile the garbage collections the worker asks of the UI thread are run here
        (``studio.garbage``): the worker would otherwise wait for this thread, which waits for it."""
        if self._thread is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            garbage.serve_requests()
            left = _JOIN_SLICE_S if deadline is None else min(_JOIN_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                break
            self._thread.join(left)
        return not self._thread.is_alive()

    def abandon(self, timeout: float) -> bool:
        """For a window that is closing: cancel, wait for the thread, and never deliver its outcome.

        Without this the task would count as running until the UI thread's next tick drained
        its outcome, a tick that a closing window may never get. True when the thread ended."""
        if self._done:
            return True  # its signals were delivered, and its Qt objects may be deleted already
        self.cancel()
        if not self.join(timeout):
            return False
        self._timer.stop()
        self._done = True
        return True

    def _run(self) -> None:
        if self._needs_libraries:
            _libraries_imported.wait()
        try:
            result = self._fn(self._reporter)
        except BaseException as exc:  # reported to the window, never raised on a worker thread
            if not isinstance(exc, StudioError):
                traceback.print_exc(file=sys.stderr)
            self._outbox.put(("error", describe_error(exc)))
        else:
            self._outbox.put(("ok", result))

    def _drain(self) -> None:
        batch: list[Any] = []
        waiting: list[threading.Event] = []
        outcome: Optional[tuple[str, Any]] = None
        while True:
            try:
                kind, payload = self._outbox.get_nowait()
            except queue.Empty:
                break
            if kind == "message":
                batch.append(payload)
            elif kind == "shown":
                waiting.append(payload)
            elif kind == "progress":
                self.progress.emit(*payload)
            else:
                outcome = (kind, payload)
        if batch:
            self.messages.emit(batch)
        if waiting:
            # A zero timer fires after the repaint that the messages' handlers asked for.
            QTimer.singleShot(0, lambda: [shown.set() for shown in waiting])
        if outcome is not None:
            self._timer.stop()
            self._done = True
            if outcome[0] == "ok":
                self.succeeded.emit(outcome[1])
            else:
                self.failed.emit(outcome[1])
            self.finished.emit()


class _Delivery:
    """Where one task's signals go: to its caller while the task is its slot's own.

    The task's signals are connected to this object's methods, which PySide holds weakly,
    so a task never keeps the widget that started it alive (a lambda or partial would)."""

    def __init__(self, slot: "TaskSlot", callbacks: dict[str, Optional[Callable[..., None]]]) -> None:
        # Weakly: the slot keeps its deliveries, and a cycle holding a task would leave its
        # deletion to a garbage collection, which may run on a worker thread.
        self._slot = weakref.ref(slot)
        self._ticket = slot._ticket
        self._callbacks = callbacks

    @property
    def _current(self) -> bool:
        slot = self._slot()
        return slot is not None and slot._ticket == self._ticket

    def _call(self, name: str, *args: Any) -> None:
        callback = self._callbacks[name]
        if callback is not None and self._current:
            callback(*args)

    def progress(self, done: int, total: int, message: str) -> None:
        self._call("on_progress", done, total, message)

    def messages(self, batch: list) -> None:
        self._call("on_messages", batch)

    def failed(self, message: str) -> None:
        self._call("on_error", message)

    def succeeded(self, result: Any) -> None:
        if self._current:
            self._call("on_done", result)
        elif self._callbacks["on_disowned"] is not None:
            self._callbacks["on_disowned"](result)

    def finished(self) -> None:
        self._call("on_finished")
        # Nothing more comes: let go of the callbacks, whose widget would otherwise stay in a
        # reference cycle (widget, slot, delivery) that only a garbage collection frees.
        self._callbacks = dict.fromkeys(self._callbacks)
        slot = self._slot()
        hook = slot._on_finished() if slot is not None and slot._on_finished is not None else None
        if hook is not None:
            hook()


class TaskSlot:
    """One background task at a time for a widget: the start / progress / cancel / finish plumbing.

    ``start`` cancels the task the slot holds (its outcome is then never delivered) and runs
    the new one; ``busy`` and ``task`` say whether one is running. The tasks have no Qt parent
    and are never ``deleteLater``-ed: with PySide 6.12 that crashed now and then on a finished
    task. The slot keeps alive instead every task still running and the last one, because a task
    may be started from its predecessor's ``finished`` signal, and dropping a QObject inside its
    own signal is not safe.
    """

    def __init__(self, on_finished: Optional[Callable[[], None]] = None) -> None:
        """``on_finished``: a method of the owner, called after every task ends, a disowned one
        too (for the controls)."""
        # Held weakly, for the same reason the deliveries drop theirs.
        self._on_finished = weakref.WeakMethod(on_finished) if on_finished is not None else None
        self._task: Optional[BackgroundTask] = None
        self._kept: list[tuple[BackgroundTask, _Delivery]] = []
        # Each task's delivery holds the ticket it started with; ``disown`` (and so ``start``)
        # moves it on, so whatever an abandoned task still reports is recognised as stale.
        self._ticket = 0

    @property
    def task(self) -> Optional[BackgroundTask]:
        """The task running now, None when the slot is idle."""
        return self._task if self._task is not None and self._task.running else None

    @property
    def busy(self) -> bool:
        return self.task is not None

    def start(self, fn: Callable[[TaskReporter], Any], on_done: Optional[Callable[[Any], None]] = None,
              on_error: Optional[Callable[[str], None]] = None, *,
              on_progress: Optional[Callable[[int, int, str], None]] = None,
              on_messages: Optional[Callable[[list], None]] = None,
              on_finished: Optional[Callable[[], None]] = None,
              on_disowned: Optional[Callable[[Any], None]] = None,
              needs_libraries: bool = True, poll_ms: int = 33) -> BackgroundTask:
        """Run ``fn(reporter)`` on a worker thread, replacing (and cancelling) the task held.

        ``on_done`` / ``on_error`` / ``on_progress`` / ``on_messages`` / ``on_finished`` reach
        this task's caller only while it is the slot's own; ``on_disowned`` gets the result of
        one that succeeded after it was disowned or replaced (to free what it loaded);
        ``needs_libraries``, ``poll_ms`` (how often its messages are delivered): see ``BackgroundTask``."""
        self.disown()
        task = BackgroundTask(fn, needs_libraries=needs_libraries, poll_ms=poll_ms)
        delivery = _Delivery(self, {"on_done": on_done, "on_error": on_error, "on_progress": on_progress,
                                    "on_messages": on_messages, "on_finished": on_finished,
                                    "on_disowned": on_disowned})
        task.progress.connect(delivery.progress)
        task.messages.connect(delivery.messages)
        task.succeeded.connect(delivery.succeeded)
        task.failed.connect(delivery.failed)
        task.finished.connect(delivery.finished)
        self._task = task
        # Kept: every task still running (dropping one deletes its timer under its thread: three list
        # tasks started in quick succession crashed the window) and the last one, which may be
        # delivering the signal this start was made from.
        still_running = [entry for entry in self._kept[:-1] if entry[0].running]
        self._kept = [*still_running, *self._kept[-1:], (task, delivery)]
        return task.start()

    def cancel(self) -> None:
        """Ask the running task to stop; its outcome is still delivered when it ends."""
        if self.busy:
            self._task.cancel()

    def disown(self) -> None:
        """Cancel the running task and never deliver its outcome; ``busy`` stays true until it ends."""
        self.cancel()
        self._ticket += 1

    def let_go(self, wait_s: float) -> bool:
        """Disown the running task and wait up to ``wait_s`` for its thread. True when none is
        left running: the slot is then idle at once, though a result the task still reports
        goes to its ``on_disowned``."""
        self.disown()
        if self._task is not None and not self._task.join(wait_s):
            return False
        self._task = None
        return True

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the running task's thread; True when none is left running."""
        return self._task is None or self._task.join(timeout)


class TrainingRunner(QObject):
    """Adapts an ``engine.jobs.training_job.TrainingJob`` to signals, batching its events at about 10 Hz."""

    events = Signal(list)
    finished = Signal(object)  # the RunFinished event

    def __init__(self, job: Any, *, parent: Optional[QObject] = None, poll_ms: int = 100):
        super().__init__(parent)
        self.job = job
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self._drain)
        self._timer.start()
        _live_runners.add(self)

    @property
    def running(self) -> bool:
        return self._timer.isActive()

    def _drain(self) -> None:
        from engine.run.events import RunFinished

        batch = self.job.drain()
        if batch:
            self.events.emit(batch)
        for event in batch:
            if isinstance(event, RunFinished):
                self._timer.stop()
                self.finished.emit(event)
                return


def live_tasks() -> list[BackgroundTask]:
    return [task for task in list(_live_tasks) if task.running]


def live_runners() -> list[TrainingRunner]:
    return [runner for runner in list(_live_runners) if runner.running]


def shutdown_all(timeout: float = 5.0, keep_training: bool = False) -> None:
    """On quit: cancel every task and join them all; stop every training run and wait for it,
    unless ``keep_training`` (runs are processes of their own, found again at the next start)."""
    for task in list(_live_tasks):
        task.cancel()
    if not keep_training:
        for runner in list(_live_runners):
            if runner.running:
                runner.job.stop(save=True)
    for task in list(_live_tasks):
        task.abandon(timeout)
    if not keep_training:
        for runner in list(_live_runners):
            runner.job.wait(timeout)
