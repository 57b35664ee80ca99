"""Atomic writes: a crash never leaves a half-written file or folder in place.

Write into a temporary sibling, flush it to disk, then rename over the target.
A rename within one file system is atomic, so readers see the old or the new
content, never a mix.

Every temporary sibling the engine makes follows one naming rule (``staging_path``):
``.<target>.<pid>-<random>.<kind>``, hidden, beside what it becomes, naming the process that
writes it. A process killed mid-write (SIGKILL, a power cut) cannot clean up after itself;
``sweep_staging`` removes what such a process left, and never what a live one is writing.

A write the file system refuses is one readable line (``write_refused``): ``<folder> is
read-only`` for a read-only mount or a folder without permission, ``the disk is full`` for a
full one; it is still an OSError (errno kept) for code that handles failed writes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from engine.errors import StudioError

# What a staged sibling is for: a file being written (tmp), a folder being filled (partial), an
# entry being deleted (removing), a folder moved aside while its replacement goes in (old), a
# scratch model (merged).
STAGING_KINDS = ("tmp", "partial", "removing", "old", "merged")
_STAGED = re.compile(r"\.(?P<target>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>" + "|".join(STAGING_KINDS) + ")")
# Versions before the rule named no process: such a sibling is stale once nobody could still be
# writing it (no write in the engine stays silent for a day).
_LEGACY = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{8}\.(?P<kind>" + "|".join(STAGING_KINDS) + ")|\\.import-[0-9a-f]{8}")
LEGACY_STALE_S = 24 * 3600

READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def staging_path(target: Path, kind: str = "partial") -> Path:
    """The hidden sibling of ``target`` that this process stages it in (see the module's note)."""
    assert kind in STAGING_KINDS, kind
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def sweep_staging(folder: Path) -> list[Path]:
    """Remove what killed processes left staged directly in ``folder``; the paths removed.

    An entry is kept while the process its name gives is alive and started before the entry was
    last changed (a process started later only reuses a dead writer's pid). Nothing here raises:
    a folder that is missing, unreadable or read-only is simply left as it is.
    """
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    removed = []
    for entry in entries:
        if _stale(entry) and _remove(entry):
            removed.append(entry)
    return removed


def _stale(entry: Path) -> bool:
    try:
        changed = entry.lstat().st_mtime
    except OSError:
        return False  # gone meanwhile
    staged = _STAGED.fullmatch(entry.name)
    if staged is not None:
        return not _writer_alive(int(staged["pid"]), changed)
    return _LEGACY.fullmatch(entry.name) is not None and time.time() - changed > LEGACY_STALE_S


def _writer_alive(pid: int, changed: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # another user's process we may not inspect: leave its files alone
    return started <= changed + 1.0  # create_time and mtime come from different clocks' roundings


def _remove(entry: Path) -> bool:
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    except FileNotFoundError:
        return False  # another sweep was faster
    except OSError:
        return False  # a read-only home: left for a start that can write
    return True


class WriteRefused(StudioError, OSError):
    """A write the file system refused (read-only, no permission, full): one line for the user,
    and still the OSError that code handling a failed write expects (``errno`` kept)."""


def write_refused(folder: Path, exc: OSError) -> Optional[WriteRefused]:
    """The one line for ``exc`` raised by a write into ``folder``; None for another error."""
    if exc.errno in READ_ONLY_ERRNOS:
        text = (f"{folder} is read-only ({exc.strerror or exc}): nothing can be written there; "
                "make it writable or choose another folder")
    elif exc.errno in DISK_FULL_ERRNOS:
        text = f"the disk is full ({folder}): free some space, then try again"
    else:
        return None
    error = WriteRefused(text)
    error.errno = exc.errno
    return error


def check_writable(folder: Path) -> None:
    """Refuse, with ``write_refused``, a folder that cannot be written to, before an operation
    spends minutes on work it could not save. Tried with a real write: permission bits say
    nothing to root, and only the file system knows it is mounted read-only."""
    probe = staging_path(Path(folder) / "write-check", "tmp")
    with writes_into(folder):
        probe.touch()
    probe.unlink(missing_ok=True)


@contextmanager
def writes_into(folder: Path) -> Iterator[None]:
    """Writes into ``folder``: one the file system refuses is ``write_refused``'s line. Only around
    writes, so that an unreadable source is never blamed on the destination."""
    try:
        yield
    except WriteRefused:
        raise
    except OSError as exc:
        refused = write_refused(Path(folder), exc)
        if refused is None:
            raise
        raise refused from exc


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = staging_path(path, "tmp")
    try:
        with writes_into(path.parent), open(tmp, "w", encoding="utf-8") as handle:
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
    What killed writers left beside ``target`` is swept first (the owner of a folder
    cleans up after earlier tries, wherever that folder is).
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(target)
    sweep_staging(target.parent)
    staging = staging_path(target, "partial")
    with writes_into(target.parent):
        staging.mkdir(parents=True)
    try:
        yield staging  # what the body raises is its own to word: a library error, a full disk
        with writes_into(target.parent):
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
