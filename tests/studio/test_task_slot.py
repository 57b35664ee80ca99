"""The task helper every page uses: one task at a time, a replaced task's outcome never reaches
the page, and a task let go of leaves the page idle at once."""

from __future__ import annotations

import threading

from studio.workers import TaskReporter, TaskSlot


def test_a_replaced_task_is_cancelled_and_its_outcome_never_delivered(qtbot):
    slot = TaskSlot()
    release = threading.Event()
    results: list = []
    finished: list[str] = []

    def slow(reporter: TaskReporter) -> str:
        release.wait(10)
        return "cancelled" if reporter.cancelled else "slow"

    first = slot.start(slow, results.append, on_finished=lambda: finished.append("first"))
    assert slot.busy and slot.task is first
    with qtbot.waitSignal(first.finished, timeout=10_000):
        second = slot.start(lambda reporter: "fast", results.append, on_finished=lambda: finished.append("second"))
        release.set()
    qtbot.waitUntil(lambda: not second.running, timeout=10_000)
    assert results == ["fast"] and finished == ["second"]
    assert not slot.busy and slot.task is None


def test_letting_go_leaves_the_slot_idle_and_hands_a_late_result_to_on_disowned(qtbot):
    slot = TaskSlot()
    delivered: list = []
    disowned: list = []
    task = slot.start(lambda reporter: reporter.cancel_event.wait(10) and "loaded", delivered.append,
                      on_disowned=disowned.append)
    assert slot.let_go(10.0) and not slot.busy
    with qtbot.waitSignal(task.finished, timeout=10_000):
        pass
    assert delivered == [] and disowned == ["loaded"]
