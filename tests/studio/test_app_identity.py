"""The window says who it is, so that the launcher's entry and the taskbar group it: the real app
on a real X server (Xvfb), read back with xprop as a window manager reads it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.desktop import APP_ID, desktop_entry
from smoke import end_process

ROOT = Path(__file__).resolve().parents[2]
WINDOW_TIMEOUT_S = 60


def _x_server():
    """Xvfb on a display number it picks itself (free, whatever else runs beside the tests)."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as announced:
        display = announced.readline().strip()
    assert display, "Xvfb did not start"
    return server, f":{display}"


def _window_properties(env: dict, names: list[str], log: Path) -> str:
    """xprop's lines for the studio's top-level window, once it is mapped (polled: no window
    manager here to wait on)."""
    deadline = time.monotonic() + WINDOW_TIMEOUT_S
    while time.monotonic() < deadline:
        found = subprocess.run(["xprop", "-name", "LoRA Studio", *names], env=env, capture_output=True, text=True,
                               timeout=30)
        if found.returncode == 0 and "WM_CLASS(STRING)" in found.stdout:
            return found.stdout
        time.sleep(0.2)
    raise AssertionError(f"no window named LoRA Studio in {WINDOW_TIMEOUT_S} s: {found.stderr}\n"
                         f"{log.read_text(errors='replace')[-3000:]}")


@pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xprop")),
                    reason="needs Xvfb and xprop (packages xvfb and x11-utils) to read the window's X11 properties")
def test_the_window_names_itself_as_the_desktop_entry_does(tmp_path):
    startup_wm_class = re.search(r"^StartupWMClass=(.*)$", desktop_entry("/usr/bin/lora-studio"), re.M)[1]
    server, display = _x_server()
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "LORA_STUDIO_HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        # Started as `python -m studio.launch`, whose file name (launch.py) Qt would otherwise take.
        log = tmp_path / "app-output.txt"
        with open(log, "w", encoding="utf-8") as output:
            app = subprocess.Popen([sys.executable, "-m", "studio.launch"], cwd=tmp_path, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
        try:
            shown = _window_properties(env, ["WM_CLASS", "_KDE_NET_WM_DESKTOP_FILE", "_GTK_APPLICATION_ID",
                                             "_NET_WM_ICON"], log)
        finally:
            end_process(app)
    finally:
        end_process(server)
    # Both parts, instance and class: window managers match the entry's StartupWMClass to either.
    assert f'WM_CLASS(STRING) = "{APP_ID}", "{APP_ID}"' in shown, shown
    assert startup_wm_class == APP_ID
    assert f'_KDE_NET_WM_DESKTOP_FILE(UTF8_STRING) = "{APP_ID}"' in shown  # the desktop file name, for KDE
    assert f'_GTK_APPLICATION_ID(UTF8_STRING) = "{APP_ID}"' in shown  # ... and for GNOME
    assert "_NET_WM_ICON(CARDINAL) = " in shown and "Icon (16 x 16)" in shown  # the taskbar's icon
