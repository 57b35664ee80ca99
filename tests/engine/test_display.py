"""Whether the window can open, told before Qt aborts: the platform plugin's missing system
libraries named with the packages that hold them, a missing display, and Qt's own start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from engine.display import check_window, missing_libraries, packages_for
from helpers import ROOT

needs_a_compiler = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("ldd")),
                                      reason="builds a small shared library with gcc and reads it with ldd")


def _plugin_folder(tmp_path, needs: list[str]):
    """A platform-plugin folder whose libqxcb.so links against ``needs``, libraries built for
    the occasion and then removed, as on a machine that lacks them."""
    libs = tmp_path / "libs"
    libs.mkdir()
    links = []
    for soname in needs:
        stem = soname.split(".so")[0].removeprefix("lib")
        source = libs / f"{stem}.c"
        source.write_text(f"int {stem.replace('-', '_')}_present(void) {{ return 1; }}\n")
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(libs / f"lib{stem}.so"),
                        str(source)], check=True)
        links.append(f"-l{stem}")
    plugins = tmp_path / "platforms"
    plugins.mkdir()
    plugin = tmp_path / "plugin.c"
    plugin.write_text("int qt_plugin_present(void) { return 1; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,--no-as-needed", "-o", str(plugins / "libqxcb.so"),
                    str(plugin), f"-L{libs}", *links], check=True)
    shutil.rmtree(libs)
    return plugins


# Libraries no system has, so ldd cannot find them whatever this machine has installed (a
# machine with libxcb-icccm4 would find the real names, and the plugin would seem whole).
ABSENT = ["libxcb-studio-absent-a.so.4", "libxcb-studio-absent-b.so.1"]


@needs_a_compiler
def test_every_missing_library_is_named_with_the_packages_that_hold_it(tmp_path):
    plugins = _plugin_folder(tmp_path, ABSENT)
    check = check_window({"DISPLAY": ":0"}, plugins=plugins)
    assert not check.can_open and check.platform == "xcb"
    assert check.missing_libraries == ABSENT
    assert f"missing: {', '.join(ABSENT)} (" in check.reason and "\n" not in check.reason
    # A library the table does not know is named as itself in the install line.
    assert check.packages["debian"] == ABSENT
    # The two the minimal Linux lacked, by the packages that hold them per family.
    packages = packages_for(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert packages["debian"] == ["libxcb-icccm4", "libxcb-keysyms1"]
    assert packages["fedora"] == ["xcb-util-keysyms", "xcb-util-wm"]


@needs_a_compiler
def test_without_a_display_the_reason_is_the_display(tmp_path):
    plugins = _plugin_folder(tmp_path, [])
    assert missing_libraries(plugins / "libqxcb.so") == []
    check = check_window({}, plugins=plugins)
    assert not check.can_open and check.reason.startswith("no display: DISPLAY is not set")


def test_qt_starting_is_the_final_word():
    env = {key: value for key, value in os.environ.items() if not key.startswith("QT_")}
    assert check_window({**env, "QT_QPA_PLATFORM": "offscreen"}).can_open
    refused = check_window({**env, "QT_QPA_PLATFORM": "no-such-platform"})
    assert not refused.can_open and "no-such-platform" in refused.reason and "\n" not in refused.reason


def test_doctor_says_whether_the_window_can_open():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-m", "engine.cli.main", "doctor", "--json"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    window = json.loads(done.stdout)["window"]
    assert window == {"can_open": True, "platform": "offscreen", "reason": None, "missing_libraries": [],
                      "packages": {}}


def test_the_launcher_refuses_in_one_line_where_the_window_cannot_open():
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    env.pop("DISPLAY", None)
    done = subprocess.run([sys.executable, "-m", "studio.launch"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: the window cannot open: ") and done.stderr.count("\n") == 1
