"""In the studio's process the garbage collector runs on the UI thread only (``studio.garbage``):
a collection on a worker thread that deletes Qt objects froze the window for good, twice in the
suite. A worker that makes garbage fast, or asks the engine for a collection, gets it collected on
the UI thread, whether that thread is in its event loop or waiting for the worker."""

from __future__ import annotations

import gc
import threading

import pytest

from engine.core import garbage
from studio.garbage import ROUTED_WAIT_S
from studio.workers import BackgroundTask

TIMEOUT_MS = 30_000


class Node:
    """Garbage only a collection frees: a node in a reference cycle."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collecting_threads():
    """The threads every collection ran on, while the test runs."""
    threads: list[str] = []

    def note(phase: str, _info: dict) -> None:
        if phase == "start":
            threads.append(threading.current_thread().name)

    gc.callbacks.append(note)
    yield threads
    gc.callbacks.remove(note)


def test_a_worker_making_garbage_fast_never_collects_it_itself(qtbot, collecting_threads):
    def make_garbage(_reporter):
        for _ in range(200_000):
            Node()  # far past the collector's threshold of a few hundred new objects
        return True

    task = BackgroundTask(make_garbage, needs_libraries=False)
    with qtbot.waitSignal(task.finished, timeout=TIMEOUT_MS):
        task.start()
    qtbot.waitUntil(lambda: bool(collecting_threads), timeout=TIMEOUT_MS)  # the UI thread's next check
    assert not gc.isenabled()
    assert set(collecting_threads) == {threading.main_thread().name}


def test_the_engines_collection_on_a_worker_runs_on_the_ui_thread_and_frees_the_cycle(qtbot, collecting_threads):
    freed = []

    def unload(_reporter):
        import weakref

        model = Node()
        weakref.finalize(model, freed.append, "model")
        del model  # a cycle: only a collection frees it, as a chat model's
        garbage.collect()
        return list(freed)

    task = BackgroundTask(unload, needs_libraries=False)
    with qtbot.waitSignal(task.succeeded, timeout=TIMEOUT_MS) as done:
        task.start()
    assert done.args == [["model"]]  # freed before the worker went on
    assert set(collecting_threads) == {threading.main_thread().name}


def test_a_ui_thread_waiting_for_the_worker_runs_the_collection_it_asks_for(qtbot, collecting_threads):
    """A closing window waits for the server's task, whose stop collects: the wait serves it."""
    asked = threading.Event()

    def stop_serving(_reporter):
        asked.set()
        garbage.collect()

    task = BackgroundTask(stop_serving, needs_libraries=False).start()
    assert asked.wait(10)
    # No event loop runs here. Unserved, the worker would wait ROUTED_WAIT_S and this join time out.
    assert task.join(ROUTED_WAIT_S / 2)
    assert set(collecting_threads) == {threading.main_thread().name}
