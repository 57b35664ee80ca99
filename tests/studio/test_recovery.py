"""Nothing lost when a process dies: the training child killed under the Train page, and the
studio itself killed while a run goes on, then started again. Real runs on the tiny model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import Qt

from engine.jobs.summary import summarize_run
from engine.adapters.library import list_adapters
from engine.paths import runs_dir
from helpers import write_messages_dataset
from studio.main_window import MainWindow
from studio.pages.train.page import TrainPage

RUN_TIMEOUT_MS = 120_000
REPORT_WITHIN_S = 2.0  # the bound for telling the user the training process died


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_messages_dataset(tmp_path / "pirate-chat.jsonl", rows=8)


def _checkpoints(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints (the trainer state is written last)."""
    return sorted(int(p.parent.name.split("-")[1])
                  for p in (run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))


def _steps_plotted(page: TrainPage) -> list[float]:
    x_data, _y = page.loss_plot._series["train loss"].item.getOriginalDataset()
    return [] if x_data is None else list(x_data)


@pytest.mark.alone
def test_a_killed_training_process_is_reported_within_two_seconds_and_resumes_the_curve(
        qtbot, tiny_model_dir, dataset):
    page = TrainPage()
    qtbot.addWidget(page)
    page.show()
    page.model_picker.set_ref(str(tiny_model_dir))
    page.dataset_picker.set_path(str(dataset))
    form = page.form
    form.rank_spin.setValue(4)
    form.steps_spin.setValue(40)
    form.batch_spin.setValue(2)
    form.max_length_spin.setValue(64)
    form.save_every_spin.setValue(2)
    finished: list = []
    page.runFinished.connect(finished.append)

    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page._last_run is not None and bool(_checkpoints(page._last_run)),
                    timeout=RUN_TIMEOUT_MS)
    run_dir = page._last_run
    os.kill(page._runner.job.pid, signal.SIGKILL)  # a crash mid-step, not a user action
    killed_at = time.monotonic()
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_TIMEOUT_MS)
    reported_s = time.monotonic() - killed_at
    print(f"the killed training process was reported after {reported_s:.2f} s")
    assert reported_s < REPORT_WITHIN_S
    assert finished[0].status == "failed" and "ended unexpectedly" in finished[0].error
    assert "ended unexpectedly" in page.error_label.text()
    assert page.resume_button.isEnabled() and list_adapters() == []

    last = summarize_run(run_dir).checkpoint_step
    assert last == _checkpoints(run_dir)[-1]
    with qtbot.waitSignal(page.runFinished, timeout=RUN_TIMEOUT_MS) as resumed:
        qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    assert resumed.args[0].status == "completed" and resumed.args[0].step == 40
    steps = _steps_plotted(page)
    # The curve goes on from the checkpoint: the steps before it are still drawn, none is trained twice.
    assert steps == sorted(set(steps)) and steps[-1] == 40 and len(steps) >= 40 - last
    assert [a.name for a in list_adapters()] == [summarize_run(run_dir).name]


_STUDIO_STANDIN = """
import sys, time
from engine.run.config import RunConfig
from engine.run.events import StepMetrics
from engine.jobs.training_job import TrainingJob

model, dataset = sys.argv[1:3]
job = TrainingJob.start(RunConfig(model=model, dataset=dataset, rank=4, alpha=8, max_steps=100_000, batch_size=2,
                                  max_length=64, log_every=1, save_every=2, name="left-running"))
for event in job.events():
    if isinstance(event, StepMetrics) and event.step >= 3:
        print(job.pid, flush=True)
        break
time.sleep(600)
"""


def _studio_killed_during_a_run(model_dir: Path, dataset: Path) -> psutil.Process:
    """Start a run the way the studio does, from a process then killed with SIGKILL; the training child."""
    studio = subprocess.Popen([sys.executable, "-c", _STUDIO_STANDIN, str(model_dir), str(dataset)],
                              stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        child = psutil.Process(int(studio.stdout.readline()))
    finally:
        studio.kill()
        studio.wait(30)
    return child


def _home(qtbot) -> MainWindow:
    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    home = window.home_page
    qtbot.waitUntil(lambda: home._recovery_checked, timeout=RUN_TIMEOUT_MS)
    return window


def test_after_the_studio_is_killed_the_next_start_offers_to_watch_then_to_resume(qtbot, tiny_model_dir, dataset):
    child = _studio_killed_during_a_run(tiny_model_dir, dataset)
    try:
        [run_dir] = [path for path in runs_dir().iterdir() if path.is_dir()]
        assert child.is_running()  # the run outlived the window that started it

        # Next start, the run still training: the Home page says so and offers to watch it.
        window = _home(qtbot)
        home = window.home_page
        assert home.recovery_box.isVisible() and home.recovery_button.text() == "Watch"
        assert "left-running" in home.recovery_label.text() and "still training" in home.recovery_label.text()
        qtbot.mouseClick(home.recovery_button, Qt.MouseButton.LeftButton)
        train = window.train_page
        assert window.current_title() == "Train"
        qtbot.waitUntil(lambda: train.loss_plot.point_count() >= 3, timeout=RUN_TIMEOUT_MS)  # the curve so far
        assert train.stop_button.isEnabled()

        # Then the computer goes down (the training process dies with the window): the next
        # start finds the run cut off and offers to resume it from its checkpoint.
        with qtbot.waitSignal(train.runFinished, timeout=RUN_TIMEOUT_MS):
            child.kill()
        window.close()
        child.wait(30)
    finally:
        if child.is_running():
            child.kill()

    last = summarize_run(run_dir).checkpoint_step
    assert summarize_run(run_dir).resumable and last >= 2
    window = _home(qtbot)
    home = window.home_page
    assert home.recovery_box.isVisible() and home.recovery_button.text() == "Resume"
    assert f"checkpoint at step {last}" in home.recovery_label.text()
    train = window.train_page
    qtbot.mouseClick(home.recovery_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: train.stop_button.isEnabled(), timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: train.loss_plot.point_count() > last, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(train.runFinished, timeout=RUN_TIMEOUT_MS) as stopped:
        train.stop_button.click()
    assert stopped.args[0].status == "stopped"
    assert min(_steps_plotted(train)) <= last < max(_steps_plotted(train))
    assert not home.recovery_box.isVisible()
