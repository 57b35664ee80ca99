"""The studio as a Linux desktop application: its desktop entry and icons, in one place for every
way it is installed.

The entry's template and the icons (the SVG and PNGs rendered from it by
tools/render_app_icons.py) are package data under ``engine/resources/desktop``. Three consumers
take them from here: ``lora-studio desktop install`` for pip and pipx installs (into the user's XDG
data folder), the .deb (``desktop_entry("/usr/bin/lora-studio")`` and ``icon_files()`` under
/usr/share) and the bundle. ``APP_ID`` is also what the window says it is (studio.app sets it as the
desktop file name and the X11 WM_CLASS), so that launchers and taskbars match the window to the entry.

Nothing here imports Qt: the engine never does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterator, Union

from engine.core.atomic import staging_path, write_refused
from engine.errors import StudioError
from engine.paths import RESOURCES

# The command, the desktop file's name, the icon's name and the window's WM_CLASS (both parts).
APP_ID = "lora-studio"
DESKTOP_RESOURCES = RESOURCES / "desktop"
ENTRY_TEMPLATE = DESKTOP_RESOURCES / f"{APP_ID}.desktop"
# A hicolor icon theme tree, laid out as under share/icons.
_ICON_THEME = DESKTOP_RESOURCES / "icons" / "hicolor"
APP_SVG = _ICON_THEME / "scalable" / "apps" / f"{APP_ID}.svg"
# The sizes launchers, taskbars and Alt-Tab ask for most, 16 (menus) to 256 (HiDPI docks).
PNG_SIZES = (16, 32, 48, 64, 128, 256)
# Where the entry goes, relative to a share/ folder (an XDG data home, /usr/share).
ENTRY_FILE = f"applications/{APP_ID}.desktop"
CACHE_TOOL_TIMEOUT_S = 30

# Characters that make the desktop entry spec's Exec parser need the argument quoted, and those that
# must be escaped with a backslash inside the quotes.
_EXEC_RESERVED = set(" \t\"'\\><~|&;$*?#()`")
_EXEC_ESCAPED = re.compile(r'(["`$\\])')

PathLike = Union[str, Path]


def png_icon(size: int) -> Path:
    """The packaged PNG of the app icon at ``size`` x ``size`` pixels."""
    return _ICON_THEME / f"{size}x{size}" / "apps" / f"{APP_ID}.png"


def icon_files() -> list[tuple[str, Path]]:
    """Every icon file, as (path relative to a share/ folder, the packaged file): the PNG sizes,
    then the SVG for launchers that draw it at any size."""
    files = [(f"icons/hicolor/{size}x{size}/apps/{APP_ID}.png", png_icon(size)) for size in PNG_SIZES]
    return [*files, (f"icons/hicolor/scalable/apps/{APP_ID}.svg", APP_SVG)]


def desktop_entry(exec_path: PathLike) -> str:
    """The desktop entry, launching the absolute ``exec_path`` (a launcher runs it without the
    user's shell, so a command name alone depends on a PATH the session may not have)."""
    path = str(exec_path)
    if not os.path.isabs(path):
        raise StudioError(f"the desktop entry needs an absolute path to the command, not {path!r}")
    if not path.isprintable():
        raise StudioError(f"the desktop entry cannot launch {path!r}: a line break or control character in its path")
    values = {"Exec": _exec_value(path), "TryExec": _string_value(path)}
    lines = []
    for line in ENTRY_TEMPLATE.read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={values.pop(key)}" if key in values else line)
    assert not values, f"{ENTRY_TEMPLATE} has no {', '.join(values)} line"
    return "\n".join(lines) + "\n"


def _string_value(text: str) -> str:
    """A value of the spec's type string: a backslash is written as two."""
    return text.replace("\\", "\\\\")


def _exec_value(path: str) -> str:
    """``path`` as the only argument of an Exec key: quoted when it holds a reserved character,
    escaped as a string, and with ``%`` doubled (a lone ``%`` starts a field code)."""
    if any(char in _EXEC_RESERVED for char in path):
        path = '"' + _EXEC_ESCAPED.sub(r"\\\1", path) + '"'
    return _string_value(path).replace("%", "%%")


# --- a pip or pipx install: the user's XDG data folder -------------------------------------------

def xdg_data_home() -> Path:
    """``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or not absolute (the XDG base
    directory spec says a relative one is ignored)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if os.path.isabs(value) else Path.home() / ".local" / "share"


def launcher_command() -> Path:
    """The ``lora-studio`` command that is running, for the entry's Exec: the bundle's binary when
    frozen (PyInstaller), else the console script this interpreter installed (the one typed, when
    it was typed: pipx's link in ~/.local/bin survives an upgrade of the venv behind it)."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable)
    typed = Path(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else None
    candidates = [typed] if typed is not None and typed.name == APP_ID else []
    for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user")):
        candidates.append(Path(sysconfig.get_path("scripts", scheme)) / APP_ID)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StudioError(f"the {APP_ID} command was not found beside this Python ({sys.executable}): install the "
                      f"package with pip or pipx, then run `{APP_ID} desktop install` again")


def require_xdg_desktop() -> None:
    """Refuse, in one line, a platform without XDG desktop entries."""
    if not sys.platform.startswith("linux"):
        raise StudioError(f"desktop entries are a Linux (XDG) thing, and this is {sys.platform}: start the studio "
                          f"with `{APP_ID}`")


def install(data_home: Path, exec_path: PathLike) -> list[Path]:
    """Write the entry (launching ``exec_path``) and the icons under ``data_home``; the files written.

    All or nothing: every file is staged beside its place first, then renamed in. If any step
    fails, what this call wrote (staged files, files renamed in, folders it made) is removed and
    the failure is one line.
    """
    require_xdg_desktop()
    data_home = Path(data_home)
    files = [(ENTRY_FILE, desktop_entry(exec_path).encode("utf-8"))]
    files += [(relative, source.read_bytes()) for relative, source in icon_files()]
    made_folders: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for relative, data in files:
            target = data_home / relative
            made_folders += _make_folders(target.parent)
            staged.append((staging_path(target, "tmp"), target))
            _write_synced(staged[-1][0], data)
        for staging, target in staged:
            os.replace(staging, target)
            placed.append(target)
    except OSError as exc:
        _remove_quietly([staging for staging, _ in staged] + placed, made_folders)
        raise StudioError(f"the desktop entry and icons were not installed (nothing was left behind): "
                          f"{_why_not_written(exc)}") from exc
    except BaseException:
        _remove_quietly([staging for staging, _ in staged] + placed, made_folders)
        raise
    refresh_caches(data_home)
    return placed


def uninstall(data_home: Path) -> list[Path]:
    """Remove what ``install`` writes under ``data_home``; the files removed (none when it was not
    installed). Folders left empty by it go too: an empty XDG folder means the same as none."""
    require_xdg_desktop()
    data_home = Path(data_home)
    removed = []
    for relative in _installed_paths():
        target = data_home / relative
        try:
            target.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StudioError(f"the desktop entry was not removed completely: {_why_not_written(exc)}") from exc
        removed.append(target)
        for folder in _folders_between(target.parent, data_home):
            try:
                folder.rmdir()
            except OSError:  # not empty (other apps' entries and icons): stop there
                break
    if removed:
        refresh_caches(data_home)
    return removed


def _installed_paths() -> list[str]:
    return [ENTRY_FILE, *(relative for relative, _ in icon_files())]


def _folders_between(folder: Path, top: Path) -> Iterator[Path]:
    """``folder`` and its parents, up to ``top`` (not included)."""
    while folder != top and top in folder.parents:
        yield folder
        folder = folder.parent


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and the parents it lacks; the ones created, outermost first."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # created meanwhile by someone else: not ours to remove
            if not path.is_dir():
                raise
            continue
        made.append(path)
    return made


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _remove_quietly(files: list[Path], folders: list[Path]) -> None:
    """Undo a failed install: remove ``files``, then ``folders`` innermost first (best effort: a
    folder that refused the write may refuse the removal too, and then holds nothing of ours)."""
    for file in files:
        try:
            file.unlink(missing_ok=True)
        except OSError:
            pass
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            pass


def _why_not_written(exc: OSError) -> str:
    """One line for a write that failed: the file system's refusal as the engine words it, or what
    was in the way."""
    target = exc.filename2 or exc.filename  # a rename names its source first, then its target
    refused = write_refused(Path(target).parent if target else Path.cwd(), exc)
    if refused is not None:
        return str(refused)
    if isinstance(exc, FileExistsError):
        return f"{target} is a file, where a folder is needed"
    if isinstance(exc, NotADirectoryError):
        return f"cannot create {target}: part of its path is a file, not a folder"
    if isinstance(exc, IsADirectoryError):
        return f"{target} is a folder, where a file goes"
    return f"{target}: {exc.strerror or exc}" if target else str(exc)


def refresh_caches(data_home: Path) -> None:
    """Tell launchers the entries and icons changed, as xdg-utils does: rebuild the desktop
    database and, where the icon theme folder already has a cache, that cache (without one, GTK
    reads the folders and sees the change by their time stamps). Missing tools are fine: most
    launchers watch these folders themselves."""
    applications = data_home / "applications"
    database = shutil.which("update-desktop-database")
    if database and applications.is_dir():
        _run_quietly([database, "-q", str(applications)])
    theme = data_home / "icons" / "hicolor"
    if theme.is_dir():
        try:
            os.utime(theme)
        except OSError:
            pass
        icon_cache = shutil.which("gtk-update-icon-cache")
        if icon_cache and (theme / "icon-theme.cache").is_file():
            _run_quietly([icon_cache, "-q", "-t", "-f", str(theme)])


def _run_quietly(command: list[str]) -> None:
    try:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=CACHE_TOOL_TIMEOUT_S,
                       check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass  # a cache refreshed later (at the next login) is no reason to fail the install
