"""A preference run's own curves, beside its loss: the rewards of the chosen and rejected answers
with their margin, and the preference accuracy. The Train page's monitor draws them live from
each step's metrics; the run viewer draws a finished run's from its events."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget

from engine.jobs.history import Curve, RunCurves
from engine.run.events import StepMetrics
from studio.widgets.live_plot import LivePlot

REWARD_HELP = ("Preference runs: how much more likely the model being trained makes each answer than the model it "
               "started from (times beta), averaged over the pairs of the logged steps. Chosen should rise above "
               "rejected: the margin (chosen minus rejected) should grow. Both may fall together; the gap between "
               "them is what the run learns.")
ACCURACY_HELP = ("Preference runs: the share of pairs whose chosen answer the model now scores above the rejected "
                 "one. 50% is a coin toss; it should climb towards 100% as the run learns your preferences.")
# The reward plot's curves, by the StepMetrics field each shows; the accuracy has a plot of its own
# (a share, on an axis from 0 to 100%, where the rewards' axis follows their values).
REWARD_CURVES = {"rewards_chosen": "chosen", "rewards_rejected": "rejected", "reward_margin": "margin"}
ACCURACY = "reward_accuracy"


class PreferencePlots(QSplitter):
    """The rewards plot and the accuracy plot, side by side (or stacked, as the owner says)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        # Redrawn apart from each other and from the loss and memory plots (50 and 90 ms): one plot
        # per repaint keeps the window answering during a run.
        # The legend bottom left: the curves start together at 0 and part from there, the margin
        # climbing to the top right, where the other plots keep their legends; the rejected
        # answers' falling curve may pass under it.
        self.reward_plot = LivePlot(tuple(REWARD_CURVES.values()), x_label="step", y_label="reward",
                                    title="Rewards", redraw_ms=70, legend_offset=(10, -10), legend_shade=True)
        self.accuracy_plot = LivePlot(("accuracy",), x_label="step", y_label="pairs ranked right (%)",
                                      title="Preference accuracy", redraw_ms=110)
        self._cover_shares()
        self.reward_plot.setToolTip(REWARD_HELP)
        self.accuracy_plot.setToolTip(ACCURACY_HELP)
        self.addWidget(self.reward_plot)
        self.addWidget(self.accuracy_plot)

    @property
    def plots(self) -> tuple[LivePlot, LivePlot]:
        return self.reward_plot, self.accuracy_plot

    def append(self, event: StepMetrics) -> bool:
        """Store a step's preference metrics for the next redraw; False for a step that has none (SFT)."""
        drawn = False
        for field, name in REWARD_CURVES.items():
            value = getattr(event, field)
            if value is not None:
                self.reward_plot.append(event.step, value, name)
                drawn = True
        if event.reward_accuracy is not None:
            self.accuracy_plot.append(event.step, 100.0 * event.reward_accuracy)
            drawn = True
        return drawn

    def set_curves(self, curves: RunCurves, until: Optional[int] = None) -> bool:
        """Draw a run's curves read from its events (up to step ``until``); False when it has none."""
        drawn = False
        accuracy = curves.rewards.get(ACCURACY, Curve())
        for plot, name, curve in (
                *((self.reward_plot, name, curves.rewards.get(field, Curve())) for field, name in REWARD_CURVES.items()),
                (self.accuracy_plot, "accuracy", Curve(accuracy.steps, [100.0 * v for v in accuracy.values]))):
            kept = [(step, value) for step, value in zip(curve.steps, curve.values) if until is None or step <= until]
            if kept:
                plot.set_points([step for step, _ in kept], [value for _, value in kept], name)
                drawn = True
        return drawn

    def redraw(self) -> None:
        for plot in self.plots:
            plot.redraw()

    def clear(self) -> None:
        for plot in self.plots:
            plot.clear()
        self._cover_shares()  # clearing forgets what the axes cover

    def _cover_shares(self) -> None:
        # 0 to 100% whatever the values: where the accuracy stands reads at a glance.
        self.accuracy_plot.cover_y(0, 100)
