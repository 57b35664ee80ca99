"""Whether the studio's window can open on this machine, and if not, why: the system libraries
Qt's platform plugin needs but cannot find (with the packages that provide them), or no display.

Qt's own message on a minimal Linux names one library (``libxcb-cursor0``) whatever is really
missing; ``ldd`` on the plugin lists every library the loader cannot find. This module never
imports Qt (the engine does not): it reads the plugin's file and, when nothing is missing, opens
Qt in a child process to see whether it starts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from engine.core.child_python import python_module_command

# The libraries Qt's xcb (X11) and wayland plugins load that minimal installs leave out, with the
# package that provides each on the three families of distributions people report from.
PACKAGES = {
    "libxcb-icccm.so.4": {"debian": "libxcb-icccm4", "fedora": "xcb-util-wm", "arch": "xcb-util-wm"},
    "libxcb-keysyms.so.1": {"debian": "libxcb-keysyms1", "fedora": "xcb-util-keysyms", "arch": "xcb-util-keysyms"},
    "libxcb-cursor.so.0": {"debian": "libxcb-cursor0", "fedora": "xcb-util-cursor", "arch": "xcb-util-cursor"},
    "libxcb-image.so.0": {"debian": "libxcb-image0", "fedora": "xcb-util-image", "arch": "xcb-util-image"},
    "libxcb-render-util.so.0": {"debian": "libxcb-render-util0", "fedora": "xcb-util-renderutil",
                                "arch": "xcb-util-renderutil"},
    "libxcb-util.so.1": {"debian": "libxcb-util1", "fedora": "xcb-util", "arch": "xcb-util"},
    "libxcb-xkb.so.1": {"debian": "libxcb-xkb1", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-shape.so.0": {"debian": "libxcb-shape0", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-randr.so.0": {"debian": "libxcb-randr0", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-sync.so.1": {"debian": "libxcb-sync1", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-xfixes.so.0": {"debian": "libxcb-xfixes0", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-shm.so.0": {"debian": "libxcb-shm0", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb-render.so.0": {"debian": "libxcb-render0", "fedora": "libxcb", "arch": "libxcb"},
    "libxcb.so.1": {"debian": "libxcb1", "fedora": "libxcb", "arch": "libxcb"},
    "libX11-xcb.so.1": {"debian": "libx11-xcb1", "fedora": "libX11-xcb", "arch": "libx11"},
    "libX11.so.6": {"debian": "libx11-6", "fedora": "libX11", "arch": "libx11"},
    "libxkbcommon-x11.so.0": {"debian": "libxkbcommon-x11-0", "fedora": "libxkbcommon-x11",
                              "arch": "libxkbcommon-x11"},
    "libxkbcommon.so.0": {"debian": "libxkbcommon0", "fedora": "libxkbcommon", "arch": "libxkbcommon"},
    "libwayland-client.so.0": {"debian": "libwayland-client0", "fedora": "libwayland-client", "arch": "wayland"},
    "libwayland-cursor.so.0": {"debian": "libwayland-cursor0", "fedora": "libwayland-cursor", "arch": "wayland"},
    "libEGL.so.1": {"debian": "libegl1", "fedora": "libglvnd-egl", "arch": "libglvnd"},
    "libGL.so.1": {"debian": "libgl1", "fedora": "libglvnd-glx", "arch": "libglvnd"},
    "libfontconfig.so.1": {"debian": "libfontconfig1", "fedora": "fontconfig", "arch": "fontconfig"},
    "libfreetype.so.6": {"debian": "libfreetype6", "fedora": "freetype", "arch": "freetype2"},
    "libdbus-1.so.3": {"debian": "libdbus-1-3", "fedora": "dbus-libs", "arch": "dbus"},
    "libglib-2.0.so.0": {"debian": "libglib2.0-0", "fedora": "glib2", "arch": "glib2"},
}
FAMILIES = {"debian": "apt install", "fedora": "dnf install", "arch": "pacman -S"}
PROBE_SECONDS = 20
# Opens Qt the way the studio does, without a window: enough to load the platform plugin.
_PROBE_MODULE = "studio.qt_probe"
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


@dataclass
class WindowCheck:
    can_open: bool
    platform: str  # the Qt platform plugin the studio would load: xcb, wayland, offscreen, ...
    reason: Optional[str] = None  # one line when it cannot open
    missing_libraries: list[str] = field(default_factory=list)
    # The packages that provide the missing libraries, per family of distributions.
    packages: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_window(env: Optional[dict[str, str]] = None, plugins: Optional[Path] = None,
                 probe: bool = True) -> WindowCheck:
    """Whether the studio's window can open with this environment (``os.environ`` by default);
    ``plugins`` is Qt's platform-plugin folder (PySide6's own by default). Without ``probe`` only
    the quick checks run (libraries, display variables): what the launcher can afford each time."""
    env = dict(os.environ if env is None else env)
    platform = qt_platform(env)
    plugins = plugins or _pyside_plugins()
    if plugins is None:
        return WindowCheck(False, platform, "PySide6 is not installed: the window needs it (the command line does not)")
    missing = missing_libraries(plugins / f"libq{platform}.so")
    if missing:
        packages = packages_for(missing)
        return WindowCheck(False, platform, _missing_line(missing, packages), missing, packages)
    if platform == "xcb" and not env.get("DISPLAY"):
        return WindowCheck(False, platform, "no display: DISPLAY is not set (the window needs a desktop "
                                            "session; the command line works without one)")
    if platform == "wayland" and not env.get("WAYLAND_DISPLAY"):
        return WindowCheck(False, platform, "no display: WAYLAND_DISPLAY is not set")
    failure = _probe(env) if probe else None
    return WindowCheck(failure is None, platform, failure)


def qt_platform(env: dict[str, str]) -> str:
    """The platform plugin Qt picks: QT_QPA_PLATFORM's first choice, Wayland in a Wayland
    session, X11 (xcb) otherwise, as Qt 6 does on Linux."""
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    if sys.platform != "linux":
        return {"darwin": "cocoa", "win32": "windows"}.get(sys.platform, sys.platform)
    if env.get("XDG_SESSION_TYPE") == "wayland" and env.get("WAYLAND_DISPLAY"):
        return "wayland"
    return "xcb"


def missing_libraries(plugin: Path) -> list[str]:
    """The shared libraries the dynamic loader cannot find for ``plugin`` (all the way down, as
    ``ldd`` resolves them); none where the plugin or ``ldd`` is absent (not Linux)."""
    ldd = shutil.which("ldd")
    if not plugin.is_file() or ldd is None:
        return []
    try:
        done = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(set(_NOT_FOUND.findall(done.stdout)))


def packages_for(libraries: list[str]) -> dict[str, list[str]]:
    """The packages that provide ``libraries``, per family; a library this table does not know
    is named as itself."""
    return {family: sorted({PACKAGES.get(lib, {}).get(family, lib) for lib in libraries}) for family in FAMILIES}


def distribution_family(os_release: Path = Path("/etc/os-release")) -> Optional[str]:
    """debian, fedora or arch for this machine's distribution (or one it is like), else None."""
    try:
        text = os_release.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    values = dict(re.findall(r'^(ID|ID_LIKE)="?([^"\n]*)"?', text, re.MULTILINE))
    names = f"{values.get('ID', '')} {values.get('ID_LIKE', '')}".split()
    aliases = {"ubuntu": "debian", "rhel": "fedora", "centos": "fedora", "manjaro": "arch"}
    return next((aliases.get(name, name) for name in names if aliases.get(name, name) in FAMILIES), None)


def _missing_line(missing: list[str], packages: dict[str, list[str]]) -> str:
    family = distribution_family()
    families = [family] if family else list(FAMILIES)
    installs = "; ".join(f"{FAMILIES[f]} {' '.join(packages[f])}" for f in families)
    return f"the window needs system libraries that are missing: {', '.join(missing)} ({installs})"


def _pyside_plugins() -> Optional[Path]:
    spec = importlib.util.find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "Qt" / "plugins" / "platforms"


def _probe(env: dict[str, str]) -> Optional[str]:
    """None when Qt starts with this environment, else the line of Qt's output that says why."""
    try:
        done = subprocess.run(python_module_command(_PROBE_MODULE), env=env, capture_output=True, text=True,
                              timeout=PROBE_SECONDS)
    except subprocess.TimeoutExpired:
        return f"Qt did not start within {PROBE_SECONDS} s"
    except OSError as exc:
        return f"Qt could not be started: {exc}"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    telling = next((line for line in lines if "could not" in line.lower() or "cannot" in line.lower()), None)
    return telling or (lines[-1] if lines else f"Qt exited with code {done.returncode}")
