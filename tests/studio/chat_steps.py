"""A step the studio tests take in the Chat page, as a user does it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_chat_model(qtbot: Any, chat_page: Any, model_dir: Path, timeout_ms: int) -> None:
    """Pick ``model_dir`` in the Chat page, press Load and wait until its session is there."""
    chat_page.model_picker.set_ref(str(model_dir))
    with qtbot.waitSignal(chat_page.sessionChanged, timeout=timeout_ms):
        chat_page.load_button.click()
