"""How many frames a second the live plot draws with 100,000 points per curve.

A frame is what the Train page does ten to twenty times a second during a long run: new
points arrive on two curves, the plot hands them to pyqtgraph and the widget repaints. The
baseline, measured in the same run on the same data, is a stock ``pg.PlotWidget`` fed the
same way without peak downsampling and clip-to-view. Target: 20 frames a second or more.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/plot_fps.py [--points 100000] [--seconds 3]

The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TARGET_FPS = 20.0
NEW_POINTS_PER_FRAME = 50


def _loss(steps):
    import numpy as np

    rng = np.random.default_rng(0)
    return 2.0 / np.sqrt(steps) + 0.05 * rng.standard_normal(len(steps))


def studio_fps(points: int, seconds: float) -> float:
    from studio.widgets.live_plot import LivePlot

    plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss", title="Training loss")
    plot.resize(900, 500)
    plot.show()
    steps = range(1, points + 1)
    for step, loss in zip(steps, _loss(steps)):
        plot.append(step, loss)
        plot.append(step, loss + 0.1, "eval loss")
    next_step = points + 1

    def frame() -> None:
        nonlocal next_step
        for _ in range(NEW_POINTS_PER_FRAME):
            plot.append(next_step, 0.1)
            plot.append(next_step, 0.2, "eval loss")
            next_step += 1
        plot.redraw()
        plot.plot_widget.grab()

    fps = _frames_per_second(frame, seconds)
    assert plot.point_count() >= points
    plot.close()
    return fps


def baseline_fps(points: int, seconds: float) -> float:
    import numpy as np
    import pyqtgraph as pg

    widget = pg.PlotWidget(title="Training loss")
    widget.resize(900, 500)
    widget.show()
    x = np.arange(1, points + 1, dtype=float)
    train, evaluation = widget.plot(pen="b", antialias=True), widget.plot(pen="r", antialias=True)
    ys = [_loss(x), _loss(x) + 0.1]

    def frame() -> None:
        nonlocal x
        x = np.concatenate([x, x[-1] + np.arange(1, NEW_POINTS_PER_FRAME + 1)])
        for index, item in enumerate((train, evaluation)):
            ys[index] = np.concatenate([ys[index], np.full(NEW_POINTS_PER_FRAME, 0.1 * (index + 1))])
            item.setData(x, ys[index])
        widget.grab()

    fps = _frames_per_second(frame, seconds)
    widget.close()
    return fps


def _frames_per_second(frame, seconds: float) -> float:
    frame()  # the first frame builds caches; it is not what a user watches for minutes
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        frame()
        frames += 1
    return frames / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000, help="points per curve (two curves)")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long to draw each plot")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ours = studio_fps(args.points, args.seconds)
    baseline = baseline_fps(args.points, args.seconds)
    app.processEvents()
    print(f"live plot, {args.points:,} points on each of two curves: {ours:.1f} frames/s "
          f"({1000 / ours:.1f} ms a frame; target {TARGET_FPS:.0f}+ frames/s)")
    print(f"baseline, stock PlotWidget without downsampling or clipping: {baseline:.1f} frames/s")
    print(f"points={args.points} fps={ours:.1f} baseline_fps={baseline:.1f} speedup={ours / baseline:.1f} "
          f"target_fps={TARGET_FPS:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
