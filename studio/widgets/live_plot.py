"""A plot for curves that grow while you watch, after pyqtgraph's scrolling-plot example.

``append`` only stores the point in a preallocated numpy buffer (doubled when full);
a timer redraws at most twenty times a second, with one ``setData`` per curve that
changed. ``setData`` reprocesses the whole array, so calling it per event would
make a long run slower the longer it goes. Drawing keeps up with 100,000 points per
curve because only what is in view is drawn (clip to view), reduced to the lowest and
highest value per pixel column (peak downsampling); ``bench/plot_fps.py`` measures it.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from studio import theme

_INITIAL_CAPACITY = 256


class _Series:
    """The points of one curve: numpy buffers with spare room, and the count in use."""

    def __init__(self, item: pg.PlotDataItem) -> None:
        self.item = item
        self.x = np.empty(_INITIAL_CAPACITY)
        self.y = np.empty(_INITIAL_CAPACITY)
        self.count = 0
        self.dirty = False

    def append(self, x: float, y: float) -> None:
        if self.count == len(self.x):
            capacity = max(_INITIAL_CAPACITY, 2 * len(self.x))
            self.x = np.resize(self.x, capacity)
            self.y = np.resize(self.y, capacity)
        self.x[self.count] = x
        self.y[self.count] = y
        self.count += 1
        self.dirty = True

    def draw(self) -> None:
        # Views, not copies: setData keeps a reference, and the buffer only grows past count.
        self.item.setData(self.x[: self.count], self.y[: self.count])
        self.dirty = False
        self.mark_a_lone_point()

    def mark_a_lone_point(self) -> None:
        """A dot while the curve has one point (a run's first step, its first evaluation): a line
        needs two points, so one alone drew nothing. Only then: a dot per point slows long curves."""
        lone = self.count == 1
        if lone != (self.item.opts["symbol"] is not None):
            self.item.setSymbol("o" if lone else None)


class _SteppedViewBox(pg.ViewBox):
    """Auto-range in steps: the view starts at the data's bounds; when the data pass a side of it,
    that side moves a quarter of the data's span past them; the view shrinks only once the data
    fill less than half of it.

    pyqtgraph's own auto-range fits the data exactly, so every new point moved the axes, and
    each move draws their ticks, labels and grid again from scratch: two thirds of a redraw.
    Here most new points leave the axes as they were. A user's zoom or pan turns auto-range
    off as in any pyqtgraph plot; its "A" button turns it back on.

    A side can also be given a span the view always covers (``cover``): a run's x axis spans
    its steps from the start, so it does not move at all as the curve grows."""

    _MARGIN = 0.25
    _SHRINK_BELOW = 0.5
    _SLACK = 0.005

    def __init__(self) -> None:
        super().__init__()
        self._held: list[Optional[tuple[float, float]]] = [None, None]
        self._covered: list[Optional[tuple[float, float]]] = [None, None]

    def forget_range(self) -> None:
        self._held = [None, None]
        self._covered = [None, None]

    def cover(self, axis: int, low: float, high: float) -> None:
        self._covered[axis] = (low, high)

    def childrenBounds(self, frac=None, orthoRange=(None, None), items=None):  # noqa: N802 (pyqtgraph's name)
        bounds = super().childrenBounds(frac=frac, orthoRange=orthoRange, items=items)
        return [self._stepped(axis, self._covering(axis, span)) for axis, span in enumerate(bounds)]

    def _covering(self, axis: int, span: Optional[list]) -> Optional[list]:
        covered = self._covered[axis]
        if covered is None:
            return span
        if span is None:
            return list(covered)
        return [min(float(span[0]), covered[0]), max(float(span[1]), covered[1])]

    def _stepped(self, axis: int, span: Optional[list]) -> Optional[list]:
        if span is None or not (span[1] > span[0]):
            return span  # nothing, or a single value: pyqtgraph centres it
        low, high = float(span[0]), float(span[1])
        held, margin = self._held[axis], self._MARGIN * (high - low)
        if held is None or (high - low) < self._SHRINK_BELOW * (held[1] - held[0]):
            held = (low, high)
        else:  # only a side the data passed moves, and then past them by the margin
            # (pyqtgraph widens the data's bounds by the pen's width: a point on the very edge of
            # the held range, a covered run's last step, is not one that passed it)
            slack = self._SLACK * (held[1] - held[0])
            held = (low - margin if low < held[0] - slack else held[0],
                    high + margin if high > held[1] + slack else held[1])
        self._held[axis] = held
        return [held[0], held[1]]


class LivePlot(QWidget):
    """One or more named curves against a shared x axis, redrawn on a timer.

    It wraps a ``pg.PlotWidget`` rather than subclassing it: PlotWidget copies its
    PlotItem's methods (``clear`` among them) onto each instance, which would hide ours.
    Its colours follow the light or dark scheme (``studio.theme``).
    """

    def __init__(
        self,
        curves: Sequence[str],
        *,
        x_label: str,
        y_label: str,
        title: str = "",
        parent: Optional[QWidget] = None,
        redraw_ms: int = 50,
        legend_offset: tuple[int, int] = (-10, 10),
        legend_shade: bool = False,
    ) -> None:
        super().__init__(parent)
        self._legend_shade = legend_shade
        self._view = _SteppedViewBox()
        self.plot_widget = pg.PlotWidget(viewBox=self._view)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot_widget)
        plot = self.plot_item = self.plot_widget.getPlotItem()
        if title:
            plot.setTitle(title)
        plot.setLabel("bottom", x_label)
        plot.setLabel("left", y_label)
        plot.showGrid(x=True, y=True, alpha=0.25)
        # Room from the start for labels as long as "0000.0" (a loss to the thousandth, memory in MB
        # up to tens of GB): the first points would otherwise widen the axis and lay out the plot
        # again in the same repaint.
        plot.getAxis("left").textWidth = self.plot_widget.fontMetrics().horizontalAdvance("0000.0")
        for axis in ("left", "bottom"):
            # Ticks, labels and grid at two levels, not three: the third is barely visible and drawing
            # it made every redraw a third slower, a stall of the window during a run on a busy CPU.
            # The axis makes room for longer labels but does not give it back: a change of its width
            # lays the whole plot out and draws it again, which shorter labels made happen mid-run.
            plot.getAxis(axis).setStyle(maxTickLevel=1, autoReduceTextSpace=False)
            # The labels name their units: no "(x1e+03)" prefix recomputed, as HTML, at every range change.
            plot.getAxis(axis).enableAutoSIPrefix(False)
        plot.setDownsampling(auto=True, mode="peak")
        plot.setClipToView(True)
        if len(curves) > 1:
            # Top right by default (a falling loss leaves it empty); a negative x counts from the right.
            plot.addLegend(offset=legend_offset)
        # Two values (lowest, highest) per pixel column are all a line can show.
        self._series: dict[str, _Series] = {
            name: _Series(plot.plot(name=name, antialias=True, autoDownsampleFactor=1.0, symbol=None,
                                    symbolSize=6))
            for name in curves
        }
        self._first = curves[0]
        self._labels = {name: name for name in curves}  # the curves shown, and their names in the legend
        for depth, series in enumerate(self._series.values()):
            # The first curve is the main one: drawn over the others where they meet, never hidden by them.
            series.item.setZValue(len(curves) - depth)
        # One reference line, made here hidden and later moved: adding an item to a plot at a
        # run's start laid the plot out again in the same repaint as the run's first points.
        # Its label hangs below the line: a prediction above the curves sits at the top of the view,
        # where a label above the line was cut off.
        self._reference = pg.InfiniteLine(angle=0, labelOpts={"position": 0.05, "anchors": [(0, 0), (0, 0)]},
                                          label="")
        self._reference.hide()
        plot.addItem(self._reference)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(redraw_ms)
        self._timer.timeout.connect(self.redraw)
        theme.style_plot(self.plot_widget)
        self._colour_curves(theme.colours())
        theme.on_change(self._colour_curves)
        self._keep_room_for_the_plot()

    def set_title(self, title: str) -> None:
        """Change the title, in the scheme's text colour."""
        if title == self.plot_item.titleLabel.text:
            return  # a new title lays the whole plot out again
        self.plot_item.setTitle(title, color=theme.colours().text)
        self._keep_room_for_the_plot()

    def _keep_room_for_the_plot(self) -> None:
        # pyqtgraph lays out its axes and title at no less than their own minimum width, and
        # past the widget's right edge if it is narrower: the layouts holding the plot must know.
        needed = self.plot_item.effectiveSizeHint(Qt.SizeHint.MinimumSize)
        self.setMinimumWidth(math.ceil(needed.width()) + 2 * self.plot_widget.frameWidth())

    def append(self, x: float, y: float, curve: Optional[str] = None) -> None:
        """Store a point on ``curve`` (the first curve when omitted); the next tick draws it."""
        self._series[curve or self._first].append(x, y)
        if not self._timer.isActive():
            self._timer.start()

    def set_points(self, x: Sequence[float], y: Sequence[float], curve: Optional[str] = None) -> None:
        """Replace ``curve``'s points all at once (a finished run's history) and draw them now."""
        series = self._series[curve or self._first]
        series.x = np.array(x, dtype=float)
        series.y = np.array(y, dtype=float)
        series.count = len(series.x)
        series.draw()

    def redraw(self) -> None:
        """Draw whatever changed since the last redraw, now."""
        self._timer.stop()
        for series in self._series.values():
            if series.dirty:
                series.draw()

    def cover_x(self, low: float, high: float) -> None:
        """Keep ``low``..``high`` in view along x until ``clear`` (a run's steps, known at its
        start): the x axis then stays put while the curve grows across it."""
        self._view.cover(0, low, high)
        self._view.updateAutoRange()

    def cover_y(self, low: float, high: float) -> None:
        """Keep ``low``..``high`` in view along y (a share from 0 to 100%): the axis then says at a
        glance where the curve stands, and moves only if a value falls outside."""
        self._view.cover(1, low, high)
        self._view.updateAutoRange()

    def point_count(self, curve: Optional[str] = None) -> int:
        """How many points ``curve`` has handed to pyqtgraph (stored points wait for the next tick)."""
        x_data, _y_data = self._series[curve or self._first].item.getOriginalDataset()
        return 0 if x_data is None else len(x_data)

    def label_curves(self, labels: dict[str, str]) -> None:
        """Show only the curves in ``labels``, each under its label in the legend (a device that
        measures fewer things than another: a CPU has no "reserved" memory apart from what is in use)."""
        if labels == self._labels:
            return  # a legend changed lays the plot out again
        self._labels = dict(labels)
        legend = self.plot_item.legend
        for name, series in self._series.items():
            series.item.setVisible(name in labels)
            if legend is not None:
                legend.removeItem(series.item)
        if legend is not None:
            for name, series in self._series.items():
                if name in labels:
                    legend.addItem(series.item, labels[name])

    def set_reference(self, value: Optional[float], label: str = "") -> None:
        """A dashed horizontal line at ``value`` (a prediction to read the curves against); None hides it."""
        if value is None:
            self._reference.hide()
            return
        self._reference.show()  # first: a hidden line's label ignores a new text
        self._reference.setValue(value)
        self._reference.label.setFormat(label)

    @property
    def reference(self) -> Optional[float]:
        return float(self._reference.value()) if self._reference.isVisible() else None

    def clear(self) -> None:
        """Forget every point, keeping the curves, labels and legend."""
        self._timer.stop()
        self._view.forget_range()
        for series in self._series.values():
            series.count = 0
            series.dirty = False
            series.item.setData([], [])
            series.mark_a_lone_point()

    def _colour_curves(self, colours: theme.Colours) -> None:
        for index, series in enumerate(self._series.values()):
            # One pixel wide: antialiased wider lines take ten times longer to draw.
            colour = colours.curves[index % len(colours.curves)]
            series.item.setPen(pg.mkPen(colour, width=1))
            series.item.setSymbolPen(pg.mkPen(colour))
            series.item.setSymbolBrush(pg.mkBrush(colour))
        legend = self.plot_item.legend
        if legend is not None and self._legend_shade:
            # Where curves cross the legend: the plot's background, a little see-through, behind the
            # names, so that a curve passing under it neither hides them nor vanishes.
            shade = QColor(colours.plot_background)
            shade.setAlpha(200)
            legend.setBrush(pg.mkBrush(shade))
        # Muted reads on light and dark alike.
        self._reference.setPen(pg.mkPen(colours.muted, width=1.5, style=Qt.PenStyle.DashLine))
        self._reference.label.setColor(colours.muted)
