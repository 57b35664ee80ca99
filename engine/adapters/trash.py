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
from engine.core.atomic import read_json_object, staging_path, write_json
from engine.core.fields import child_path, has_fields
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


def _read_entry(holder: Path) -> TrashEntry:
    """One holder's record, checked before anything of it becomes a path: the record is a file
    in the home that anyone can edit, and restoring moves what its ``name`` points at. A StudioError
    says what is wrong with a damaged or tampered record."""
    info = read_json_object(holder / _TRASH_INFO)
    if info is None or not has_fields(TrashEntry, info, ("name", "deleted", "size_bytes")):
        raise StudioError(f"the trash record {holder.name} is damaged (its {_TRASH_INFO} is not a deletion record)")
    stored = child_path(holder, info["name"], f"the trash record {holder.name}")
    if stored.is_symlink() or not stored.is_dir():
        raise StudioError(f"the trash record {holder.name} names {info['name']}, which is not in the trash")
    return TrashEntry(id=holder.name, name=info["name"], deleted=info["deleted"], size_bytes=info["size_bytes"])


def _holders() -> list[Path]:
    """The trash's entries; hidden ones are being removed for good."""
    return [holder for holder in folder_entries(_trash_dir()) if not holder.name.startswith(".")]


def list_trash() -> list[TrashEntry]:
    """What is in the trash, most recently deleted first; damaged or tampered records are left out."""
    entries = []
    for holder in _holders():
        try:
            entries.append(_read_entry(holder))
        except (StudioError, OSError):
            continue
    return sorted(entries, key=lambda e: e.deleted, reverse=True)


def restore_adapter(entry_id: str) -> Path:
    """Put a deleted adapter back under its old name (or ``NAME-2``... if that was taken since)."""
    writable_home()
    holder = next((holder for holder in _holders() if holder.name == entry_id), None)
    if holder is None:
        raise StudioError(f"nothing in the trash with id {entry_id!r}")
    entry = _read_entry(holder)
    target = adapters_dir() / unique_name(entry.name)
    os.rename(holder / entry.name, target)
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
