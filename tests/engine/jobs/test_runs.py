"""The runs history (engine.jobs.history) on run folders written with the real event writer."""

from __future__ import annotations

import shutil

import pytest
from run_folders import T0, completed_run, started, step, training_process, write_run

from engine.run.rundir import RunDir
from engine.errors import StudioError
from engine.run.events import EventWriter, LogLine, RunFinished
from engine.paths import runs_dir
from engine.jobs.history import (
    SPARK_BUCKETS,
    RunHistory,
    format_duration,
    read_config,
    read_curves,
    read_record,
    spark_line,
)

def test_a_finished_run_has_its_status_duration_final_loss_and_mini_curve():
    record = read_record(completed_run())
    assert record.summary.status == "completed"
    assert record.summary.steps == 5 and record.summary.final_loss == pytest.approx(0.5)
    assert record.duration_s == pytest.approx(30.0)
    assert record.spark == (2.5, 2.0, 1.5, 1.0, 0.5)


def test_the_curves_hold_loss_eval_loss_and_learning_rate_bystep():
    curves = read_curves(completed_run())
    assert curves.loss.steps == [1, 2, 3, 4, 5]
    assert curves.loss.values == [2.5, 2.0, 1.5, 1.0, 0.5]
    assert curves.learning_rate.values == pytest.approx([1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    assert (curves.eval_loss.steps, curves.eval_loss.values) == ([5], [1.0])


def test_a_resumed_run_keeps_the_later_values_and_counts_only_time_spent_training():
    folder = write_run("20260101-110000-resumed", [
        started(T0), step(T0 + 1, 1, 3.0), step(T0 + 2, 2, 2.8), step(T0 + 10, 3, 2.6),
        RunFinished(time=T0 + 10, status="stopped", step=3),
        # Resumed a day later from the checkpoint at step 2: step 3 is trained again.
        started(T0 + 86_400, resumed_from=2), step(T0 + 86_401, 3, 2.5), step(T0 + 86_402, 4, 2.4),
        RunFinished(time=T0 + 86_405, status="completed", step=4),
    ])
    record = read_record(folder)
    assert record.summary.status == "completed"
    assert record.duration_s == pytest.approx(10 + 5)
    curves = read_curves(folder)
    assert curves.loss.steps == [1, 2, 3, 4]
    assert curves.loss.values == [3.0, 2.8, 2.5, 2.4]


def test_a_long_curve_is_reduced_for_the_row_but_keeps_its_spike():
    losses = [2.0 - i / 10_000 for i in range(10_000)]
    losses[6543] = 9.0
    reduced = spark_line(losses)
    assert len(reduced) <= 2 * SPARK_BUCKETS
    assert max(reduced) == 9.0 and reduced[0] == 2.0 and min(reduced) == losses[-1]


def test_lines_being_written_or_not_understood_are_skipped():
    folder = completed_run()
    writer = EventWriter(RunDir(folder).events)
    writer.emit(LogLine(message="StepMetrics"))  # a message naming an event is no such event
    writer.close()
    with open(RunDir(folder).events, "ab") as handle:
        handle.write(b'{"event": "StepMetrics", "shape": "from another writer"}\n')
        handle.write(b'{"event": "StepMetrics", "step": 6, "loss"')  # the writer is mid-line
    curves = read_curves(folder)
    assert curves.loss.steps == [1, 2, 3, 4, 5]


def test_a_run_that_never_started_has_no_duration_and_a_run_still_going_counts_up_to_now():
    assert read_record(write_run("20260101-120000-empty", [])).duration_s is None

    folder = write_run("20260101-130000-going", [started(T0), step(T0 + 1, 1, 3.0)])
    with training_process(folder):
        record = read_record(folder)
    assert record.summary.status == "running"
    assert record.duration_s > 86_400  # T0 is long ago


def test_the_history_lists_newest_first_and_skips_folders_that_are_not_runs():
    completed_run("20260101-100000-older")
    completed_run("20260102-100000-newer")
    (runs_dir() / "not-a-run").mkdir()
    (runs_dir() / "stray.txt").write_text("x")
    names = [record.summary.name for record in RunHistory().refresh()]
    assert names == ["20260102-100000-newer", "20260101-100000-older"]


def test_the_history_follows_deleted_and_resumed_runs():
    history = RunHistory()
    gone = completed_run("20260101-100000-deleted")
    resumed = completed_run("20260101-110000-resumed")
    progress: list[tuple[int, int]] = []
    assert len(history.refresh(lambda done, total: progress.append((done, total)))) == 2
    assert progress == [(1, 2), (2, 2)]

    shutil.rmtree(gone)
    writer = EventWriter(RunDir(resumed).events)
    for event in (started(T0 + 100, resumed_from=5), step(T0 + 101, 6, 0.25),
                  RunFinished(time=T0 + 102, status="failed", step=6, error="out of memory")):
        writer.emit(event)
    writer.close()

    (record,) = history.refresh()
    assert record.summary.name == "20260101-110000-resumed"
    assert record.summary.status == "failed" and record.summary.error == "out of memory"
    assert record.spark[-1] == 0.25


def test_an_unreadable_config_is_one_line_that_names_the_run():
    folder = completed_run("20260101-100000-broken")
    assert read_config(folder)["model"] == "tiny"
    RunDir(folder).config.write_text("{not json", encoding="utf-8")
    with pytest.raises(StudioError, match="config.json of 20260101-100000-broken cannot be read"):
        read_config(folder)
    shutil.rmtree(folder)
    with pytest.raises(StudioError, match="20260101-100000-broken has no config.json"):
        read_config(folder)


def test_durations_read_as_a_person_says_them():
    assert [format_duration(s) for s in (None, 4.4, 59.6, 725, 12_000)] == ["", "4 s", "1 min 00 s", "12 min 05 s",
                                                                           "3 h 20 min"]


def test_the_history_knows_without_reading_until_a_run_changes():
    history = RunHistory()
    completed_run("20260101-100000-done")
    (runs_dir() / "not-a-run").mkdir()
    assert history.known() is None  # never read yet
    history.refresh()
    assert [record.summary.name for record in history.known()] == ["20260101-100000-done"]

    going = write_run("20260102-100000-going", [started(T0), step(T0 + 1, 1, 3.0)])
    assert history.known() is None  # a new run must be read
    with training_process(going):
        assert [record.summary.status for record in history.refresh()] == ["running", "completed"]
        assert history.known() is None  # a running run is read at every look
    assert [record.summary.status for record in history.refresh()] == ["interrupted", "completed"]
    assert len(history.known()) == 2
