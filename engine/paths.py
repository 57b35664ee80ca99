"""Where the studio keeps its data: model store, adapter library, runs, settings.

Everything lives under one home folder: the platform's user data directory, or
``LORA_STUDIO_HOME`` when set (tests point it at a temporary folder).
"""

from __future__ import annotations

import os
from pathlib import Path

# The engine's package data (sample datasets, model catalog), installed with the package.
RESOURCES = Path(__file__).resolve().parent / "resources"
SAMPLE_DATASETS = RESOURCES / "datasets"


def studio_home() -> Path:
    override = os.environ.get("LORA_STUDIO_HOME")
    if override:
        home = Path(override).expanduser()
    else:
        from platformdirs import user_data_dir

        home = Path(user_data_dir("lora-studio", appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def _subdir(name: str) -> Path:
    path = studio_home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    return _subdir("models")


def adapters_dir() -> Path:
    return _subdir("adapters")


def runs_dir() -> Path:
    return _subdir("runs")
