"""The rows a run held out for validation, recorded in its run folder (``RunDir.heldout``)
so that an evaluation scores only rows the adapter never trained on.

The training child writes the record when it splits (``write_heldout``): the dataset, how it
was read, its SHA-256, the split's seed and share, and for each held-out row its place in the
reader's pass (``row``: the n-th row or problem, which is how it is found again), the line or
table row and file the reader names it by, and a hash of its conversation. ``read_heldout``
reads those rows back from the dataset and refuses, in one line, a dataset that is gone or no
longer holds them: the record never stands in for rows it cannot vouch for.

The hash is of the conversation the row becomes (its turns, in order), not of the file's bytes,
so the split (``engine.data.split.split_by_content``) holds every copy of a held-out row out
of training, whatever columns the row carries that training ignores.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Union

from engine.core.atomic import read_json_object, write_json
from engine.data.dataset import DataOptions, Sample, open_dataset
from engine.errors import StudioError
from engine.run.rundir import RunDir

VERSION = 1


def content_hash(conversation: list[dict]) -> str:
    """A hash of a row's conversation: equal for rows that train on the same turns."""
    text = json.dumps(conversation, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def write_heldout(run_dir: Union[str, Path], *, dataset: str, options: DataOptions, sha256: Optional[str],
                  seed: int, val_fraction: float, train_examples: int, rows: list[dict[str, Any]]) -> Path:
    """Record the held-out rows (each a dict of ``row``, ``line``, ``file``, ``unit``, ``hash``)."""
    path = RunDir(run_dir).heldout
    write_json(path, {
        "version": VERSION, "dataset": dataset,
        "format": options.format, "columns": options.columns, "text_split": options.text_split,
        "sha256": sha256, "seed": seed, "val_fraction": val_fraction,
        "train_examples": train_examples, "rows": rows,
    })
    return path


def heldout_record(run_dir: Union[str, Path]) -> dict[str, Any]:
    """The run's record of its held-out rows; StudioError when it has none."""
    path = RunDir(run_dir).heldout
    record = read_json_object(path)
    if record is None:
        reason = "it has no validation split" if not path.exists() else f"{path.name} is unreadable"
        raise StudioError(f"run {Path(run_dir).name} records no held-out rows: {reason}")
    if record.get("version") != VERSION or not isinstance(record.get("rows"), list):
        raise StudioError(f"run {Path(run_dir).name}: {path.name} is not a record of held-out rows this "
                          f"version reads")
    return record


def read_heldout(run_dir: Union[str, Path]) -> list[Sample]:
    """The rows the run held out, read back from its dataset, in file order.

    Raises StudioError (one line) when the dataset is gone or a held-out row is no longer
    where the run found it, unchanged: the dataset was edited after the run.
    """
    record = heldout_record(run_dir)
    dataset = str(record["dataset"])
    options = DataOptions(record.get("format"), dict(record.get("columns") or {}),
                          record.get("text_split") or "auto")
    wanted = {int(row["row"]): row for row in record["rows"]}
    try:
        source = open_dataset(dataset, options)
    except StudioError as exc:
        raise StudioError(f"cannot read the rows run {Path(run_dir).name} held out: {exc}") from None
    found: dict[int, Sample] = {}
    items = source.items()
    try:
        for number, item in enumerate(items):
            if len(found) == len(wanted):
                break
            row = wanted.get(number)
            if row is None:
                continue
            if not isinstance(item, Sample) or content_hash(item.conversation) != row["hash"]:
                raise StudioError(_changed(dataset, row, record.get("sha256"), Path(run_dir).name))
            found[number] = item
    finally:
        items.close()
    if len(found) < len(wanted):  # the file is shorter than it was
        first_missing = min(set(wanted) - set(found))
        raise StudioError(_changed(dataset, wanted[first_missing], record.get("sha256"), Path(run_dir).name,
                                   gone=True))
    return [found[number] for number in sorted(found)]


def _where(row: dict[str, Any]) -> str:
    place = f"{row.get('unit') or 'line'} {row.get('line')}"
    return f"{row['file']} {place}" if row.get("file") else place


def _changed(dataset: str, row: dict[str, Any], sha256: Optional[str], run: str, gone: bool = False) -> str:
    what = "ends before" if gone else "no longer holds the row held out at"
    since = f" (its SHA-256 was {sha256[:12]}…)" if sha256 else ""
    return (f"dataset {Path(dataset).name} changed since run {run} held rows out of it{since}: it {what} "
            f"{_where(row)}; evaluate on another dataset, or train again")
