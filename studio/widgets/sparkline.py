"""A mini curve painted into a table cell: the loss of a run at a glance.

A delegate paints it with ``QPainter`` from a few dozen values (``engine.jobs.history.spark_line``
keeps each stretch's lowest and highest loss), so a table of hundreds of runs costs no
more than its text; a plot widget per row would cost a scene graph each.
"""

from __future__ import annotations

from typing import Optional, Sequence

from PySide6.QtCore import QModelIndex, QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QApplication, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from studio import theme

SPARK_ROLE = Qt.ItemDataRole.UserRole + 1  # the values to draw, a sequence of floats
_MARGIN = 3


def spark_points(values: Sequence[float], rect: QRectF) -> list[QPointF]:
    """The values laid out left to right in ``rect``, the lowest at the bottom."""
    finite = [value for value in values if value == value and abs(value) != float("inf")]
    if len(finite) < 2:
        return []
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    step = rect.width() / (len(finite) - 1)
    return [QPointF(rect.left() + i * step, rect.bottom() - (value - low) / span * rect.height())
            for i, value in enumerate(finite)]


class SparklineDelegate(QStyledItemDelegate):
    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        # The cell's background and selection as the style draws them, then the curve.
        cell = QStyleOptionViewItem(option)
        self.initStyleOption(cell, index)
        cell.text = ""
        widget: Optional[QWidget] = option.widget
        style = widget.style() if widget is not None else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, cell, painter, widget)
        values = index.data(SPARK_ROLE) or ()
        area = QRectF(option.rect).adjusted(_MARGIN, _MARGIN, -_MARGIN, -_MARGIN)
        points = spark_points(values, area)
        if not points:
            return
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        colour = option.palette.highlightedText().color() if selected else QColor(theme.colours().curves[0])
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(colour, 1.5))
        painter.drawPolyline(QPolygonF(points))
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(110, 24)
