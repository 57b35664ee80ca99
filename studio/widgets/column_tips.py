"""Tooltips on a table's column headers: what a column's values mean to the user.

The wording lives beside the page that owns the table (one table of tips per page); this
only hangs it on the header. A ``QTableWidget`` makes new header items whenever its header
labels are set, so a page whose columns change calls this again after each change.
"""

from __future__ import annotations

from typing import Mapping

from PySide6.QtWidgets import QTableWidget


def set_column_tips(table: QTableWidget, tips: Mapping[str, str]) -> None:
    """Give each column whose title is in ``tips`` that tooltip."""
    for column in range(table.columnCount()):
        item = table.horizontalHeaderItem(column)
        if item is not None and item.text() in tips:
            item.setToolTip(tips[item.text()])
