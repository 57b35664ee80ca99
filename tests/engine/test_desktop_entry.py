"""``lora-studio desktop install|uninstall`` as a pip or pipx user runs it, against a temporary
XDG data folder, and the version every part of the studio reports."""

from __future__ import annotations

import configparser
import os
import shutil
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from helpers import run_cli

from engine.desktop import APP_ID, PNG_SIZES, desktop_entry, icon_files
from engine.version import studio_version

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "peft", "PySide6", "shiboken6", "pyqtgraph")


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


def _entry(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in a desktop entry
    parser.read_string(text)
    return dict(parser["Desktop Entry"])


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", path
    return struct.unpack(">II", header[16:24])


def _validate(entry: Path) -> None:
    """desktop-file-validate (desktop-file-utils) when it is installed: the freedesktop.org checker."""
    validator = shutil.which("desktop-file-validate")
    if validator:
        checked = subprocess.run([validator, str(entry)], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def _ours(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and path.name.startswith((APP_ID, ".")))


def test_desktop_install_puts_the_studio_in_the_launcher_and_uninstall_takes_it_out(data_home, capsys):
    code, out, err = run_cli(["desktop", "install"], capsys)
    assert code == 0, err
    entry_file = data_home / "applications" / f"{APP_ID}.desktop"
    assert out.startswith(f"LoRA Studio is in the launcher: {entry_file} starts /")
    _validate(entry_file)
    entry = _entry(entry_file.read_text(encoding="utf-8"))
    command = Path(entry["Exec"])
    assert command.is_absolute() and command.name == APP_ID and os.access(command, os.X_OK), entry["Exec"]
    assert entry["TryExec"] == entry["Exec"]
    assert entry["Icon"] == APP_ID and entry["StartupWMClass"] == APP_ID  # what the window sets (test_app_identity)
    assert entry["Type"] == "Application" and entry["Name"] == "LoRA Studio" and entry["Terminal"] == "false"
    for size in PNG_SIZES:
        assert _png_size(data_home / f"icons/hicolor/{size}x{size}/apps/{APP_ID}.png") == (size, size)
    svg = data_home / f"icons/hicolor/scalable/apps/{APP_ID}.svg"
    assert svg.read_bytes().startswith(b"<svg")
    # The same command launched by hand says the version the package has.
    version = subprocess.run([str(command), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("lora-studio "), version.stderr

    code, out, err = run_cli(["desktop", "install", "--json"], capsys)  # again: replaces, never duplicates
    assert code == 0, err
    assert len(_ours(data_home)) == 1 + len(icon_files())

    code, out, err = run_cli(["desktop", "uninstall"], capsys)
    assert code == 0, err
    assert out.strip() == f"LoRA Studio is out of the launcher: {1 + len(icon_files())} files removed from {data_home}"
    assert _ours(data_home) == []
    # Only what the desktop database tool writes for the folder (when it is installed) may stay.
    assert {path.name for path in data_home.rglob("*") if path.is_file()} <= {"mimeinfo.cache"}
    assert not (data_home / "icons").exists()
    code, out, _ = run_cli(["desktop", "uninstall"], capsys)
    assert code == 0 and out.strip() == f"nothing to remove: no LoRA Studio desktop entry under {data_home}"


def _unwritable(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """An XDG data folder that cannot be written to, and what the one line says about it."""
    if kind == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into a folder whatever its permission bits say (the other case covers root)")
        folder = tmp_path / "share"
        folder.mkdir()
        folder.chmod(0o555)
        return folder, f"{folder} is read-only"
    blocker = tmp_path / "not-a-folder"  # a data home whose parent is a regular file: refused for root too
    blocker.write_text("a file where the folder would be\n")
    return blocker / "share", f"{blocker} is a file, where a folder is needed"


@pytest.mark.parametrize("kind", ["read-only folder", "a file in the way"])
def test_an_unwritable_data_folder_is_one_line_and_nothing_is_written(kind, tmp_path, monkeypatch, capsys):
    folder, reason = _unwritable(kind, tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    before = sorted(tmp_path.rglob("*"))
    try:
        code, out, err = run_cli(["desktop", "install"], capsys)
    finally:
        if folder.is_dir():
            folder.chmod(0o755)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: the desktop entry and icons were not installed"), err
    assert reason in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_an_install_that_fails_part_way_takes_back_what_it_wrote(data_home, capsys):
    in_the_way = data_home / f"icons/hicolor/256x256/apps/{APP_ID}.png"
    in_the_way.mkdir(parents=True)  # a folder where the last PNG goes: the other files are in by then
    code, out, err = run_cli(["desktop", "install"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{in_the_way} is a folder, where a file goes" in err
    assert sorted(data_home.rglob("*")) == [data_home / "icons", *in_the_way.parents[:3][::-1], in_the_way]


def test_the_exec_line_quotes_a_path_as_the_desktop_entry_spec_asks(tmp_path):
    # A space needs the quotes; a backslash inside them is four; a percent sign is doubled.
    entry = _entry(desktop_entry(r"/opt/My Apps/100% \lora-studio"))
    assert entry["Exec"] == r'"/opt/My Apps/100%% \\\\lora-studio"'
    assert entry["TryExec"] == r"/opt/My Apps/100% \\lora-studio"
    (tmp_path / "spaced.desktop").write_text(desktop_entry("/opt/My Apps/lora-studio"), encoding="utf-8")
    _validate(tmp_path / "spaced.desktop")
    assert _entry(desktop_entry("/usr/bin/lora-studio"))["Exec"] == "/usr/bin/lora-studio"  # the .deb's


def test_desktop_entries_are_refused_in_one_line_off_linux(data_home, monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "darwin")
    code, out, err = run_cli(["desktop", "install"], capsys)
    assert code == 2 and err.strip() == ("error: desktop entries are a Linux (XDG) thing, and this is darwin: start "
                                         "the studio with `lora-studio`")
    assert not data_home.exists()


def test_version_prints_the_package_version_without_loading_qt_or_torch():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert studio_version() == pyproject["version"]
    started = time.perf_counter()
    # -X importtime lists every module the command imports, on standard error.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "studio.launch", "--version"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0 and result.stdout == f"lora-studio {pyproject['version']}\n", result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "engine" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert elapsed < 10, f"--version took {elapsed:.1f} s"  # about 0.3 s; the imports above are the real bound
