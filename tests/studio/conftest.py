"""Studio test fixtures: every test must leave no worker thread or training run behind."""

from __future__ import annotations

import pytest

from studio import workers


@pytest.fixture
def shown(qtbot):
    """Show a page or widget as the window holds it (1280x800), closed by qtbot after the test."""
    def show(page):
        qtbot.addWidget(page)
        page.resize(1280, 800)
        page.show()
        return page

    return show


@pytest.fixture
def train_page(qtbot, shown):
    """The Train page, shown, once it has found the device it trains on."""
    from studio.pages.train.page import TrainPage

    page = shown(TrainPage())
    page.find_device()
    qtbot.waitUntil(lambda: page._device is not None, timeout=30_000)
    return page


@pytest.fixture(autouse=True)
def no_dangling_workers(qapp):
    """Fail a test that leaves a BackgroundTask or TrainingRunner running.

    A dangling worker is what later shows up as "QThread: Destroyed while thread is
    still running" or a run that outlives the window. The leftovers are stopped so
    the next test starts clean, then the test is failed.
    """
    yield
    tasks = workers.live_tasks()
    runners = workers.live_runners()
    for task in tasks:
        task.cancel()
        task.join(10)
    for runner in runners:
        runner.job.kill()
        runner.job.wait(10)
    if tasks or runners:
        pytest.fail(
            f"test left {len(tasks)} background task(s) and {len(runners)} training run(s) running",
            pytrace=False,
        )
