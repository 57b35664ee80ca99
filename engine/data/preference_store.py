"""Preference datasets made in the studio: each choice in Compare ("A is better") appends one
pair to a JSONL file in the app's ``preferences`` folder, in the ``preference`` layout that
``engine.data.preference`` reads (and TRL's DPO trainer reads as it is):

    {"prompt": [messages], "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}], "made_with": {...}}

``made_with`` records what produced the two answers (the models or adapters, the sampling
settings, the time); a reader ignores it. A pair is appended as one line in one write and
flushed to disk before the call returns, so a crash loses at most the pair being written;
a torn last line (power lost mid-write) is skipped and counted by the reader, never trained.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.core.names import is_valid_name
from engine.errors import StudioError
from engine.paths import preferences_dir

SUFFIX = ".jsonl"
DEFAULT_SET = "my-preferences"


@dataclass(frozen=True)
class PreferenceSet:
    name: str
    path: Path
    pairs: int  # complete lines; a torn last line is not a pair


def set_path(name: str) -> Path:
    """The file of the preference set ``name``, refused unless the name is a plain one."""
    if not is_valid_name(name):
        raise StudioError(f"preference set name {name!r} may only use letters, digits, '.', '_' and '-' (at most 80)")
    return preferences_dir() / f"{name}{SUFFIX}"


def preference_sets() -> list[PreferenceSet]:
    """Every preference set in the library with its pair count, newest first."""
    return [PreferenceSet(path.stem, path, count_pairs(path)) for path in _set_files()]


def set_names() -> list[str]:
    """The names of the library's preference sets, newest first, without reading them."""
    return [path.stem for path in _set_files()]


def _set_files() -> list[Path]:
    folder = preferences_dir()
    if not folder.is_dir():
        return []
    files = sorted(folder.glob(f"*{SUFFIX}"), key=lambda path: path.stat().st_mtime, reverse=True)
    return [path for path in files if is_valid_name(path.stem)]


def count_pairs(path: Path) -> int:
    """The complete lines of a set's file (each one pair)."""
    with open(path, "rb") as stream:
        return sum(1 for line in stream if line.endswith(b"\n") and line.strip())


def check_pair(prompt: list[dict], chosen: str, rejected: str) -> None:
    """StudioError (one line) for a pair a preference trainer could not learn from: no user
    message to answer, an answer without text, or two answers the same. Callers writing
    several pairs at once check them all first, so that a refused one leaves none written."""
    if not prompt or prompt[-1].get("role") != "user":
        raise StudioError("a preference pair needs the user's message the two answers reply to")
    if not chosen.strip() or not rejected.strip():
        raise StudioError("both answers of a preference pair need text: write the better answer, or skip the pair")
    if chosen.strip() == rejected.strip():
        raise StudioError("the two answers are the same: nothing to prefer, so the pair is skipped")


def append_pair(name: str, prompt: list[dict], chosen: str, rejected: str,
                made_with: Optional[dict[str, Any]] = None) -> PreferenceSet:
    """Add one pair to the set ``name`` (created when new): ``prompt`` is the conversation up to
    the answers, ``chosen`` the better answer and ``rejected`` the worse. Refuses a pair a
    preference trainer could not learn from, before anything is written."""
    check_pair(prompt, chosen, rejected)
    row = {"prompt": [{"role": message["role"], "content": message["content"]} for message in prompt],
           "chosen": [{"role": "assistant", "content": chosen}],
           "rejected": [{"role": "assistant", "content": rejected}],
           "made_with": {**(made_with or {}), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
    path = set_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "ab") as stream:
        if stream.tell() and not _ends_with_newline(path):
            line = b"\n" + line  # a torn last line stays on its own line, where readers skip it
        stream.write(line)
        stream.flush()
        os.fsync(stream.fileno())
    return PreferenceSet(name, path, count_pairs(path))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as stream:
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) == b"\n"
