"""The studio's version: one string, for ``lora-studio --version``, Help ▸ About, ``doctor`` and the
bundle's file name.

pyproject.toml holds it; an installed copy (a wheel, pipx, a PyInstaller bundle, which copies the
metadata in) reads it from the package metadata. A source checkout reads pyproject.toml itself: the
metadata found on the path may belong to another copy (an editable install of another worktree, or one
made before the version changed), and the code that runs is the checkout's. Importing this module
loads nothing heavy (``--version`` answers in a fraction of a second).
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

DISTRIBUTION = "lora-studio"
# Where pyproject.toml lies when the engine runs from a source checkout (engine/ is beside it).
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@lru_cache(maxsize=1)
def studio_version() -> str:
    """The version of the studio that is running, e.g. ``0.1.0``."""
    found = _checkout_version(_CHECKOUT_PYPROJECT)
    if found is not None:
        return found
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # copied files with neither metadata nor pyproject.toml: a broken bundle
        return "unknown"


def _checkout_version(pyproject: Path) -> Optional[str]:
    """The version pyproject.toml gives, when ``pyproject`` is this distribution's; None otherwise
    (an installed copy has no pyproject.toml beside its packages)."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DISTRIBUTION or not isinstance(project.get("version"), str):
        return None
    return project["version"]
