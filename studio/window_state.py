"""Splitter positions and table columns that come back as they were left, and a window
geometry kept on the screen.

Qt describes them as opaque byte strings (``saveState``); they are kept in the settings as
base64 text under a key per widget, saved as the user drags, and restored when the widget
is built. A state Qt does not accept (written by another version of a page) is ignored.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QMargins, QRect
from PySide6.QtWidgets import QHeaderView, QSplitter

from studio.settings import Settings


def to_text(state: QByteArray) -> str:
    return bytes(state.toBase64()).decode("ascii")


def from_text(text: object) -> QByteArray:
    return QByteArray.fromBase64(text.encode("ascii")) if isinstance(text, str) else QByteArray()


def remember_splitter(splitter: QSplitter, key: str, settings: Settings) -> None:
    saved = from_text(settings.get(key))
    if not saved.isEmpty():
        splitter.restoreState(saved)
    splitter.splitterMoved.connect(lambda _pos, _index: settings.set(key, to_text(splitter.saveState())))


def remember_header(header: QHeaderView, key: str, settings: Settings) -> None:
    """Column widths, order and sort order of a table."""
    saved = from_text(settings.get(key))
    if not saved.isEmpty():
        header.restoreState(saved)

    def save(*_args: object) -> None:
        settings.set(key, to_text(header.saveState()))

    header.sectionResized.connect(save)
    header.sectionMoved.connect(save)
    header.sortIndicatorChanged.connect(save)


# Room kept around a window for its frame (the title bar and borders), which the window manager
# only reports once the window is shown: sized within the screen less this, a window's title bar
# and status bar both stay on the screen.
FRAME_ALLOWANCE = QMargins(4, 32, 4, 4)


def room_on_screen(available: QRect) -> QRect:
    """The most a window's geometry (frame excluded) may cover of a screen's ``available`` area."""
    return available.marginsRemoved(FRAME_ALLOWANCE)


def fit_to_screen(geometry: QRect, available: QRect) -> QRect:
    """``geometry`` (a window's, frame excluded) made no bigger than the screen's ``available``
    area (without its panels and docks) allows, and moved, if it must, to lie wholly on it: a
    geometry remembered from a bigger or since disconnected screen comes back whole on this one."""
    room = room_on_screen(available)
    size = geometry.size().boundedTo(room.size())
    left = min(max(geometry.left(), room.left()), room.right() + 1 - size.width())
    top = min(max(geometry.top(), room.top()), room.bottom() + 1 - size.height())
    return QRect(left, top, size.width(), size.height())
