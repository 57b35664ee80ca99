"""The example browser: each example of an evaluation with its prompt, its reference and every
candidate's answer side by side, each with its scores; filterable to the examples where an
adapter won or lost against the base model.

Won or lost is the judge's verdict where the judge compared the answers, else the answer's score
by a per-example metric (the headline one first: ROUGE-L where it was scored) against the base's.
"""

from __future__ import annotations

import html
from typing import Any, Optional

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.eval.results import base_candidate, headline_metric
from studio import theme
from studio.widgets.eval_scoreboard import score_text
from studio.widgets.eval_words import higher_is_better, title
from studio.widgets.pickers import ElidingComboBox

ALL, WON, LOST = "all", "won", "lost"
JUDGE = "judge"  # compare by the judge's verdicts, not by a metric
_VERDICTS = {"win": WON, "loss": LOST, "tie": "tie"}
_WON_COLOUR, _LOST_COLOUR = "#1e8449", "#c0392b"
_INDEX_ROLE = Qt.ItemDataRole.UserRole


def base_label(document: dict[str, Any]) -> Optional[str]:
    """The label of the base model among the candidates; None when it was not evaluated."""
    base = base_candidate(document)
    return base["label"] if base is not None else None


def rivals(document: dict[str, Any]) -> list[str]:
    """The candidates that can win or lose against the base: all but the base, when it was evaluated."""
    base = base_label(document)
    return [] if base is None else [c["label"] for c in document["candidates"] if c["label"] != base]


def judged_by(document: dict[str, Any], rival: str) -> list[str]:
    """What ``rival``'s answers can be compared with the base's by: the judge's verdicts when it gave
    them, then each per-example metric with a better direction (the headline metric, then the other
    higher-is-better ones)."""
    examples = document["examples"]
    ways = [JUDGE] if any(example["answers"].get(rival, {}).get("judge") for example in examples) else []
    scored = [name for name in document["metrics"]
              if higher_is_better(name) is not None
              and any(name in example["answers"].get(rival, {}).get("scores", {}) for example in examples)]
    # The headline metric first (ROUGE-L where it was scored), as the Adapters page and the report head with it.
    headline = headline_metric(document["metrics"], document["candidates"])
    return ways + sorted(scored, key=lambda name: (name != headline, not higher_is_better(name)))


def outcome(example: dict[str, Any], rival: str, base: str, by: str) -> Optional[str]:
    """"won", "lost" or "tie" for ``rival``'s answer against the base's; None when it has no verdict."""
    answer = example["answers"].get(rival)
    if answer is None:
        return None
    if by == JUDGE:
        return _VERDICTS.get(answer.get("judge") or "")
    mine, theirs = answer["scores"].get(by), example["answers"][base]["scores"].get(by)
    if mine is None or theirs is None:
        return None
    if mine == theirs:
        return "tie"
    return WON if (mine > theirs) == bool(higher_is_better(by)) else LOST


class ExampleBrowser(QWidget):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._document: Optional[dict[str, Any]] = None
        # Combos that shorten what does not fit: the example list leaves most of the width to the answers.
        self.show_combo = _combo("Show", "Every example, or only those where the adapter won against the base model "
                                 "(its answer was better) or lost (worse)", self)
        for text, data in (("All examples", ALL), ("Where it won", WON), ("Where it lost", LOST)):
            self.show_combo.addItem(text, data)
        self.rival_combo = _combo("Adapter", "The candidate compared with the base model", self)
        self.by_combo = _combo("Judged by", "What decides which answer is better: the judge's verdict, or the "
                               "example's score by a metric", self)
        self.count_label = QLabel(self)
        self.count_label.setAccessibleName("Examples shown")
        self.example_list = QListWidget(self)
        self.example_list.setAccessibleName("Examples")
        self.detail = QTextBrowser(self)
        self.detail.setAccessibleName("Example")
        self.detail.setPlaceholderText("Run an evaluation: each example's answers show here side by side.")

        filters = QFormLayout()
        filters.setContentsMargins(0, 0, 0, 0)
        filters.addRow("Show:", self.show_combo)
        filters.addRow("Adapter:", self.rival_combo)
        filters.addRow("Judged by:", self.by_combo)
        side = QWidget(self)
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addLayout(filters)
        side_layout.addWidget(self.count_label)
        side_layout.addWidget(self.example_list, 1)
        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(side)
        splitter.addWidget(self.detail)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([210, 590])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)

        self.show_combo.currentIndexChanged.connect(self._fill_list)
        self.rival_combo.currentIndexChanged.connect(self._rival_changed)
        self.by_combo.currentIndexChanged.connect(self._fill_list)
        self.example_list.currentItemChanged.connect(self._show_current)
        self._enable_filters()

    # ------------------------------------------------------------------ api
    def show_document(self, document: dict[str, Any]) -> None:
        self._document = document
        self.rival_combo.blockSignals(True)
        self.rival_combo.clear()
        for label in rivals(document):
            self.rival_combo.addItem(label, label)
        self.rival_combo.blockSignals(False)
        self.by_combo.blockSignals(True)
        self.by_combo.clear()  # a new document: judged the default way (the judge's verdict where it gave them)
        self.by_combo.blockSignals(False)
        self._fill_by()
        self._enable_filters()
        self._fill_list()

    def shown_indexes(self) -> list[int]:
        """The examples listed now (their index in the set)."""
        return [self.example_list.item(row).data(_INDEX_ROLE) for row in range(self.example_list.count())]

    def set_filter(self, show: str, rival: Optional[str] = None, by: Optional[str] = None) -> None:
        """Show ``ALL``, ``WON`` or ``LOST`` examples of ``rival`` judged ``by`` (as the combos choose)."""
        if rival is not None:
            self.rival_combo.setCurrentIndex(self.rival_combo.findData(rival))
        if by is not None:
            self.by_combo.setCurrentIndex(self.by_combo.findData(by))
        self.show_combo.setCurrentIndex(self.show_combo.findData(show))

    # ------------------------------------------------------------ filtering
    def _rival_changed(self, _index: int) -> None:
        self._fill_by()
        self._fill_list()

    def _fill_by(self) -> None:
        keep = self.by_combo.currentData()
        self.by_combo.blockSignals(True)
        self.by_combo.clear()
        rival = self.rival_combo.currentData()
        if self._document is not None and rival is not None:
            for way in judged_by(self._document, rival):
                self.by_combo.addItem("the judge's verdict" if way == JUDGE else title(way), way)
        index = self.by_combo.findData(keep)
        self.by_combo.setCurrentIndex(index if index >= 0 else 0)
        self.by_combo.blockSignals(False)

    def _enable_filters(self) -> None:
        """Won and lost need the base and another candidate with something to compare them by."""
        comparable = self.by_combo.count() > 0
        for combo in (self.show_combo, self.rival_combo, self.by_combo):
            combo.setEnabled(comparable)
        if not comparable:
            self.show_combo.blockSignals(True)
            self.show_combo.setCurrentIndex(0)
            self.show_combo.blockSignals(False)

    def _verdict(self, example: dict[str, Any]) -> Optional[str]:
        rival, by = self.rival_combo.currentData(), self.by_combo.currentData()
        base = base_label(self._document) if self._document is not None else None
        if rival is None or by is None or base is None:
            return None
        return outcome(example, rival, base, by)

    def _fill_list(self, _index: int = 0) -> None:
        keep = self.example_list.currentItem().data(_INDEX_ROLE) if self.example_list.currentItem() else None
        self.example_list.clear()
        if self._document is None:
            self.count_label.clear()
            return
        show = self.show_combo.currentData()
        examples = self._document["examples"]
        for example in examples:
            verdict = self._verdict(example)
            if show != ALL and verdict != show:
                continue
            item = QListWidgetItem(_list_text(example, verdict))
            item.setData(_INDEX_ROLE, example["index"])
            item.setToolTip(_prompt_text(example["prompt"])[:500])
            if verdict in (WON, LOST):
                item.setForeground(QColor(_WON_COLOUR if verdict == WON else _LOST_COLOUR))
            self.example_list.addItem(item)
        shown = self.example_list.count()
        self.count_label.setText(f"{shown} of {len(examples)} examples")
        rows = self.shown_indexes()
        self.example_list.setCurrentRow(rows.index(keep) if keep in rows else 0)
        if not shown:
            self.detail.clear()

    def _show_current(self, current: Optional[QListWidgetItem], _previous: Optional[QListWidgetItem]) -> None:
        if current is None or self._document is None:
            self.detail.clear()
            return
        example = next(e for e in self._document["examples"] if e["index"] == current.data(_INDEX_ROLE))
        self.detail.setHtml(self._example_html(example))

    # ------------------------------------------------------------- drawing
    def _example_html(self, example: dict[str, Any]) -> str:
        muted = theme.colours().muted
        verdict = self._verdict(example)
        said = ""
        if verdict is not None:
            how = "the judge's verdict" if self.by_combo.currentData() == JUDGE else self.by_combo.currentText()
            said = (f" · {html.escape(self.rival_combo.currentText())} {_AGAINST_THE_BASE[verdict]} "
                    f"(by {html.escape(how)})")
        parts = [f'<p><b>Example {example["index"] + 1}</b> <span style="color:{muted}">· '
                 f'{html.escape(example.get("where") or "")}{said}</span></p>',
                 "<p><b>Prompt</b></p>", _conversation_html(example["prompt"], muted),
                 "<p><b>Reference</b></p>",
                 _text_html(example["reference"], muted) if example.get("reference") is not None
                 else f'<p style="color:{muted}"><i>no reference answer</i></p>']
        labels = list(example["answers"])
        width = 100 // max(len(labels), 1)
        heads = "".join(f'<th width="{width}%" align="left">{html.escape(label)}{self._judged(example, label)}</th>'
                        for label in labels)
        scores = "".join(f'<td style="color:{muted}">{_scores_text(example["answers"][label])}</td>'
                         for label in labels)
        answers = "".join(f"<td>{_text_html(example['answers'][label]['text'], muted)}</td>" for label in labels)
        parts.append(f'<table width="100%" cellspacing="0" cellpadding="6" border="1" style="border-collapse:collapse">'
                     f"<tr>{heads}</tr><tr>{scores}</tr><tr>{answers}</tr></table>")
        return "".join(parts)

    def _judged(self, example: dict[str, Any], label: str) -> str:
        """The verdict beside a rival's name in its column's heading."""
        base = base_label(self._document) if self._document is not None else None
        by = self.by_combo.currentData()
        if base is None or label == base or by is None:
            return ""
        verdict = outcome(example, label, base, by)
        if verdict not in (WON, LOST, "tie"):
            return ""
        colour = {WON: _WON_COLOUR, LOST: _LOST_COLOUR}.get(verdict, theme.colours().muted)
        return f' <span style="color:{colour}">({_VERDICT_WORDS[verdict]})</span>'


def _combo(name: str, about: str, parent: QWidget) -> ElidingComboBox:
    combo = ElidingComboBox(parent)
    combo.setAccessibleName(name)
    combo.set_about(about)
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(8)
    return combo


_VERDICT_WORDS = {WON: "won", LOST: "lost", "tie": "tied"}
_AGAINST_THE_BASE = {WON: "beat the base", LOST: "lost to the base", "tie": "tied with the base"}


def _list_text(example: dict[str, Any], verdict: Optional[str]) -> str:
    words = " ".join(_prompt_text(example["prompt"])[:200].split())
    words = words if len(words) <= 60 else words[:59] + "…"
    mark = f"{_VERDICT_WORDS[verdict]} · " if verdict in (WON, LOST) else ""  # first: a long prompt is cut
    return f"{example['index'] + 1}. {mark}{words}"


def _prompt_text(prompt: list[dict]) -> str:
    """The prompt's last user turn (what the example asks), else its last turn."""
    users = [turn for turn in prompt if turn.get("role") == "user"]
    turn = (users or prompt or [{"content": ""}])[-1]
    return str(turn.get("content", ""))


def _conversation_html(prompt: list[dict], muted: str) -> str:
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return _text_html(prompt[0]["content"], muted)
    return "".join(f'<p><span style="color:{muted}">{html.escape(str(turn.get("role", "")))}:</span></p>'
                   f'{_text_html(str(turn.get("content", "")), muted)}' for turn in prompt)


def _text_html(text: str, muted: str) -> str:
    if not text.strip():
        return f'<p style="color:{muted}"><i>(an empty answer: only spaces or line breaks)</i></p>' if text \
            else f'<p style="color:{muted}"><i>(empty)</i></p>'
    return f'<p style="white-space:pre-wrap">{html.escape(text)}</p>'


def _scores_text(answer: dict[str, Any]) -> str:
    scores = dict(answer.get("scores") or {})
    tokens = scores.pop("answer_tokens", None)
    parts = []
    for name, value in scores.items():
        text = f"{title(name)} {score_text(value)}"
        if name == "answer_length":
            text = f"{value:.0f} words" + (f", {tokens:.0f} tokens" if tokens is not None else "")
        parts.append(html.escape(text))
    return " · ".join(parts) or "no scores"
