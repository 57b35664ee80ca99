"""The live plot stores points as they come and draws them on its timer, not per point."""

from __future__ import annotations

from typing import Optional

import pytest
from pixels import pixels_of

from engine.run.events import RunStarted, StepMetrics
from studio.pages.train.monitor import RunMonitor
from studio.widgets.live_plot import LivePlot


@pytest.fixture
def plot(qtbot) -> LivePlot:
    plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss")
    qtbot.addWidget(plot)
    return plot


def test_points_are_drawn_on_the_next_tick(qtbot, plot):
    for step in range(1, 1001):
        plot.append(step, 1.0 / step)
    assert plot.point_count() == 0  # stored, not drawn yet

    qtbot.waitUntil(lambda: plot.point_count() == 1000, timeout=2000)
    x_data, y_data = plot.plot_item.listDataItems()[0].getOriginalDataset()
    assert x_data[0] == 1 and x_data[-1] == 1000
    assert y_data[-1] == pytest.approx(1e-3)
    assert plot.point_count("eval loss") == 0


def test_each_curve_keeps_its_own_points(plot):
    plot.append(10, 2.0, "eval loss")
    plot.append(1, 3.0)
    plot.append(2, 2.5)
    plot.redraw()
    assert plot.point_count() == 2
    assert plot.point_count("eval loss") == 1
    assert [item.name() for item in plot.plot_item.listDataItems()] == ["train loss", "eval loss"]


def test_clear_forgets_every_point(plot):
    plot.append(1, 1.0)
    plot.append(1, 1.0, "eval loss")
    plot.redraw()
    plot.clear()
    assert plot.point_count() == 0 and plot.point_count("eval loss") == 0
    plot.append(5, 0.5)
    plot.redraw()
    assert plot.point_count() == 1


def test_a_hundred_thousand_points_per_curve_are_drawn_as_the_pixels_can_show_them(qtbot, plot):
    import numpy as np

    plot.resize(800, 400)
    plot.show()
    qtbot.waitExposed(plot)
    steps = np.arange(1, 100_001)
    losses = 2.0 / np.sqrt(steps)
    losses[54_321] = 50.0  # one spike among 100,000 points
    for step, loss in zip(steps.tolist(), losses.tolist()):
        plot.append(step, loss)
        plot.append(step, loss + 10.0, "eval loss")
    plot.redraw()
    image = plot.plot_widget.grab().toImage()

    assert plot.point_count() == plot.point_count("eval loss") == 100_000
    drawn_x, drawn_y = plot.plot_item.listDataItems()[0].getData()
    # Peak downsampling: a lowest and a highest value per pixel column, the spike among them.
    assert len(drawn_x) <= 4 * plot.plot_widget.width()
    assert drawn_y.max() == 50.0
    assert plot.plot_item.viewRange()[1][1] >= 50.0
    for item in plot.plot_item.listDataItems():  # both curves are on the picture
        assert pixels_of(image, item.opts["pen"].color()) > 200



def test_every_point_stays_in_view_while_the_axes_move_only_now_and_then(qtbot, plot):
    """A run's loss, drawn step by step: no point ever falls outside the plot, yet the axes (whose
    redrawing is most of a frame's cost) move for few of the 300 steps, and a user's zoom holds."""
    import math

    plot.resize(600, 300)
    plot.show()
    qtbot.waitExposed(plot)
    moves = []
    plot.plot_item.vb.sigRangeChanged.connect(lambda *_: moves.append(1))
    for step in range(1, 301):
        loss = 2.5 * math.exp(-step / 60) + 0.3 + 0.05 * math.sin(step)
        plot.append(step, loss)
        plot.append(step, loss + 0.4, "eval loss")
        plot.redraw()
        qtbot.wait(1)  # painted, as between two of a run's steps
        (x_low, x_high), (y_low, y_high) = plot.plot_item.viewRange()
        assert x_low <= 1 and step <= x_high and y_low <= loss and 2.5 * math.exp(-1 / 60) + 0.75 <= y_high
    assert len(moves) < 60

    plot.plot_item.vb.setRange(xRange=(100, 150), padding=0)  # the user zooms in on some steps
    plot.append(301, 0.3)
    plot.redraw()
    qtbot.wait(1)
    assert plot.plot_item.viewRange()[0] == pytest.approx([100, 150])


def test_a_run_whose_length_is_known_keeps_its_x_axis_still_from_the_first_step(qtbot, plot):
    """The Train page covers a run's steps as it starts: the curve grows across a still x axis,
    the y axis alone follows the loss, and the axis is the data's again once cleared."""
    plot.resize(600, 300)
    plot.show()
    qtbot.waitExposed(plot)
    plot.cover_x(0, 200)
    x_ranges = set()
    for step in range(1, 201):
        plot.append(step, 3.0 - step / 100)
        plot.redraw()
        qtbot.wait(1)
        (x_low, x_high), (y_low, y_high) = plot.plot_item.viewRange()
        x_ranges.add((round(x_low, 6), round(x_high, 6)))
        assert x_low <= 0 and 200 <= x_high and y_low <= 3.0 - step / 100 <= y_high
    assert len(x_ranges) == 1

    plot.clear()
    for step in range(1, 11):
        plot.append(step, 1.0 + step)
    plot.redraw()
    qtbot.wait(1)
    assert plot.plot_item.viewRange()[0][1] < 50  # ten steps, no longer a 200-step axis


def test_a_reference_line_shows_its_value_and_label_and_can_be_moved_or_hidden(qtbot, plot):
    import pyqtgraph as pg

    plot.show()
    qtbot.waitExposed(plot)
    (line,) = [item for item in plot.plot_item.items if isinstance(item, pg.InfiniteLine)]
    assert plot.reference is None and not line.isVisible()

    plot.set_reference(3680.0, "predicted peak")
    assert plot.reference == 3680.0 and line.isVisible() and line.label.toPlainText() == "predicted peak"
    plot.set_reference(None)
    assert plot.reference is None and not line.isVisible()
    plot.set_reference(1200.0, "limit")  # the next run's: the same line, moved and relabelled
    assert plot.reference == 1200.0 and line.label.toPlainText() == "limit"


def test_a_curve_of_one_point_is_drawn_as_a_dot_and_a_longer_one_as_a_line(qtbot, plot):
    plot.resize(400, 300)
    plot.show()
    qtbot.waitExposed(plot)
    train, evaluation = plot.plot_item.listDataItems()
    colour = train.opts["pen"].color()
    assert train.opts["symbol"] is None and evaluation.opts["symbol"] is None  # no points: lines in the legend
    plot.append(1, 2.0)  # a run's first step
    plot.redraw()
    assert pixels_of(plot.plot_widget.grab().toImage(), colour) >= 9  # a dot, not nothing
    plot.append(1, 2.5, "eval loss")
    plot.redraw()
    assert pixels_of(plot.plot_widget.grab().toImage(), evaluation.opts["pen"].color()) >= 9

    plot.append(2, 1.0)
    plot.redraw()
    assert train.opts["symbol"] is None  # a line from two points on: a dot per point would slow long runs
    assert evaluation.opts["symbol"] is not None


def _memory_run(qtbot, device: str, steps: list[tuple[int, int, Optional[int]]]) -> RunMonitor:
    """A run monitor shown with a run on ``device`` whose steps used (allocated, reserved) MB."""
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.resize(1000, 400)
    monitor.show()
    qtbot.waitExposed(monitor)
    monitor.show_started(RunStarted(run_dir="run", model="tiny", method="lora", device=device, total_steps=3,
                                    trainable_params=1, total_params=2, train_examples=3))
    for step, allocated, reserved in steps:
        monitor.show_step(StepMetrics(step=step, total_steps=3, epoch=0.0, loss=1.0, learning_rate=0.0,
                                      memory_allocated=allocated * 2**20,
                                      memory_reserved=None if reserved is None else reserved * 2**20))
    monitor.memory_plot.redraw()
    return monitor


def _legend(plot: LivePlot) -> list[str]:
    return [label.text for _sample, label in plot.plot_item.legend.items]


def test_memory_in_use_is_not_hidden_by_memory_reserved_where_they_are_the_same(qtbot):
    monitor = _memory_run(qtbot, "cuda:0", [(1, 500, 500), (2, 600, 600), (3, 700, 700)])
    allocated = monitor.memory_plot.plot_item.listDataItems()[0]
    assert _legend(monitor.memory_plot) == ["allocated", "reserved"]
    assert pixels_of(monitor.memory_plot.plot_widget.grab().toImage(), allocated.opts["pen"].color()) > 100


def test_a_cpu_run_shows_one_memory_curve_named_for_what_it_measures(qtbot):
    monitor = _memory_run(qtbot, "cpu", [(1, 500, None), (2, 600, None)])
    assert monitor.memory_plot.plot_item.titleLabel.text == "Memory (whole process)"
    assert _legend(monitor.memory_plot) == ["in use"]
    allocated, reserved = monitor.memory_plot.plot_item.listDataItems()
    assert allocated.isVisible() and not reserved.isVisible()
    monitor.set_memory_title("cuda:0")  # the next run on a GPU: both again
    assert _legend(monitor.memory_plot) == ["allocated", "reserved"] and reserved.isVisible()


def test_the_log_keeps_its_newest_line_in_view_unless_the_user_scrolled_up(qtbot):
    monitor = RunMonitor()
    qtbot.addWidget(monitor)
    monitor.resize(1000, 900)
    monitor.show()
    qtbot.waitExposed(monitor)
    for line in range(6):
        monitor.log(f"line {line}")
    bar = monitor.log_view.verticalScrollBar()
    monitor.resize(500, 300)  # a narrow window: the plots stack and the log gets a few lines' room
    qtbot.waitUntil(lambda: bar.maximum() > 0)
    assert bar.value() == bar.maximum()  # the newest line, not the first ones
    monitor.log("line 6")
    assert bar.value() == bar.maximum()

    bar.setValue(0)  # the user scrolls up to read
    monitor.log("line 7")
    assert bar.value() == 0
