"""Shared fixtures: an isolated studio home per test and a tiny model built once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tiny_model import build_tiny_model  # noqa: E402

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Two cores on CI: keep torch from oversubscribing them in the test process.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty LORA_STUDIO_HOME; the real one is never touched."""
    home = tmp_path / "studio-home"
    home.mkdir()
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "tiny-llama")
