"""Scanning a whole dataset once: counts of good and bad rows, problems, duplicates and
empty answers and, given a tokenizer, every row's length and where it starts to learn, in
memory that stays bounded whatever the size; and the report of what the scan found, whose
``row_counts`` for a max length are what a run with it trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.data.counts import RowCounts
from engine.data.dataset import DatasetSource, Sample
from engine.data.examples import CANNOT_MASK, is_cut, learns_nothing, measure_rows
from engine.data.formats import FORMATS
from engine.data.heldout import content_hash
from engine.data.passes import Cancelled, DatasetPass, Progress
from engine.data.readers import RowProblem
from engine.data.rendering import chat_template_for
from engine.core.checks import MAX_LENGTH, whole
from engine.run.config import check_val_fraction

_TOKENIZE_BATCH = 256


@dataclass
class DatasetReport:
    """What a whole pass over a dataset found. ``token_lengths`` (one per good row, before
    truncation) and ``first_learnt`` (where each starts to learn when only the replies are
    learnt, ``CANNOT_MASK`` where they cannot be told apart) are there when a tokenizer was given."""

    path: Path
    kind: str
    format: str
    format_title: str
    mapping: dict[str, str]
    columns: list[str]
    ignored_columns: list[str]
    skipped_files: list[str]
    text_split: Optional[str]
    total_rows: int
    good_rows: int
    bad_rows: int
    problems: list[RowProblem]
    empty_answers: int
    duplicates: int
    token_lengths: Any = None
    first_learnt: Any = None
    chat_template_fallback: bool = False

    def row_counts(self, max_length: int, train_on: str = "assistant", val_fraction: float = 0.0) -> RowCounts:
        """What a run with this max length, loss and validation share makes of the rows: the
        counts its tokenising pass (``engine.data.write``) reports, by the same rule."""
        if self.token_lengths is None:
            return RowCounts(self.total_rows, self.bad_rows, None, None, max_length, val_fraction)
        import numpy as np

        tokens, first = self.token_lengths, self.first_learnt
        cannot_mask = first == CANNOT_MASK
        if train_on == "assistant":  # the rows whose replies cannot be found are refused, as training refuses them
            tokens, first = tokens[~cannot_mask], first[~cannot_mask]
        else:  # every token is learnt, from the first
            first = np.zeros_like(first)
        nothing = learns_nothing(tokens, first, max_length)
        bad = self.bad_rows + (int(cannot_mask.sum()) if train_on == "assistant" else 0)
        return RowCounts(self.total_rows, bad, int(nothing.sum()), int((is_cut(tokens, max_length) & ~nothing).sum()),
                         max_length, val_fraction)

    def truncated(self, max_length: int, train_on: str = "assistant") -> int:
        """Examples a run with this max length cuts (and still trains on); 0 when not measured."""
        return self.row_counts(max_length, train_on).cut or 0

    def length_percentiles(self) -> dict[str, int]:
        import numpy as np

        if self.token_lengths is None or not len(self.token_lengths):
            return {}
        points = (50, 90, 95, 99, 100)
        values = np.percentile(self.token_lengths, points)
        return {("max" if p == 100 else f"p{p}"): int(round(v)) for p, v in zip(points, values)}

    def to_dict(self, max_length: int, val_fraction: float = 0.0, problems: int = 20,
                train_on: str = "assistant") -> dict[str, Any]:
        check_report_options(max_length, val_fraction)
        counts = self.row_counts(max_length, train_on, val_fraction)
        train, validation = counts.split
        report: dict[str, Any] = {
            "file": str(self.path), "kind": self.kind, "format": self.format, "format_title": self.format_title,
            "mapping": self.mapping, "columns": self.columns, "ignored_columns": self.ignored_columns, "skipped_files": self.skipped_files,
            "text_split": self.text_split,
            "rows": self.total_rows, "good_rows": self.good_rows, "bad_rows": self.bad_rows,
            "empty_answers": self.empty_answers, "duplicates": self.duplicates,
            "problems": [{"line": p.line, "file": p.file, "unit": p.unit, "reason": p.reason}
                         for p in self.problems[:problems]],
            "validation": {"fraction": val_fraction, "train_rows": train, "validation_rows": validation},
            "train_on": train_on, "summary": counts.sentence(),
        }
        if self.token_lengths is not None:
            report.update({
                "max_length": max_length,
                "token_percentiles": self.length_percentiles(),
                "tokens_total": int(self.token_lengths.sum()),
                "examples": counts.examples,
                "nothing_to_learn": counts.nothing_to_learn,
                "truncated": counts.cut,
                "truncated_share": round(counts.cut / counts.examples, 4) if counts.examples else 0.0,
                "chat_template": "chatml-fallback" if self.chat_template_fallback else "model",
            })
        return report


def check_report_options(max_length: int, val_fraction: float) -> None:
    """What a report is asked for: a max length a run could have and a validation share it could hold out."""
    whole("max length", max_length, 1, MAX_LENGTH)
    check_val_fraction(val_fraction)


def scan_dataset(
    source: DatasetSource,
    tokenizer: Any = None,
    *,
    progress: Optional[Progress] = None,
    cancelled: Optional[Cancelled] = None,
) -> Optional[DatasetReport]:
    """Read the whole dataset once: counts, problems, duplicates and (with a tokenizer) lengths.

    Memory stays bounded whatever the size: 8 bytes per row for duplicate detection, 4 for
    its length, one batch of rows and the first problems. None when cancelled.
    """
    import numpy as np

    template, fallback = chat_template_for(tokenizer) if tokenizer is not None else (None, False)
    counts = DatasetPass(source, progress, cancelled)
    hashes = _Int64Buffer()
    lengths = _Int64Buffer()
    first_learnt = _Int64Buffer()
    batch: list[Sample] = []

    def measure() -> None:
        # Rows the chat template refuses (some insist on strictly alternating turns) are bad rows.
        for sample, measured in zip(batch, measure_rows(batch, tokenizer, template, counts)):
            if measured is not None:
                good(sample)
                lengths.append(measured[0])
                first_learnt.append(measured[1])
        batch.clear()

    def good(sample: Sample) -> None:
        counts.good += 1
        # Duplicates by the rule the validation split keeps copies together by (content_hash), its
        # first 60 bits as a number so the buffer stays an int64 array.
        hashes.append(int(content_hash(sample.conversation)[:15], 16))

    for number, item in enumerate(source.items()):
        if number % 512 == 0 and not counts.tick():
            return None
        if isinstance(item, RowProblem):
            counts.problem(item)
        elif tokenizer is None:
            good(item)
        else:
            batch.append(item)
            if len(batch) == _TOKENIZE_BATCH:
                measure()
    if batch:
        measure()
    values = hashes.values()
    return DatasetReport(
        path=source.path, kind=source.kind, format=source.format, format_title=FORMATS[source.format].title,
        mapping=source.mapping, columns=source.columns, ignored_columns=source.ignored_columns,
        skipped_files=source.skipped_files, text_split=source.text_split,
        total_rows=counts.good + counts.bad, good_rows=counts.good, bad_rows=counts.bad,
        problems=sorted(counts.problems, key=lambda p: (p.file, p.line)),
        empty_answers=counts.empty_answers, duplicates=int(len(values) - len(np.unique(values))),
        token_lengths=lengths.values().astype(np.int32) if tokenizer is not None else None,
        first_learnt=first_learnt.values().astype(np.int32) if tokenizer is not None else None,
        chat_template_fallback=fallback and source.format != "text",
    )


class _Int64Buffer:
    """A growing array of integers: 8 bytes each, where a Python list would spend about 36."""

    def __init__(self) -> None:
        import numpy as np

        self._data = np.empty(4096, dtype=np.int64)
        self._size = 0

    def append(self, value: int) -> None:
        if self._size == len(self._data):
            self._data.resize(2 * self._size, refcheck=False)
        self._data[self._size] = value
        self._size += 1

    def values(self) -> Any:
        return self._data[: self._size]
