"""Splitter positions and table columns that come back as they were left.

Qt describes them as opaque byte strings (``saveState``); they are kept in the settings as
base64 text under a key per widget, saved as the user drags, and restored when the widget
is built. A state Qt does not accept (written by another version of a page) is ignored.
"""

from __future__ import annotations

from PySide6.QtCore import QByteArray
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
