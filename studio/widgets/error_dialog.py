"""How the studio reports a failure: a one-line cause, a suggested fix, the details folded away.

The dialog opens window-modal without blocking (``QMessageBox.open``), so a failure
reported from a signal never runs a nested event loop under the code that reported it.
Every report also goes to the log, details included.
"""

from __future__ import annotations

import logging
from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox, QWidget

log = logging.getLogger(__name__)


def show_error(parent: Optional[QWidget], cause: str, fix: Optional[str] = None,
               details: Optional[str] = None) -> QMessageBox:
    """Open the error dialog and return it (it deletes itself when closed)."""
    log.error("%s%s%s", cause, f" | fix: {fix}" if fix else "", f"\n{details}" if details else "")
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle("LoRA Studio")
    box.setTextFormat(Qt.TextFormat.PlainText)  # messages quote file names and errors, never markup
    box.setText(cause)
    if fix:
        box.setInformativeText(fix)
    if details:
        box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box
