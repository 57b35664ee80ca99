"""Where the studio keeps its data: model store, adapter library, runs, settings.

Everything lives under one home folder: the platform's user data directory, or
``LORA_STUDIO_HOME`` when set (tests point it at a temporary folder).

A home that cannot be written to (mounted read-only, another user's) can still be read:
the folder functions here do not fail on it, so listing goes on, and every operation that
writes into the home calls ``writable_home`` first, which refuses it in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from engine.core.atomic import READ_ONLY_ERRNOS, check_writable, sweep_staging

# The engine's package data (sample datasets, model catalog), installed with the package.
RESOURCES = Path(__file__).resolve().parent / "resources"
SAMPLE_DATASETS = RESOURCES / "datasets"


def _home_path() -> Path:
    override = os.environ.get("LORA_STUDIO_HOME")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("lora-studio", appauthor=False))


def home_folder(folder: Path) -> Path:
    """Create ``folder`` if it can be; in a read-only home it is returned as it is (maybe absent:
    ``folder_entries`` finds nothing in it, writers are refused by ``writable_home``)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno not in READ_ONLY_ERRNOS:
            raise
    return folder


def studio_home() -> Path:
    return home_folder(_home_path())


def _subdir(name: str) -> Path:
    return home_folder(studio_home() / name)


def models_dir() -> Path:
    return _subdir("models")


def adapters_dir() -> Path:
    return _subdir("adapters")


def runs_dir() -> Path:
    return _subdir("runs")


def preferences_dir() -> Path:
    """Preference datasets made in the studio (Compare's "A is better"), one JSONL file each."""
    return _subdir("preferences")


def evaluations_dir() -> Path:
    """Where each evaluation's full results (every example's answers and scores) are kept, one JSON
    file per evaluation; an adapter's studio.json keeps only its summary and this file's path."""
    return _subdir("evaluations")


# What the studio makes from an adapter goes, unless the user picks another place, into a folder
# of its own home per kind (the file or folder name: the adapter's, marked): one rule for every
# export, so a user finds them together, never scattered in their home folder.
ExportKind = Literal["merged", "gguf", "vllm"]
_EXPORTS: dict[str, str] = {"merged": "{adapter}-merged", "gguf": "{adapter}.gguf", "vllm": "{adapter}-vllm"}


def export_path(adapter: str, kind: ExportKind) -> Path:
    """The default destination of an adapter's export of ``kind`` ("merged": a model folder,
    "gguf": a GGUF file, "vllm": a folder that serves it on vLLM), in ``studio_home()/<kind>``,
    which is created here."""
    return _subdir(kind) / _EXPORTS[kind].format(adapter=adapter)


def folder_entries(folder: Path) -> list[Path]:
    """What is in a home folder; nothing when it is absent (a read-only home that never had it)."""
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def writable_home() -> Path:
    """The home, after a real write into it: a StudioError ``<home> is read-only`` otherwise.
    Every operation that adds, changes or removes something in the home calls it first."""
    home = studio_home()
    check_writable(home)
    return home


# Where temporary siblings are staged in the home (engine.core.atomic): the store, the library
# and its trash, the runs folder, the evaluations' results, each run's folder and what the training
# child writes in it.
_STAGING_FOLDERS = ("models", "adapters", "adapters/.trash", "runs", "evaluations")
_RUN_STAGING_FOLDERS = (".", "checkpoints", "data")


def sweep_home() -> list[Path]:
    """Remove what killed processes left staged in the home (a merge, an import, a conversion,
    a checkpoint moved aside, a JSON file half-written); never what a live process is writing.
    The CLI and the studio call it at start; it never raises (a read-only home is left as is)."""
    home = _home_path()
    removed = sweep_staging(home)
    for name in _STAGING_FOLDERS:
        removed += sweep_staging(home / name)
    try:
        runs = [run for run in (home / "runs").iterdir() if run.is_dir() and not run.name.startswith(".")]
    except OSError:
        runs = []
    for run in runs:
        for name in _RUN_STAGING_FOLDERS:
            removed += sweep_staging(run / name)
    return removed
