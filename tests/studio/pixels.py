"""Looking at what a widget drew: how many pixels of a picture have a given colour."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage


def pixels_of(image: QImage, colour: QColor, tolerance: int = 40) -> int:
    """How many pixels of ``image`` are within ``tolerance`` of ``colour`` in every channel."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(rgb.constBits(), np.uint8).reshape(rgb.height(), rgb.bytesPerLine())
    pixels = pixels[:, : 3 * rgb.width()].reshape(rgb.height(), rgb.width(), 3).astype(int)
    wanted = np.array([colour.red(), colour.green(), colour.blue()])
    return int((np.abs(pixels - wanted).max(axis=2) < tolerance).sum())
