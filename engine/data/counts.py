"""How a dataset's rows become a run's examples, counted once and said the same way everywhere:
the Data page, ``lora-studio data inspect`` and the run's log all show ``RowCounts``.

From the rows in the file: bad rows are skipped (they cannot be read, converted or rendered),
so are rows whose prompt alone fills max length (nothing is left to learn; ``learns_nothing``
in ``engine.data.examples``); what is left are the examples, some of them cut at max length;
the validation share is held out of those (``engine.data.split``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.data.split import split_counts


def _rows(count: int, noun: str = "row") -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class RowCounts:
    """The rows of a dataset on their way to a run with a max length and a validation share.
    ``nothing_to_learn`` and ``cut`` are None when the rows were not measured in tokens."""

    rows: int  # in the file (or the folder's files)
    bad: int  # skipped: unreadable, not a conversation, or refused by the chat template
    nothing_to_learn: Optional[int]  # skipped: the prompt alone fills max length
    cut: Optional[int]  # examples longer than max length, trained on their start
    max_length: int
    val_fraction: float = 0.0

    @property
    def measured(self) -> bool:
        return self.nothing_to_learn is not None

    @property
    def good(self) -> int:
        """Rows that are not bad."""
        return self.rows - self.bad

    @property
    def examples(self) -> int:
        """Rows that train (or are held out): the good ones, less those max length leaves nothing."""
        return self.good - (self.nothing_to_learn or 0)

    @property
    def split(self) -> tuple[int, int]:
        """(examples trained on, examples held out for validation)."""
        return split_counts(self.examples, self.val_fraction)

    def skipped(self) -> str:
        """Which rows are skipped and why, e.g. "2 bad rows and 3 whose prompt alone fills max length 256"."""
        parts = [_rows(self.bad, "bad row")] if self.bad else []
        if self.nothing_to_learn:
            parts.append(f"{self.nothing_to_learn:,} whose prompt alone fills max length {self.max_length:,}")
        return " and ".join(parts)

    def sentence(self) -> str:
        """Every count in one line, each difference with its reason, e.g. "2,017 rows in the file:
        2 bad rows skipped → 2,015 examples (60 cut to 256 tokens): 1,813 to train on, 202 held out
        for validation"."""
        start = f"{_rows(self.rows)} in the file"
        skipped = self.skipped()
        if skipped:
            start += f": {skipped} skipped"
        if not self.measured:
            return f"{start} → {_rows(self.good, 'usable row')} (not measured in tokens against max length " \
                   f"{self.max_length:,}){self._held_out()}"
        cut = f" ({self.cut:,} cut to {self.max_length:,} tokens)" if self.cut else ""
        return f"{start} → {_rows(self.examples, 'example')}{cut}{self._held_out()}"

    def _held_out(self) -> str:
        train, held_out = self.split
        return f": {train:,} to train on, {held_out:,} held out for validation" if held_out else ""

    def to_dict(self) -> dict:
        train, held_out = self.split
        return {"rows": self.rows, "bad_rows": self.bad, "nothing_to_learn": self.nothing_to_learn,
                "examples": self.examples if self.measured else None, "truncated": self.cut,
                "train_examples": train, "validation_examples": held_out, "summary": self.sentence()}
