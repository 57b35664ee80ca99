"""The Train page's evaluation of a finished run: when a run completes with an adapter, was asked to
evaluate itself and held rows out (``engine.eval.after_run.evaluates_itself``), its adapter and the
base answer those rows on a background task, the progress shows where the run's did, and the
finished-run notice gets the change in one line ("ROUGE-L 0.21 → 0.58 on 30 held-out rows").

The task loads the base model in the studio's own process, as the Chat page does; Stop ends it
after the token being generated, and so does starting another run or closing the window
(``workers.shutdown_all`` cancels every task).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, Signal

from studio.workers import TaskReporter, TaskSlot


class RunEvaluation(QObject):
    """One run's evaluation of itself at a time."""

    progress = Signal(int, int, str)  # done, total (0: not counted yet), "Evaluating on 4 held-out rows… 3/8"
    ended = Signal(str)  # the notice's line: the headline, or why there is none

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._slot = TaskSlot()
        self._stopped = False

    @property
    def running(self) -> bool:
        return self._slot.busy

    def start(self, run_dir: Path, device: str) -> None:
        self._stopped = False
        self._slot.start(lambda reporter: _evaluate(Path(run_dir), device, reporter), self._evaluation_done,
                         self._failed, on_progress=self.progress.emit)

    def stop(self) -> None:
        """The user's Stop: the task ends after the current token, and the notice says it stopped."""
        if self.running:
            self._stopped = True
            self._slot.cancel()

    def abandon(self) -> None:
        """Another run starts: stop the evaluation and say nothing more of it."""
        self._slot.disown()

    def _evaluation_done(self, document: dict[str, Any]) -> None:
        """The run's evaluation of itself ended: the results document is here (UI thread)."""
        from engine.eval.after_run import headline

        line = headline(document)
        self.ended.emit(line or f"Evaluated on {document['set']['examples']} held-out rows: the base and the "
                                "adapter have no score in common to compare")

    def _failed(self, message: str) -> None:
        # Stopping raises EvalStopped on the worker, which arrives here like any failure.
        self.ended.emit("Evaluation stopped: the adapter is saved, unscored" if self._stopped
                        else f"Evaluation failed: {message}")


def _evaluate(run_dir: Path, device: str, reporter: TaskReporter) -> dict[str, Any]:
    """On the worker thread: the run's adapter and its base on the run's held-out rows."""
    from engine.eval.after_run import evaluate_run, rows_to_evaluate

    rows = rows_to_evaluate(run_dir)
    reporter.progress(0, 0, f"Evaluating on {rows} held-out rows: loading the model…")

    def progress(done: int, total: int, _message: str) -> None:
        reporter.progress(done, total, f"Evaluating on {rows} held-out rows… {done}/{total}")

    return evaluate_run(run_dir, progress=progress, stop_event=reporter.cancel_event, device=device)
