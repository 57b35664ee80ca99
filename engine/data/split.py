"""The validation split: how many rows are held out, and which (seeded, so a run's split
can be made again).

Rows are split by content: every copy of a conversation lands on the same side, so no
duplicate of a held-out row is ever trained on (an evaluation of the held-out rows would
otherwise score answers the adapter learnt by heart). The seeded order is over distinct
contents, in the order they first appear; without duplicates that is the order over rows, so
such a dataset splits exactly as it did before contents were compared. Copies are held out
together, so the count ``split_counts`` promises is met whenever distinct rows can make it up;
when only groups of copies are left it falls short (``split_by_content`` says by how much).
"""

from __future__ import annotations

from typing import Any, Sequence

from engine.run.config import check_val_fraction


def split_counts(rows: int, val_fraction: float) -> tuple[int, int]:
    """(training rows, validation rows) for a share held out; at least one of each when asked."""
    check_val_fraction(val_fraction)
    if val_fraction <= 0 or rows < 2:
        return rows, 0
    validation = min(rows - 1, max(1, round(rows * val_fraction)))
    return rows - validation, validation


def split_indices(rows: int, val_fraction: float, seed: int) -> tuple[Any, Any]:
    """Sorted row indices for training and validation: a seeded, reproducible random split
    of rows that are all different (``split_by_content`` with no two contents alike)."""
    return split_by_content(list(range(rows)), val_fraction, seed)


def split_by_content(contents: Sequence[Any], val_fraction: float, seed: int) -> tuple[Any, Any]:
    """Sorted row indices for training and validation, the rows given by their contents (any
    hashable, e.g. a hash of each conversation): every copy of a content on one side.

    Distinct contents are visited in a seeded order and held out, all copies at once, while
    they fit in ``split_counts``' share; a group of copies that would overshoot it is passed
    over for the next. If none fits, the first group that leaves a row to train on is held out,
    so a share asked for still holds out something where it can.
    """
    import numpy as np

    _, target = split_counts(len(contents), val_fraction)
    first: dict[Any, int] = {}
    group_of = np.fromiter((first.setdefault(content, len(first)) for content in contents), dtype=np.int64,
                           count=len(contents))
    sizes = np.bincount(group_of, minlength=len(first))
    held = np.zeros(len(first), dtype=bool)
    taken = 0
    order = np.random.default_rng(seed).permutation(len(first))
    for group in order:
        if taken == target:
            break
        if taken + sizes[group] <= target:
            held[group] = True
            taken += int(sizes[group])
    if target and not taken:
        fits = next((group for group in order if sizes[group] < len(contents)), None)
        if fits is not None:
            held[fits] = True
    validation = held[group_of] if len(contents) else np.zeros(0, dtype=bool)
    rows = np.arange(len(contents))
    return rows[~validation], rows[validation]
