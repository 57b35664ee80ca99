"""Render the app icon's PNGs from its SVG, once, for the desktop entry's icon theme folders.

A maintainer's script: run it after changing the SVG, and commit the PNGs it writes. Launchers and
taskbars that cannot draw SVG (and the icon caches that index sizes) take these; every consumer
(``lora-studio desktop install``, the .deb, the bundle) gets them through ``engine.desktop.icon_files``.

    python tools/render_app_icons.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no window: only QPainter on an image

from PySide6.QtCore import QRectF, Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

from engine.desktop import APP_SVG, PNG_SIZES, png_icon  # noqa: E402


def render(size: int, renderer: QSvgRenderer, target: Path) -> None:
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    try:  # an open painter left behind by an exception aborts Qt
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter, QRectF(0, 0, size, size))
    finally:
        painter.end()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(target), "PNG"):
        raise SystemExit(f"error: could not write {target}")


def main() -> int:
    _app = QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(APP_SVG))
    if not renderer.isValid():
        print(f"error: {APP_SVG} is not an SVG Qt can draw", file=sys.stderr)
        return 1
    for size in PNG_SIZES:
        target = png_icon(size)
        render(size, renderer, target)
        print(f"{target.relative_to(ROOT)}: {size}x{size}, {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
