"""A stacked, labelled bar of a memory estimate against the device's free memory.

One coloured segment per item of the estimate, a line where the device's free
memory ends, and a legend underneath. It paints from plain numbers: the estimate
itself is computed by engine.memory, in well under a millisecond, on the UI thread.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

ITEM_COLOURS = {
    "weights": "#4e79a7",
    "autocast_weight_copies": "#a0cbe8",
    "trainable_params": "#59a14f",
    "gradients": "#8cd17d",
    "optimizer_states": "#f28e2b",
    "activations": "#e15759",
    "logits_and_loss": "#b07aa1",
    "cuda_context": "#9d7660",
    "allocator_reserve": "#bab0ac",
}
ITEM_LABELS = {
    "weights": "weights",
    "autocast_weight_copies": "16-bit weight copies",
    "trainable_params": "adapter",
    "gradients": "gradients",
    "optimizer_states": "optimizer",
    "activations": "activations",
    "logits_and_loss": "logits & loss",
    "cuda_context": "CUDA context",
    "allocator_reserve": "allocator reserve",
}
_BAR_HEIGHT = 22
_LEGEND_ROW = 18


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class MemoryBar(QWidget):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._items: dict[str, int] = {}
        self._capacity: Optional[int] = None
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumHeight(_BAR_HEIGHT + 3 * _LEGEND_ROW + 8)
        self.setAccessibleName("Memory estimate")

    def set_estimate(self, items: dict[str, int], capacity_bytes: Optional[int]) -> None:
        """``items``: bytes per item (zeros are skipped); ``capacity_bytes``: free device memory."""
        self._items = {name: value for name, value in items.items() if value > 0}
        self._capacity = capacity_bytes
        self.setToolTip("\n".join(f"{ITEM_LABELS.get(n, n)}: {human_bytes(v)}" for n, v in self._items.items()))
        self.update()

    def clear(self) -> None:
        self.set_estimate({}, None)

    @property
    def total(self) -> int:
        return sum(self._items.values())

    def sizeHint(self) -> QSize:
        return QSize(400, self.minimumHeight())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width = self.width() - 2
        scale_max = max(self.total, self._capacity or 0, 1)
        painter.setPen(QPen(self.palette().mid().color()))
        painter.drawRect(QRectF(1, 1, width, _BAR_HEIGHT))
        x = 1.0
        for name, value in self._items.items():
            segment = width * value / scale_max
            painter.fillRect(QRectF(x, 1, segment, _BAR_HEIGHT), QColor(ITEM_COLOURS.get(name, "#999999")))
            x += segment
        if self._capacity:
            cap_x = 1 + width * self._capacity / scale_max
            painter.setPen(QPen(QColor("#000000"), 2, Qt.PenStyle.DashLine))
            painter.drawLine(int(cap_x), 0, int(cap_x), _BAR_HEIGHT + 2)
        self._paint_legend(painter, width)

    def _paint_legend(self, painter: QPainter, width: int) -> None:
        painter.setPen(self.palette().text().color())
        metrics = painter.fontMetrics()
        x, y = 1, _BAR_HEIGHT + 6
        for name, value in self._items.items():
            text = f"{ITEM_LABELS.get(name, name)} {human_bytes(value)}"
            needed = 14 + metrics.horizontalAdvance(text) + 14
            if x + needed > width:
                x, y = 1, y + _LEGEND_ROW
            painter.fillRect(QRectF(x, y + 3, 10, 10), QColor(ITEM_COLOURS.get(name, "#999999")))
            painter.drawText(x + 14, y + metrics.ascent(), text)
            x += needed
        if self._capacity:
            text = f"┆ free on device {human_bytes(self._capacity)}"
            if x + metrics.horizontalAdvance(text) > width:
                x, y = 1, y + _LEGEND_ROW
            painter.drawText(x, y + metrics.ascent(), text)
