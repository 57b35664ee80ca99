"""The scoreboard: a row per candidate of an evaluation, a column per score, sorted by number.

It reads the results document (``engine.eval.runner``): the scores each candidate has, then the
judge's win rate against the base with its 95% interval and the forgetting check's drift, in
columns of their own only when some candidate has them. The best value of each score with a
better direction is in bold.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QWidget

from studio.widgets.column_tips import set_column_tips
from studio.widgets.eval_words import explanation, heading, higher_is_better
from studio.widgets.sort_item import SORT_ROLE, SortItem

CANDIDATE = "Candidate"
# Short headings, whole in their tooltips: with the judge and the forgetting check the table is wide.
JUDGE = "Win rate ↑"
KL = "Forgetting KL ↓"
CHANGED = "Changed ↓"
SPEED = "Answers/s"
COLUMN_HELP = {
    CANDIDATE: "The base model as it is, an adapter from the library or a run's checkpoint, each answering the "
               "same examples.",
    JUDGE: "The judge's win rate: how often the judge model preferred this candidate's answer to the base's, a tie counting half, "
           "with its 95% interval in brackets. Higher is better.",
    KL: "How far this candidate's next-word guesses moved from the base's on general prompts unrelated to "
        "your data (mean KL divergence per token): what the adapter costs elsewhere. Lower is better.",
    CHANGED: "The share of general prompts on which this candidate's greedy answer differs from the base's. "
             "Lower means less forgotten.",
    SPEED: "Answers written per second while this candidate answered the set, in batches.",
}


class ScoreItem(SortItem):
    """A score's cell: sorts by its number (a cell without one, or with nan, sorts first), right aligned."""

    def __init__(self, text: str, number: Optional[float] = None) -> None:
        super().__init__(text, number if number is not None and math.isfinite(number) else None)
        if number is not None:
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def number(self) -> Optional[float]:
        return self.data(SORT_ROLE)


def score_text(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def score_columns(document: dict[str, Any]) -> list[str]:
    """The metrics some candidate has a score for, in the document's order."""
    return [name for name in document["metrics"]
            if any(name in candidate["scores"] for candidate in document["candidates"])]


class Scoreboard(QTableWidget):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Scoreboard")
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().hide()
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setStretchLastSection(True)
        self._set_columns([CANDIDATE], {})
        self.metrics: list[str] = []

    def show_document(self, document: dict[str, Any]) -> None:
        """A row per candidate of ``document``, the base first until the user sorts."""
        self.setSortingEnabled(False)
        self.clearContents()
        self.metrics = score_columns(document)
        candidates = document["candidates"]
        judged = any(candidate.get("judge") for candidate in candidates)
        checked = any(candidate.get("forgetting") for candidate in candidates)
        headers = [CANDIDATE, *(heading(name) for name in self.metrics), *((JUDGE,) if judged else ()),
                   *((KL, CHANGED) if checked else ()), SPEED]
        self._set_columns(headers, {heading(name): explanation(name) for name in self.metrics})
        self.setRowCount(len(candidates))
        for row, candidate in enumerate(candidates):
            cells = [self._candidate_item(candidate)]
            cells += [self._score_item(candidate, name) for name in self.metrics]
            if judged:
                cells.append(_judge_item(candidate.get("judge")))
            if checked:
                cells += _forgetting_items(candidate.get("forgetting"))
            speed = (candidate.get("generation") or {}).get("examples_per_s")
            cells.append(ScoreItem(score_text(speed), speed))
            for column, item in enumerate(cells):
                self.setItem(row, column, item)
        self._bold_the_best()
        # The rows as the document lists them (the base first) until the user sorts them.
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.setSortingEnabled(True)

    def column_of(self, header: str) -> int:
        for column in range(self.columnCount()):
            if self.horizontalHeaderItem(column).text() == header:
                return column
        raise KeyError(header)

    def _set_columns(self, headers: list[str], metric_tips: dict[str, str]) -> None:
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        set_column_tips(self, {**COLUMN_HELP, **metric_tips})

    @staticmethod
    def _candidate_item(candidate: dict[str, Any]) -> ScoreItem:
        item = ScoreItem(candidate["label"])
        item.setToolTip(candidate.get("path") or "The base model, with no adapter")
        return item

    @staticmethod
    def _score_item(candidate: dict[str, Any], name: str) -> ScoreItem:
        value = candidate["scores"].get(name)
        item = ScoreItem(score_text(value), value)
        signature = (candidate.get("signatures") or {}).get(name)
        if name == "answer_length" and value is not None and "answer_tokens" in candidate["scores"]:
            item.setToolTip(f"{value:.1f} words, {candidate['scores']['answer_tokens']:.1f} tokens on average")
        elif signature:
            item.setToolTip(f"sacrebleu signature: {signature}")
        return item

    def _bold_the_best(self) -> None:
        bold = QFont(self.font())
        bold.setBold(True)
        for offset, name in enumerate(self.metrics, start=1):
            better = higher_is_better(name)
            numbers = [self.item(row, offset).number() for row in range(self.rowCount())]
            known = [number for number in numbers if number is not None]
            if better is None or len(set(known)) < 2:
                continue  # nothing to prefer: no direction, or every candidate alike
            best = max(known) if better else min(known)
            for row, number in enumerate(numbers):
                if number == best:
                    self.item(row, offset).setFont(bold)


def _judge_item(judge: Optional[dict[str, Any]]) -> ScoreItem:
    if not judge:
        return ScoreItem("–")
    item = ScoreItem(f"{judge['win_rate']:.0%} [{judge['low']:.0%}, {judge['high']:.0%}]", judge["win_rate"])
    item.setToolTip(f"{judge['wins']} won, {judge['ties']} tied, {judge['losses']} lost of {judge['comparisons']} "
                    f"comparisons by {judge.get('judge') or 'the judge'}")
    return item


def _forgetting_items(forgetting: Optional[dict[str, Any]]) -> list[ScoreItem]:
    if not forgetting:
        return [ScoreItem("–"), ScoreItem("–")]
    prompts = f"on {forgetting['prompts']} general prompts" if forgetting.get("prompts") else ""
    kl = ScoreItem(score_text(forgetting["kl"]), forgetting["kl"])
    changed = ScoreItem(f"{forgetting['changed']:.0%}", forgetting["changed"])
    for item in (kl, changed):
        item.setToolTip(prompts)
    return [kl, changed]
