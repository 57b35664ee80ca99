"""The Train page's run monitor: the progress bar and its text, the loss and memory plots, and
the log. It only draws what the run's events say; the page decides when."""

from __future__ import annotations

import html
from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QSplitter, QVBoxLayout,
                               QWidget)

from engine.core.choices import RunStatus
from engine.jobs.history import RunCurves
from engine.run.events import RunFinished, RunStarted, StepMetrics
from studio.widgets.live_plot import LivePlot
from studio.widgets.preference_plots import PreferencePlots

_MB = 1024 * 1024
_PLOT_WIDTH = 280  # a comfortable width for one plot
_LEVEL_COLOURS = {"error": "#c0392b", "warning": "#b9770e"}


def _eta(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour up."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


PROGRESS_HELP = ("Training steps done of the run's total (each step learns from one batch, times the accumulation). "
                 "ETA: the time left at the speed of the last steps.")
LOSS_HELP = ("How far the model's guesses of your data's next words are from the real ones: lower is better, and it "
             "should fall. Train loss: on the batches it learns from. Eval loss: on validation rows it never "
             "learns from; when it rises while the train loss falls, the model is memorising your rows.")
MEMORY_HELP = ("The memory the run takes at each step, in MB. Allocated: what the model, its gradients and the "
               "optimizer hold. Reserved: what PyTorch has taken from the device, allocated plus room it keeps "
               "to reuse. The dashed line, predicted peak, is the Memory panel's estimate for the run.")


def memory_title(device: str) -> str:
    # On a CPU nothing separates tensors from the rest of the process: say what is measured.
    return "Memory (whole process)" if device == "cpu" else f"Memory on {device}"


def memory_curves(device: str) -> dict[str, str]:
    """The memory plot's curves on ``device`` and their names in its legend: a CPU measures one
    thing (engine.hardware.memory_in_use), an accelerator both what tensors use and what PyTorch holds."""
    return {"allocated": "in use"} if device == "cpu" else {"allocated": "allocated", "reserved": "reserved"}


class RunMonitor(QWidget):
    """Progress, the loss and memory plots, and the log of one run."""

    progressChanged = Signal(str)  # "step N / M · ETA m:ss", for the status bar

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._total_steps = 0
        self._first_step = 0
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.progress_bar.setAccessibleName("Training progress")
        self.loss_plot = LivePlot(("train loss", "eval loss"), x_label="step", y_label="loss", title="Loss")
        # A step's points reach both plots at once: redrawing the second 40 ms after the first keeps
        # each repaint of the window to one plot, half the time the window cannot answer.
        self.memory_plot = LivePlot(("allocated", "reserved"), x_label="step", y_label="memory (MB)",
                                    title="Memory", redraw_ms=90)
        # A preference run's rewards and accuracy, under the loss and memory: for those runs only.
        self.preference_plots = PreferencePlots()
        self.reward_plot, self.accuracy_plot = self.preference_plots.plots
        self.preference_plots.hide()
        self.progress_bar.setToolTip(PROGRESS_HELP)
        # The finished-run notice: how the run ended and, once the run has evaluated itself, the
        # change against the base ("ROUGE-L 0.21 → 0.58 on 30 held-out rows").
        self.notice = QLabel()
        self.notice.setWordWrap(True)
        self.notice.setAccessibleName("Run result")
        self.notice.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.notice.setStyleSheet("font-weight: 600;")
        self.notice.hide()
        self.stop_evaluation_button = QPushButton("Stop evaluating")
        self.stop_evaluation_button.setToolTip("Stop scoring the adapter against the base: the run and its "
                                               "adapter stay as they are")
        self.stop_evaluation_button.hide()
        self._finished_text = ""
        self.loss_plot.setToolTip(LOSS_HELP)
        self.memory_plot.setToolTip(MEMORY_HELP)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setAccessibleName("Training log")
        # The log follows its newest line, unless the user scrolled up to read: through new lines and
        # through the view getting smaller (the plots stacking in a narrow window), where a text
        # view on its own keeps its top line and the newest ones drop out of sight.
        self._follow_log = True
        bar = self.log_view.verticalScrollBar()
        bar.valueChanged.connect(lambda value: setattr(self, "_follow_log", value >= bar.maximum()))
        bar.rangeChanged.connect(lambda _low, high: bar.setValue(high) if self._follow_log else None)

        self.plots = plots = QSplitter(Qt.Orientation.Horizontal)
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.memory_plot)
        log_box = QWidget()
        log_layout = QVBoxLayout(log_box)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_label = QLabel("Log")
        log_label.setBuddy(self.log_view)
        log_layout.addWidget(log_label)
        log_layout.addWidget(self.log_view)
        self.monitor_split = QSplitter(Qt.Orientation.Vertical)
        self.monitor_split.addWidget(plots)
        self.monitor_split.addWidget(self.preference_plots)
        self.monitor_split.addWidget(log_box)
        self.monitor_split.setStretchFactor(0, 3)
        self.monitor_split.setStretchFactor(1, 3)
        self.monitor_split.setStretchFactor(2, 2)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        progress_label = QLabel("Progress")
        progress_label.setBuddy(self.progress_bar)
        progress_row = QHBoxLayout()
        progress_row.addWidget(progress_label)
        progress_row.addWidget(self.progress_bar, 1)
        progress_row.addWidget(self.stop_evaluation_button)
        layout.addLayout(progress_row)
        layout.addWidget(self.notice)
        layout.addWidget(self.monitor_split, 1)
        self.reset_progress()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        # Side by side where each plot has room for its axes, title and a readable curve; one
        # above the other in a narrower window (1024 pixels wide, beside the settings).
        wide = event.size().width() >= 2 * _PLOT_WIDTH
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        for plots in (self.plots, self.preference_plots):
            if plots.orientation() != orientation:
                plots.setOrientation(orientation)

    # ------------------------------------------------------------- drawing
    def show_started(self, event: RunStarted) -> None:
        self._total_steps = event.total_steps
        self._first_step = event.resumed_from_step
        self.progress_bar.setRange(0, max(1, event.total_steps))
        self.progress_bar.setValue(event.resumed_from_step)
        self._set_progress_text(event.resumed_from_step, None)
        self.set_memory_title(event.device)
        self._cover_steps()
        self._set_notice("")  # a resumed run's page still shows how its last part ended
        predicted = event.predicted_peak_bytes
        self.memory_plot.set_reference(predicted / _MB if predicted else None, "predicted peak")
        self.log(f"Training on {event.device}: {event.train_examples} examples, {event.total_steps} steps.")

    def show_preference(self, shown: bool) -> None:
        """Show the reward and accuracy plots (a preference run) or hide them (supervised)."""
        self.preference_plots.setVisible(shown)

    def show_step(self, event: StepMetrics) -> None:
        self.loss_plot.append(event.step, event.loss)
        # A run whose settings could not be read shows its reward plots by its metrics.
        if self.preference_plots.append(event) and self.preference_plots.isHidden():
            self.show_preference(True)
        if event.memory_allocated is not None:
            self.memory_plot.append(event.step, event.memory_allocated / _MB, "allocated")
        if event.memory_reserved is not None:
            self.memory_plot.append(event.step, event.memory_reserved / _MB, "reserved")
        if event.total_steps and event.total_steps != self._total_steps:
            self._total_steps = event.total_steps
            self.progress_bar.setRange(0, event.total_steps)
            self._cover_steps()
        self.progress_bar.setValue(min(event.step, self.progress_bar.maximum()))
        done = event.step - self._first_step
        eta = event.elapsed_s / done * (self._total_steps - event.step) if done > 0 else None
        self._set_progress_text(event.step, eta)

    def show_eval(self, step: int, eval_loss: float) -> None:
        self.loss_plot.append(step, eval_loss, "eval loss")
        self.log(f"Eval loss at step {step}: {eval_loss:.4f}")

    def show_finished(self, event: RunFinished) -> None:
        """The run's end in the progress text and the log (a failure's message too)."""
        # The last points now; the memory plot's own timer draws its own in a later repaint.
        self.loss_plot.redraw()
        self.preference_plots.redraw()
        if event.status == RunStatus.COMPLETED:
            self.progress_bar.setValue(self.progress_bar.maximum())
            self.progress_bar.setFormat(f"step {self._total_steps} / {self._total_steps} · done")
            self._set_notice(f"Finished at step {event.step}, final loss {_loss_text(event)}.")
            self.log(self.notice.text())
        elif event.status == RunStatus.STOPPED:
            self.progress_bar.setFormat(f"stopped at step {event.step} / {self._total_steps}")
            self._set_notice(f"Stopped at step {event.step}.")
            self.log(self.notice.text())
        else:
            self.progress_bar.setFormat(f"failed at step {event.step}")
            self.log(f"Training failed: {failure_message(event)}", "error")
        if event.adapter:
            self.log(f"Adapter saved to the library: {event.adapter}")
        if event.model:
            self.log(f"Fine-tuned model saved to the model store: {event.model}")
        self.progressChanged.emit(self.progress_bar.text())

    def show_evaluation_progress(self, done: int, total: int, text: str) -> None:
        """The run's evaluation of itself, in the progress bar the run used ("Evaluating on 4
        held-out rows… 3/8"), with its Stop beside it."""
        if self.stop_evaluation_button.isHidden():
            self._finished_text = self.progress_bar.text()
            self.stop_evaluation_button.setEnabled(True)
            self.stop_evaluation_button.show()
        self.progress_bar.setRange(0, max(1, total))
        self.progress_bar.setValue(min(done, max(1, total)))
        self.progress_bar.setFormat(text)
        self.progressChanged.emit(text)

    def show_evaluation(self, line: str) -> None:
        """The evaluation ended: its line joins the finished-run notice and the log."""
        self.end_evaluation()
        self._set_notice(f"{self.notice.text()} {line}".strip())
        self.log(line)

    def end_evaluation(self) -> None:
        """No evaluation goes on (it ended, or another run starts): the progress bar says the run's end again."""
        if self.stop_evaluation_button.isHidden():
            return
        self.stop_evaluation_button.hide()
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.progress_bar.setFormat(self._finished_text)
        self.progressChanged.emit(self._finished_text)

    def _set_notice(self, text: str) -> None:
        self.notice.setText(text)
        self.notice.setVisible(bool(text))

    def draw_history(self, curves: RunCurves, until: int) -> None:
        """The run's curves so far, up to the checkpoint it goes on from (later steps are redone)."""
        if self.preference_plots.set_curves(curves, until):
            self.show_preference(True)
        for name, curve in (("train loss", curves.loss), ("eval loss", curves.eval_loss)):
            kept = [(step, value) for step, value in zip(curve.steps, curve.values) if step <= until]
            if kept:
                self.loss_plot.set_points([step for step, _ in kept], [value for _, value in kept], name)

    def set_memory_title(self, device: str) -> None:
        """Title and legend the memory plot with what is measured on ``device``."""
        self.memory_plot.set_title(memory_title(device))
        self.memory_plot.label_curves(memory_curves(device))

    def set_status(self, text: str) -> None:
        """A line in the progress bar while no step is counted yet ("starting: loading the model…")."""
        self.progress_bar.setFormat(text)

    def clear(self) -> None:
        self.loss_plot.clear()
        self.memory_plot.clear()
        self.preference_plots.clear()
        self.memory_plot.set_reference(None)
        self.log_view.clear()
        self.reset_progress()

    def reset_progress(self) -> None:
        self._total_steps = 0
        self._first_step = 0
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("no run yet")
        self._set_notice("")
        self.stop_evaluation_button.hide()

    def log(self, message: str, level: str = "info") -> None:
        text = html.escape(message).replace("\n", "<br>")
        colour = _LEVEL_COLOURS.get(level)
        if colour:
            text = f'<span style="color:{colour}">{text}</span>'
        self.log_view.appendHtml(text)

    # -------------------------------------------------------------- helpers
    def _cover_steps(self) -> None:
        # The plots' x axes span the whole run from its start: a moving axis is redrawn from
        # scratch, and the curves' progress across the plot shows how far the run has come.
        for plot in (self.loss_plot, self.memory_plot, *self.preference_plots.plots):
            plot.cover_x(0, max(1, self._total_steps))

    def _set_progress_text(self, step: int, eta_s: Optional[float]) -> None:
        text = f"step {step} / {self._total_steps}"
        text += f" · ETA {_eta(eta_s)}" if eta_s is not None else " · ETA estimating…"
        self.progress_bar.setFormat(text)
        self.progressChanged.emit(text)


def failure_message(event: RunFinished) -> str:
    return event.error or "the training process ended without saying why"


def _loss_text(event: RunFinished) -> str:
    return f"{event.final_loss:.4f}" if event.final_loss is not None else "not recorded"
