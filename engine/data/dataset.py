"""Opening a dataset: a file, folder or hub dataset read through ``engine.data.readers``,
its row format settled by ``engine.data.formats`` from the first rows (so even a file of
a million rows opens at once), its rows as conversations, a preview of the first usable
ones, and a fingerprint of its contents.

A bad row never stops a pass: it becomes a ``RowProblem`` with its line, so the user can
fix the file or train on the good rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from engine.core.choices import PREFERENCE_FORMATS
from engine.data.formats import BadRow, Layout, choose_layout, converter, row_columns
from engine.data.pair_rows import pair_conversation, pair_converter
from engine.data.readers import (FolderReader, HubReader, RawRow, Reader, RowProblem, check_width, json_type,
                                  open_reader)
from engine.errors import StudioError

DETECT_ROWS = 200
PREVIEW_ROWS = 200
# The first rows (to detect the format) and a preview stop at this much of the file, even short
# of their row count: 200 rows near the bound on one row would otherwise all be held at once.
HEAD_BYTES = 16 << 20


@dataclass
class DataOptions:
    """How to read a dataset: its format and column mapping (None/empty: detect them), and
    for plain text, one document per line or chunks (auto: guessed from the file)."""

    format: Optional[str] = None
    columns: dict[str, str] = field(default_factory=dict)
    text_split: str = "auto"


@dataclass
class Sample:
    line: int
    conversation: list[dict]
    file: str = ""
    unit: str = "line"  # what ``line`` counts: a line of the file, or a row of a table (Parquet, the Hub)
    fields: dict[str, Any] = field(default_factory=dict)  # raw columns asked for by name (``items(keep=...)``)
    # A preference layout's row as TRL reads it (engine.data.pair_rows); ``conversation`` is then its
    # preferred answer's conversation (KTO: its one answer's), for the views that read conversations.
    pair: Optional[dict] = None


@dataclass
class DatasetFile:
    path: Path
    format: str
    conversations: list[list[dict]]
    problems: list[RowProblem] = field(default_factory=list)
    total_rows: int = 0
    kind: str = ""
    mapping: dict[str, str] = field(default_factory=dict)


class DatasetSource:
    """An opened dataset: its file type, its format and column mapping, and its columns.

    ``items()`` reads the rows from the start each time it is called, as samples and
    problems in file order; nothing is kept in memory between calls.
    """

    def __init__(self, reader: Reader, layout: Layout, columns: list[str]) -> None:
        self._reader = reader
        self._active = reader
        self.is_preference = layout.format in PREFERENCE_FORMATS
        self._convert = pair_converter(layout) if self.is_preference else converter(layout)
        self.layout = layout
        self.path = Path(reader.path)
        self.name = reader.name
        self.kind = reader.kind
        self.columns = columns
        self.text_split: Optional[str] = getattr(reader, "split", None)
        self.skipped_files: list[str] = reader.skipped_files if isinstance(reader, FolderReader) else []
        self.label = _label(reader)

    @property
    def format(self) -> str:
        return self.layout.format

    @property
    def mapping(self) -> dict[str, str]:
        return self.layout.mapping

    @property
    def ignored_columns(self) -> list[str]:
        used = set(self.mapping.values())
        return [column for column in self.columns if column not in used]

    def items(self, keep: tuple[str, ...] = (), prompts: bool = False) -> Iterator[Union[Sample, RowProblem]]:
        """The rows as samples and problems; ``keep`` names raw columns each sample carries in
        ``fields`` beside its conversation (an evaluation's label column). With ``prompts``, a row
        whose only fault is that no answer ends it is a sample too (an evaluation's prompt)."""
        reader = self._active = self._reader.fresh()
        for item in reader.items():
            if isinstance(item, RowProblem):
                yield item
                continue
            try:
                raw = item.value if isinstance(item.value, dict) else {}
                kept = {name: raw.get(name) for name in keep}
                if self.is_preference:
                    pair = self._convert(item.value)
                    yield Sample(item.line, pair_conversation(pair), item.file, item.unit, kept, pair)
                else:
                    yield Sample(item.line, self._convert(item.value), item.file, item.unit, kept)
            except BadRow as exc:
                if prompts and exc.prompt is not None:
                    yield Sample(item.line, exc.prompt, item.file, item.unit, kept)
                else:
                    yield RowProblem(item.line, str(exc), item.file, item.unit, exc.code)

    def bytes_read(self) -> int:
        """How much of the file the current ``items()`` pass has read."""
        return self._active.done

    def fraction_read(self) -> float:
        """How far the current ``items()`` pass has got, from 0 to 1."""
        return min(1.0, self._active.done / max(1, self._active.total))


def _label(reader: Reader) -> str:
    return f"folder {reader.name}" if isinstance(reader, FolderReader) else f"dataset {reader.name}"


def open_dataset(reference: Union[str, Path], options: Optional[DataOptions] = None) -> DatasetSource:
    """Open a file, folder or hub dataset and settle its format from the first rows.

    Raises StudioError when there is nothing to read or no format fits.
    """
    options = options or DataOptions()
    reader = open_reader(reference, options.text_split)
    label = _label(reader)
    head, complete = _first_items(reader)
    rows = [item.value for item in head if isinstance(item, RawRow)]
    if not head:
        raise StudioError(f"{label} is empty" if reader.is_blank() else f"{label} has no rows")
    if not any(isinstance(row, dict) for row in rows):
        first = next(item for item in head if isinstance(item, RowProblem) or not isinstance(item.value, dict))
        problem = first if isinstance(first, RowProblem) else RowProblem(
            first.line, f"row is a JSON {json_type(first.value)}, not an object", first.file, first.unit)
        which = "no usable rows" if complete else f"the first {len(head)} rows are all unusable"
        raise StudioError(f"{label}: {which} (first problem, {problem.where()}: {problem.reason})")
    if reader.kind == "text" and options.format not in (None, "text"):
        raise StudioError(f"{label} is plain text, which can only be trained on as raw text")
    columns = _columns(rows, label)
    layout = choose_layout(rows, options.format, options.columns, label)
    return DatasetSource(reader, layout, columns)


def _first_items(reader: Reader) -> tuple[list[Union[RawRow, RowProblem]], bool]:
    """The first ``DETECT_ROWS`` rows and problems, or fewer once ``HEAD_BYTES`` of the file are
    read; and whether they are all there is."""
    head: list[Union[RawRow, RowProblem]] = []
    items = reader.items()
    try:
        for item in items:
            head.append(item)
            if len(head) == DETECT_ROWS or reader.done > HEAD_BYTES:
                return head, next(items, None) is None
        return head, True
    finally:
        items.close()


def _columns(rows: list, label: str) -> list[str]:
    """The columns of the first rows, refused when too many to be a table of training rows."""
    columns = row_columns(rows)
    check_width(len(columns), label)
    return columns


def dataset_columns(reference: Union[str, Path], text_split: str = "auto") -> list[str]:
    """The columns of a dataset's first rows, to map by hand when no format fits them."""
    reader = open_reader(reference, text_split)
    head, _complete = _first_items(reader)
    return _columns([item.value for item in head if isinstance(item, RawRow)], _label(reader))


def load_dataset_file(path: Union[str, Path], options: Optional[DataOptions] = None) -> DatasetFile:
    """The whole dataset in memory: for small files, tests and the old callers."""
    source = open_dataset(path, options)
    conversations: list[list[dict]] = []
    problems: list[RowProblem] = []
    for item in source.items():
        if isinstance(item, Sample):
            conversations.append(item.conversation)
        else:
            problems.append(item)
    if not conversations:
        first = problems[0]
        raise StudioError(f"{source.label}: no usable rows (first problem, {first.where()}: {first.reason})")
    return DatasetFile(path=source.path, format=source.format, conversations=conversations, problems=problems,
                       total_rows=len(conversations) + len(problems), kind=source.kind, mapping=source.mapping)


@dataclass
class DatasetPreview:
    samples: list[Sample]
    problems: list[RowProblem]
    complete: bool  # True when these are all the rows there are


def preview_dataset(source: DatasetSource, limit: int = PREVIEW_ROWS) -> DatasetPreview:
    """The first ``limit`` usable rows, reading no further than it takes to find them."""
    samples: list[Sample] = []
    problems: list[RowProblem] = []
    items = source.items()
    # A file of bad rows must not be read to the end just to fill a preview, nor a file of huge rows
    # held in memory whole: it stops at the limit's worth of rows, or of the file.
    for item in islice(items, limit * 10):
        if isinstance(item, Sample):
            samples.append(item)
            if len(samples) == limit:
                break
        else:
            problems.append(item)
        if source.bytes_read() > HEAD_BYTES:
            break
    complete = next(items, None) is None
    items.close()
    return DatasetPreview(samples=samples, problems=problems, complete=complete)


def dataset_fingerprint(reference: Union[str, Path]) -> str:
    """SHA-256 of a dataset file, of a folder's dataset files (names and contents), or, for a
    hub dataset, of its id (the hub keeps the versions)."""
    reader = open_reader(reference)
    digest = hashlib.sha256()
    if isinstance(reader, HubReader):
        digest.update(reader.repo_id.encode())
        return digest.hexdigest()
    files = reader.files if isinstance(reader, FolderReader) else [reader.path]
    for path in files:
        if isinstance(reader, FolderReader):
            digest.update(str(path.relative_to(reader.path)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
