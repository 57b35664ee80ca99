"""Atomic writes: a crash never leaves a half-written file or folder in place.

Write into a temporary sibling, flush it to disk, then rename over the target.
A rename within one file system is atomic, so readers see the old or the new
content, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


@contextmanager
def staged_directory(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it is renamed to ``target``.

    If the body raises, the temporary folder is removed and ``target`` is untouched.
    ``target`` must not exist yet: the library never overwrites an entry in place.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(target)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir(parents=True)
    try:
        yield staging
        _fsync_tree(staging)
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_json_object(path: Path) -> Optional[dict[str, Any]]:
    """The JSON object in ``path``; None when the file is missing, unreadable, not JSON or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested past Python's stack
        return None
    return data if isinstance(data, dict) else None
