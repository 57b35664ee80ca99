"""A table cell that sorts by a number where it has one, for the tables whose columns people sort
(the Adapters page, the evaluation scoreboard)."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QTableWidgetItem

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


class SortItem(QTableWidgetItem):
    """A cell that sorts by a number when it has one (size in bytes, not "1.2 MiB").

    Cells without a number (an adapter made elsewhere has no step count) sort first.
    """

    def __init__(self, text: str, sort_key: Optional[float] = None) -> None:
        super().__init__(text)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)
        if sort_key is not None:
            self.setData(SORT_ROLE, float(sort_key))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is None or theirs is None:
            if mine is None and theirs is None:
                return self.text().lower() < other.text().lower()
            return mine is None
        return mine < theirs
