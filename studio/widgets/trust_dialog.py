"""Asks before a model's own Python code may run; ``engine.models.trust`` remembers the answer.

A model folder whose config names classes of its own (an ``auto_map``) makes transformers
execute the ``.py`` files in its folder. The studio asks once per model, at the moment
the user wants to use it (Start on the Train page, Load on the Chat page), naming the files;
a yes is kept against their hash, so changed code is asked about again.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from engine.errors import StudioError

RUN_CODE = "Run its code"


def confirm_model_code(parent: QWidget, ref: str) -> bool:
    """True when the model ``ref`` may be used: it runs no code of its own, its code was trusted
    before, or the user trusts it now. False when the user declined."""
    from engine.models import trust
    from engine.models.store import model_folder

    try:
        folder = model_folder(ref)
    except StudioError:
        return True  # not a model folder here (a GGUF file, the starter): using it says what is wrong
    try:
        if not trust.needs_code(folder) or trust.is_trusted(folder):
            return True
        files = trust.code_names(folder)
    except StudioError:
        return True  # code the trust could not cover (another repository...): using it says so, in one line
    if not _ask(parent, folder, files):
        return False
    trust.trust(folder)
    return True


def _ask(parent: QWidget, folder: Path, files: list[str]) -> bool:
    box = QMessageBox(QMessageBox.Icon.Warning, "Run this model's own code?",
                      f"{folder.name} brings its own Python code: {', '.join(files) or 'files named in its config'}.",
                      parent=parent)
    box.setInformativeText(
        "Its code runs with your rights, as any program you start would: allow it only for a model "
        "whose source you trust. LoRA Studio remembers the answer until those files change."
    )
    box.setDetailedText(f"Folder: {folder}\nRevoke later with: lora-studio models trust --revoke {folder}")
    run = box.addButton(RUN_CODE, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.exec()
    return box.clickedButton() is run
