"""The engine's deliberate collections run where they are called, unless a program with a window
routed them to its UI thread (``studio.garbage``; tests/studio/test_garbage_thread.py)."""

from __future__ import annotations

import gc
import threading
import weakref

from engine.core import garbage


class Node:
    def __init__(self) -> None:
        self.me = self


def test_without_a_window_the_engine_collects_on_the_thread_that_asks():
    threads: list[str] = []
    freed: list[str] = []

    def note(phase: str, _info: dict) -> None:
        if phase == "start":
            threads.append(threading.current_thread().name)

    def unload() -> None:
        model = Node()
        weakref.finalize(model, freed.append, "model")
        del model
        garbage.collect()

    gc.callbacks.append(note)
    try:
        worker = threading.Thread(target=unload, name="no-window-worker")
        worker.start()
        worker.join()
    finally:
        gc.callbacks.remove(note)
    assert freed == ["model"] and threads[-1] == "no-window-worker"
