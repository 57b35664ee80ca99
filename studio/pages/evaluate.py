"""Evaluate: did fine-tuning work? Candidates (the base model, adapters, checkpoints) answer the same
evaluation set, and the answers are scored; the scoreboard compares them, and the example
browser shows each answer beside the others.

The evaluation runs in one ``BackgroundTask`` (``engine.eval.runner.evaluate``): it reads the set,
checks the candidates, loads the base model once and swaps each adapter in. Stop sets the task's
cancel event, which is the runner's stop event; the runner ends within a batch and nothing it
computed is kept. Closing the window cancels every task the same way (``workers.shutdown_all``).

A finished evaluation's results document goes to ``_finished``, where everything the page does
with it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.errors import StudioError
from studio import theme
from studio.widgets.eval_browser import ExampleBrowser
from studio.widgets.eval_progress import EvalProgress
from studio.widgets.eval_scoreboard import Scoreboard
from studio.widgets.eval_setup import EvalSetup
from studio.widgets.pickers import ModelPicker
from studio.widgets.trust_dialog import confirm_model_code
from studio.workers import TaskReporter, TaskSlot

if TYPE_CHECKING:
    from engine.eval.request import EvalRequest

_SETUP_WIDTH = 300


def run_evaluation(request: "EvalRequest", reporter: TaskReporter) -> Optional[dict[str, Any]]:
    """The results document of ``request`` (on the worker thread), kept with the evaluated adapters;
    None when the user stopped it (nothing is kept)."""
    from engine.eval.request import run_request
    from engine.eval.runner import EvalStopped

    try:
        document, _stored = run_request(request, progress=reporter.progress, stop_event=reporter.cancel_event)
    except EvalStopped:
        return None
    return document


class EvaluatePage(QWidget):
    """Choose candidates, a set and metrics; run; compare on the scoreboard and in the examples."""

    evaluationEnded = Signal(str)  # "finished", "stopped" or "failed", once the page shows the outcome
    reportWritten = Signal(str)  # the report's path

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._task = TaskSlot(self._update_controls)
        self._report_task = TaskSlot(self._update_controls)
        self._document: Optional[dict[str, Any]] = None
        self._stopping = False
        self._build()
        self.refresh()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.model_picker = ModelPicker(self)
        self.model_picker.setAccessibleName("Model")
        self.model_picker.set_about("The base model: every candidate answers on it (an adapter on top of it).")
        self.run_button = QPushButton("Run", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setToolTip("Stop the evaluation now; nothing it computed is kept")
        self.save_results_button = QPushButton("Save results…", self)
        self.save_results_button.setToolTip("Save the last evaluation's results (every answer and score) as JSON")
        self.report_button = QPushButton("Report…", self)
        self.report_button.setToolTip("Write the comparison report (HTML or Markdown: the table, the plot of "
                                      "quality against training memory, examples) and open it")
        self.progress = EvalProgress(self)
        self.message_label = QLabel(self)
        self.message_label.setAccessibleName("Message")
        self.message_label.setWordWrap(True)
        self.message_label.hide()
        self.setup = EvalSetup(self)
        self.candidates_list = self.setup.candidates_list  # what the first-run guide points at
        self.scoreboard = Scoreboard(self)
        self.browser = ExampleBrowser(self)

        model_label = QLabel("&Model:", self)
        model_label.setBuddy(self.model_picker)
        top = QHBoxLayout()
        top.addWidget(model_label)
        top.addWidget(self.model_picker, 1)
        top.addWidget(self.run_button)
        top.addWidget(self.stop_button)
        self.result_actions = QHBoxLayout()
        self.result_actions.addWidget(self.save_results_button)
        self.result_actions.addWidget(self.report_button)
        top.addLayout(self.result_actions)

        scroll = QScrollArea(self)
        scroll.setWidget(self.setup)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFixedWidth(_SETUP_WIDTH)
        results = QSplitter(Qt.Orientation.Vertical, self)
        results.addWidget(self.scoreboard)
        results.addWidget(self.browser)
        results.setStretchFactor(1, 1)
        results.setSizes([160, 400])
        right = QVBoxLayout()
        right.addWidget(self.progress)
        right.addWidget(self.message_label)
        right.addWidget(results, 1)
        body = QHBoxLayout()
        body.addWidget(scroll)
        body.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(body, 1)

        self.model_picker.currentIndexChanged.connect(self._model_moved)
        self.setup.changed.connect(self._update_controls)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.save_results_button.clicked.connect(self._save_results_dialog)
        self.report_button.clicked.connect(self._report_dialog)

    # ------------------------------------------------------------------ api
    @property
    def busy(self) -> bool:
        return self._task.busy

    @property
    def document(self) -> Optional[dict[str, Any]]:
        """The results document of the last evaluation that finished (None before one has)."""
        return self._document

    def refresh(self) -> None:
        """Re-read the models, the adapter library, the runs' checkpoints and held-out rows."""
        self.model_picker.refresh()
        self.setup.refresh(self.model_picker.current_ref())

    def offer_dataset(self, path: str, options: dict[str, Any]) -> None:
        """The dataset open on the Data page (``options``: its format, columns and text split)."""
        if path:
            self.setup.offer_dataset(path, options)

    def run(self) -> None:
        """Evaluate what is chosen, on a worker thread."""
        if self.busy or self.setup.missing() is not None:
            return
        request = self.setup.request()
        problem = _answer_regex_problem(request.answer_regex)
        if problem is not None:
            self._say(problem, error=True)
            return
        if not confirm_model_code(self, request.model):
            return
        self._say("")
        self._stopping = False
        self.progress.begin()
        self._task.start(lambda reporter: run_evaluation(request, reporter), self._ended, self._failed,
                         on_progress=self.progress.report)
        self._update_controls()

    def stop(self) -> None:
        """End the running evaluation within a batch; nothing it computed is kept."""
        if self.busy:
            self._stopping = True
            self._task.cancel()
            self.progress.step_label.setText("Stopping…")
            self._update_controls()

    def save_results_to(self, path: str) -> Optional[Path]:
        """Write the last results document as JSON to ``path``; None when it could not be (said on the page)."""
        from engine.core.atomic import write_json

        if self._document is None:
            return None
        try:
            write_json(Path(path), self._document)
        except (OSError, StudioError) as exc:
            self._say(f"Could not save the results: {exc}", error=True)
            return None
        self._say(f"Saved the results to {path}")
        return Path(path)

    def write_report_to(self, path: str, *, open_it: bool = True) -> None:
        """Write the last evaluation's comparison report to ``path`` (.html or .md) on a worker (the
        training costs come from the runs' event files), then open it; a failure is said on the page."""
        from engine.eval.report import write_report

        if self._document is None or self._report_task.busy:
            return
        document = self._document

        def written(output: Path) -> None:
            self._say(f"Wrote the report to {output}")
            self.reportWritten.emit(str(output))
            if open_it:
                QDesktopServices.openUrl(QUrl.fromLocalFile(str(output)))

        self._report_task.start(lambda _reporter: write_report([document], Path(path)), written,
                                lambda message: self._say(f"Could not write the report: {message}", error=True))
        self._update_controls()

    # ------------------------------------------------------------------ outcomes
    def _ended(self, document: Optional[dict[str, Any]]) -> None:
        if document is None:
            self.progress.idle("stopped")
            self._say("Stopped: nothing was kept.")
        else:
            self._finished(document)
        self._update_controls()  # the task has ended: the controls come back before anyone is told
        self.evaluationEnded.emit("stopped" if document is None else "finished")

    def _finished(self, document: dict[str, Any]) -> None:
        """A finished evaluation: its document shown on the scoreboard and in the example browser."""
        self._document = document
        self.scoreboard.show_document(document)
        self.browser.show_document(document)
        where = document["set"]
        self.progress.idle(f"finished in {document.get('seconds', 0):.0f} s")
        summary = (f"{len(document['candidates'])} candidates on {where['examples']} examples of {where['name']}.")
        notes = " ".join(f"Note: {note}" for note in document.get("notes") or [])
        self._say(f"{summary} {notes}".strip())

    def _failed(self, message: str) -> None:
        self.progress.idle("not run" if self._document is None else "the last results are kept")
        self._say(message, error=True)
        self._update_controls()
        self.evaluationEnded.emit("failed")

    def _say(self, text: str, *, error: bool = False) -> None:
        """One line under the progress bar: an error in red, else a note; empty hides it."""
        self.message_label.setText(text)
        self.message_label.setStyleSheet(f"color: {theme.colours().error};" if error else "")
        self.message_label.setVisible(bool(text))

    # ------------------------------------------------------------------ controls
    def _model_moved(self, _index: int) -> None:
        self.setup.refresh(self.model_picker.current_ref())  # checkpoints are listed for the picked model

    def _update_controls(self) -> None:
        idle = not self.busy
        missing = self.setup.missing()
        self.model_picker.setEnabled(idle)
        self.setup.setEnabled(idle)
        self.run_button.setEnabled(idle and missing is None)
        self.run_button.setToolTip(missing or "Evaluate every candidate on the set with the checked metrics")
        self.stop_button.setEnabled(not idle and not self._stopping)
        self.save_results_button.setEnabled(idle and self._document is not None)
        self.report_button.setEnabled(idle and self._document is not None and not self._report_task.busy)

    def _save_results_dialog(self) -> None:
        if self._document is None:
            return
        start = Path.home() / f"{Path(self._document['set']['name']).stem or 'evaluation'}-results.json"
        path, _chosen = QFileDialog.getSaveFileName(self, "Save the results", str(start), "JSON (*.json)")
        if path:
            self.save_results_to(path if Path(path).suffix else path + ".json")


    def _report_dialog(self) -> None:
        if self._document is None:
            return
        start = Path.home() / f"{Path(self._document['set']['name']).stem or 'evaluation'}-report.html"
        path, _chosen = QFileDialog.getSaveFileName(self, "Write the report", str(start),
                                                    "HTML (*.html);;Markdown (*.md)")
        if path:
            self.write_report_to(path if Path(path).suffix else path + ".html")


def _answer_regex_problem(regex: Optional[str]) -> Optional[str]:
    """Why the answer regex cannot be used (it does not compile); None when it can. Checked here,
    before anything runs, because it costs nothing."""
    from engine.eval.metrics import answer_pattern

    if not regex:
        return None
    try:
        answer_pattern(regex)
    except StudioError as exc:
        return str(exc)
    return None
