"""The validation split: how many rows are held out, and which (seeded, so a run's split
can be made again).
"""

from __future__ import annotations

from typing import Any

from engine.run.config import check_val_fraction


def split_counts(rows: int, val_fraction: float) -> tuple[int, int]:
    """(training rows, validation rows) for a share held out; at least one of each when asked."""
    check_val_fraction(val_fraction)
    if val_fraction <= 0 or rows < 2:
        return rows, 0
    validation = min(rows - 1, max(1, round(rows * val_fraction)))
    return rows - validation, validation


def split_indices(rows: int, val_fraction: float, seed: int) -> tuple[Any, Any]:
    """Sorted row indices for training and validation: a seeded, reproducible random split."""
    import numpy as np

    _, validation = split_counts(rows, val_fraction)
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[validation:]), np.sort(order[:validation])
