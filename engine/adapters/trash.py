"""The library's trash: deleting moves an entry into ``.trash`` (hidden, like every
dot-folder) with one rename, from where it can be restored or removed for good."""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.adapters.library import library_entry, now, unique_name
from engine.core.atomic import read_json_object
from engine.core.atomic import staging_path, write_json
from engine.errors import StudioError
from engine.paths import adapters_dir, folder_entries, home_folder, writable_home

TRASH = ".trash"
_TRASH_INFO = "deleted.json"


@dataclass
class TrashEntry:
    id: str
    name: str  # the adapter's name when it was deleted
    deleted: str
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trash_dir() -> Path:
    return home_folder(adapters_dir() / TRASH)


def delete_adapter(ref: str) -> TrashEntry:
    """Move a library entry into the trash (one rename); ``restore_adapter`` brings it back."""
    writable_home()
    path = library_entry(ref)
    entry_id = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    holder = _trash_dir() / entry_id
    holder.mkdir()
    entry = TrashEntry(id=entry_id, name=path.name, deleted=now(),
                       size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    write_json(holder / _TRASH_INFO, entry.to_dict())
    os.rename(path, holder / path.name)
    return entry


def list_trash() -> list[TrashEntry]:
    """What is in the trash, most recently deleted first."""
    entries = []
    for holder in folder_entries(_trash_dir()):
        info = read_json_object(holder / _TRASH_INFO)
        if info is None or not (holder / str(info.get("name"))).is_dir():
            continue
        entries.append(TrashEntry(id=holder.name, name=str(info["name"]), deleted=str(info.get("deleted", "")),
                                  size_bytes=int(info.get("size_bytes") or 0)))
    return sorted(entries, key=lambda e: e.deleted, reverse=True)


def restore_adapter(entry_id: str) -> Path:
    """Put a deleted adapter back under its old name (or ``NAME-2``... if that was taken since)."""
    writable_home()
    match = next((e for e in list_trash() if e.id == entry_id), None)
    if match is None:
        raise StudioError(f"nothing in the trash with id {entry_id!r}")
    holder = _trash_dir() / entry_id
    target = adapters_dir() / unique_name(match.name)
    os.rename(holder / match.name, target)
    shutil.rmtree(holder, ignore_errors=True)
    return target


def empty_trash() -> int:
    """Delete everything in the trash for good; the number of adapters removed."""
    writable_home()
    removed = 0
    for holder in list(_trash_dir().iterdir()):
        # Rename first, so a crash halfway never leaves a half-deleted entry that looks restorable.
        doomed = staging_path(holder, "removing")
        os.rename(holder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed += 1
    return removed
