"""Icons drawn from SVG at the exact pixel size asked for, in the palette's colours.

A pixmap icon scaled to a 150% or 200% screen goes blurry; these are rendered from the
SVG each time Qt asks for a size, so they stay crisp at any pixel density. The SVGs draw
in ``currentColor``, which becomes the palette's text colour (white on a selected row),
so they read on light and dark alike and follow a change of scheme.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

from PySide6.QtCore import QByteArray, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QGuiApplication, QIcon, QIconEngine, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

from engine.desktop import APP_SVG

# The studio's package data, installed with the package (the engine has its own resources).
ICONS = Path(__file__).resolve().parent / "resources" / "icons"
# The window's icon is the desktop entry's (one file for the launcher, the taskbar and the window).
APP_ICON = APP_SVG
PAGE_ICONS = ICONS / "pages"
_BLANK_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"/>'
log = logging.getLogger(__name__)


def page_icon(name: str) -> QIcon:
    """The sidebar icon for a page (``studio/resources/icons/pages/<name>.svg``)."""
    return QIcon(TintedSvgEngine(PAGE_ICONS / f"{name}.svg"))


@lru_cache(maxsize=None)
def _svg_text(path: Path) -> str:
    """The icon's SVG, or an empty one when the file is missing or unreadable (a damaged
    install): a blank icon beside a page's title, never a window that cannot open."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("icon %s cannot be read (%s): drawing it blank", path, exc)
        return _BLANK_SVG


def _colour_for(mode: QIcon.Mode) -> str:
    palette = QGuiApplication.palette()
    role = {
        QIcon.Mode.Selected: QPalette.ColorRole.HighlightedText,
        QIcon.Mode.Disabled: QPalette.ColorRole.PlaceholderText,
    }.get(mode, QPalette.ColorRole.WindowText)
    return palette.color(role).name()


class TintedSvgEngine(QIconEngine):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def paint(self, painter: QPainter, rect: QRect, mode: QIcon.Mode, state: QIcon.State) -> None:
        svg = _svg_text(self.path).replace("currentColor", _colour_for(mode))
        QSvgRenderer(QByteArray(svg.encode("utf-8"))).render(painter, QRectF(rect))

    def pixmap(self, size: QSize, mode: QIcon.Mode, state: QIcon.State) -> QPixmap:
        # Qt passes the size in device pixels (22 x 22 at 200% asks for 44 x 44).
        pixmap = QPixmap(size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        try:  # an open painter left behind by an exception aborts Qt when the pixmap goes
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            self.paint(painter, pixmap.rect(), mode, state)
        finally:
            painter.end()
        return pixmap

    def clone(self) -> "TintedSvgEngine":
        return TintedSvgEngine(self.path)
