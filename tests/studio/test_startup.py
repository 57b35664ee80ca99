"""Start-up: the window shows before the heavy libraries load, they load in the background
with a note in the status bar, and the first-run guide greets a first start only."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from studio import workers
from studio.app import LOADING_NOTE, start
from studio.logs import stop_logging
from studio.widgets.first_run_guide import DISMISSED_KEY, FirstRunGuide

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 120_000

_FIRST_PAINT = """
import gc, os, sys
from PySide6.QtCore import QEvent, QObject
from studio.app import start
app, window = start([sys.argv[0]])

class FirstPaint(QObject):
    def eventFilter(self, watched, event):
        if watched is window and event.type() == QEvent.Type.Paint:
            heavy = [name for name in ("pyqtgraph", "torch", "transformers", "peft") if name in sys.modules]
            print("heavy=" + ",".join(heavy))
            window.removeEventFilter(self)
        return False

def shown():
    print("note=" + (window.background_label.text() if window.background_label.isVisible() else ""))
    print("message=" + window.statusBar().currentMessage())
    print(f"automatic_gc={gc.isenabled()}")
    sys.stdout.flush()
    os._exit(0)  # not waiting for the libraries that are loading

watcher = FirstPaint()
window.installEventFilter(watcher)
window.firstShown.connect(shown)
app.exec()
"""


def test_the_window_is_painted_before_the_heavy_libraries_load(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.json").write_text("{}")  # a second start: no notice about new settings
    env = dict(os.environ, LORA_STUDIO_HOME=str(tmp_path / "home"), QT_QPA_PLATFORM="offscreen")
    result = subprocess.run([sys.executable, "-c", _FIRST_PAINT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert lines["heavy"] == ""
    assert lines["note"] == LOADING_NOTE
    assert lines["message"] == ""  # not "Ready" beside "Loading the training libraries…"
    assert lines["automatic_gc"] == "False"  # the studio collects on its UI thread only (studio.garbage)


def _first_run_guide(window) -> FirstRunGuide | None:
    guides = [child for child in window.findChildren(FirstRunGuide) if child.isVisible()]
    return guides[0] if guides else None


def test_the_libraries_load_then_the_note_goes_and_the_guide_greets_only_a_first_start(qtbot):
    gc.unfreeze()  # what the suite froze (conftest): the freeze waited for below is the studio's own
    try:
        _app, window = start()
        qtbot.addWidget(window)
        qtbot.waitUntil(lambda: gc.get_freeze_count() > 0 and not window.background_label.isVisible(),
                        timeout=TIMEOUT_MS)
        guide = _first_run_guide(window)
        assert guide is not None and guide.step == 0
        guide.dismiss_check.setChecked(True)
        window.close()
        qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=TIMEOUT_MS)

        _app, again = start()
        qtbot.addWidget(again)
        with qtbot.waitSignal(again.firstShown, timeout=TIMEOUT_MS):
            pass
        assert _first_run_guide(again) is None
        assert again.settings.get(DISMISSED_KEY) is True
        qtbot.waitUntil(lambda: not again.background_label.isVisible(), timeout=TIMEOUT_MS)
        assert again.statusBar().currentMessage() == "Ready"  # once the libraries are loaded, not before
        again.close()
        qtbot.waitUntil(lambda: not workers.live_tasks(), timeout=TIMEOUT_MS)
    finally:
        stop_logging()
        gc.unfreeze()
