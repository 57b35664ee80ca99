"""The "Serve elsewhere…" dialog, through its real widgets: Export writes the vLLM folder, and the
command shown (copyable) is the one its serve.sh runs; a second export into the same folder is
refused in the dialog, the first one kept."""

from __future__ import annotations

import json
import shlex

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from lora_adapters import library_adapter

from engine.paths import export_path
from studio.widgets.serve_elsewhere import ServeElsewhereDialog


def test_export_writes_the_folder_and_shows_its_vllm_command(qtbot, tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "pirate", rank=12)
    dialog = ServeElsewhereDialog(str(tiny_model_dir), ["pirate"])
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.output_edit.text() == str(export_path("pirate", "vllm"))
    assert not dialog.copy_button.isEnabled() and dialog.command_view.isReadOnly()

    folder = tmp_path / "for-the-gpu-box"
    dialog.output_edit.clear()
    qtbot.keyClicks(dialog.output_edit, str(folder))
    with qtbot.waitSignal(dialog.exported, timeout=30_000):
        qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.export_button.isEnabled())

    assert dialog.folder_view.text() == str(folder.resolve()) and (folder / "serve.sh").is_file()
    shown = dialog.command_view.toPlainText()
    cd_line, command = shown.split("\n", 1)
    assert cd_line == f"cd {shlex.quote(str(folder.resolve()))}"
    assert shlex.split(command.replace("\\\n", "")) == json.loads((folder / "vllm.json").read_text())["command"]
    assert "--lora-modules pirate=adapters/pirate" in command and "--max-lora-rank 16" in command
    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == shown

    qtbot.mouseClick(dialog.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.busy and "not an empty folder" in dialog.status_label.text(), timeout=30_000)
    assert dialog.folder_view.text() == str(folder.resolve()) and (folder / "serve.sh").is_file()
