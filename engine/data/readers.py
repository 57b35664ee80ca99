"""Reading dataset files of every common type, one row at a time.

A reader turns a file, a folder of files or a Hugging Face hub dataset into a
stream of ``RawRow`` (where the row starts and its value: a dict for tables and
JSON objects, ``{"text": ...}`` for plain text) and ``RowProblem`` (a line that
is not JSON, bytes that are not UTF-8, a CSV row with the wrong number of
fields). Rows are read only as they are asked for, so the first rows of a huge
file are ready at once and a whole pass holds one small batch in memory. A JSON
document is the exception: it is one value, so its text is read whole (up to
``MAX_JSON_BYTES``), but its rows are still decoded one at a time.

Nothing here imports torch; pyarrow and datasets are imported only for Parquet
and hub datasets.

Reading is linear in the file and bounded per row: a line or CSV record is read with a
bounded read (never a whole line first), so a file whose rows lost their line breaks, or a
table of a million columns, is refused in one line that names the file, the row and the
limit instead of hanging or running out of memory. The limits are ``MAX_ROW_BYTES``,
``MAX_JSON_BYTES`` and ``MAX_COLUMNS`` below.

It stays one module, past 500 lines, because the readers share the row types, the
byte-level helpers (BOM, undecodable bytes, buffered reads, line counting) and one
dispatch (``open_reader``, ``file_reader``, the folder reader) that names every one of them.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from engine.core.choices import TEXT_SPLITS
from engine.errors import StudioError, first_line

CHUNK_CHARS = 2000
_MiB = 1 << 20
# One row (a line of JSONL or text, a CSV record, a Parquet row on average): 64 MiB is hundreds
# of times what any model's context holds, so only a file that is not laid out in rows (a lost
# line break, one document pretending to be many) reaches it. Its decoded objects take a few
# times this in memory; a pass holds one row (one small batch) at a time.
MAX_ROW_BYTES = 64 * _MiB
# A .json document is one value and is read whole (with its rows decoded), so it is bounded too:
# beyond this the way out is JSONL, which is read a row at a time.
MAX_JSON_BYTES = 128 * _MiB
# A table's columns: every row becomes a dict with one entry per column, so a header of a
# million empty cells would cost ~100 bytes per column in every row.
MAX_COLUMNS = 10_000
SUFFIXES = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".jsonlines": "jsonl", ".json": "json",
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".txt": "text", ".text": "text", ".md": "text",
}
KNOWN_TYPES = ".jsonl, .json, .csv, .tsv, .parquet or .txt"
# In a folder, Markdown is the dataset's documentation (README.md, a dataset card), not its data.
_FOLDER_SKIPS = {".md"}
_BOM = codecs.BOM_UTF8
_SNIFF_BYTES = 64 * 1024
# Bytes that are not UTF-8, decoded with errors="surrogateescape", become these.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Keys that hold one row's turns, not the file's rows, when a JSON object holds lists.
_TURN_KEYS = {"messages", "conversations", "conversation", "history", "chat", "dialog", "dialogue"}


@dataclass
class RowProblem:
    """A row that cannot be used, where it is and why. ``code`` groups problems for counting."""

    line: int
    reason: str
    file: str = ""
    unit: str = "line"
    code: str = "bad_row"

    def where(self) -> str:
        if self.unit == "file":
            return self.file
        place = f"{self.unit} {self.line}"
        return f"{self.file} {place}" if self.file else place


@dataclass
class RawRow:
    line: int
    value: Any
    file: str = ""
    unit: str = "line"


Item = Union[RawRow, RowProblem]


class Reader(ABC):
    """One pass over a dataset. ``done``/``total`` measure how far the pass has got."""

    kind = ""
    unit = "line"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        self.done = 0
        self.total = max(1, _size(path))

    @abstractmethod
    def items(self) -> Iterator[Item]:
        """The rows and problems, in file order."""

    @abstractmethod
    def fresh(self) -> "Reader":
        """A new reader of the same data, to read it again from the start."""

    def row_too_long(self, number: int, hint: str) -> StudioError:
        """The refusal of a row over ``MAX_ROW_BYTES``, naming the file, the row and the limit."""
        return StudioError(f"dataset {self.name}: {self.unit} {number} is over the {limit_text(MAX_ROW_BYTES)} "
                           f"limit for one row; {hint}")

    def is_blank(self) -> bool:
        """True when the file holds nothing but white space (checked as far as the first character)."""
        with _open_binary(self.path) as handle:
            for block in iter(lambda: handle.read(_SNIFF_BYTES), b""):
                if block.replace(_BOM, b"").strip():
                    return False
        return True


def open_reader(reference: str | Path, text_split: str = "auto") -> Reader:
    """The reader for a file, a folder or (when no such path exists) a hub dataset id."""
    if text_split not in TEXT_SPLITS:
        raise StudioError(f"unknown text split {text_split!r}; choose one of {', '.join(TEXT_SPLITS)}")
    path = Path(reference).expanduser()
    if path.is_dir():
        return FolderReader(path, text_split)
    if path.is_file():
        return file_reader(path, text_split)
    if path.suffix.lower() not in SUFFIXES and _HUB_ID.match(str(reference)):
        return HubReader(str(reference))
    raise StudioError(f"dataset not found: {path}")


def file_reader(path: Path, text_split: str = "auto") -> Reader:
    kind = SUFFIXES.get(path.suffix.lower()) or _sniff_kind(path)
    if kind in ("json", "jsonl"):
        return _json_reader(path, kind)
    if kind in ("csv", "tsv"):
        return CsvReader(path, "\t" if kind == "tsv" else ",")
    if kind == "parquet":
        return ParquetReader(path)
    return TextReader(path, text_split)


# Read a megabyte at a time. With the default 8 KiB, a reader on a worker thread releases and
# retakes the GIL at every small read and the window's thread rarely gets it in between:
# previewing a 100,000-row file stalled the studio's window for 100-300 ms at a time.
_READ_BUFFER = 1 << 20


def limit_text(limit: int) -> str:
    """A limit as messages show it: '64 MiB', '1000 bytes' (tests use small ones)."""
    return f"{limit // _MiB} MiB" if limit % _MiB == 0 else f"{limit} bytes"


def check_width(columns: int, label: str) -> None:
    """Refuse a table wider than ``MAX_COLUMNS`` before a row of it is read."""
    if columns > MAX_COLUMNS:
        raise StudioError(f"{label} has {columns:,} columns, over the limit of {MAX_COLUMNS:,}; "
                          "keep the columns to train on in a file of their own")


def _bounded_lines(handle: io.BufferedReader, reader: Reader, hint: str) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) for each line, counting the bytes read into ``reader.done``.

    Each line is read with a bounded read, so a line over ``MAX_ROW_BYTES`` (a many-GB file with no
    line break at all) is refused after reading the limit's worth, never held whole. The BOM is cut
    from the first line; the line break does not count towards the limit.
    """
    limit = MAX_ROW_BYTES
    number = 0
    while True:
        raw = handle.readline(limit + 2)  # room for a "\r\n" after a line of exactly the limit
        if not raw:
            return
        number += 1
        reader.done += len(raw)
        if number == 1:
            raw = raw.removeprefix(_BOM)
        ending = 2 if raw.endswith(b"\r\n") else 1 if raw.endswith(b"\n") else 0
        if len(raw) - ending > limit:
            raise reader.row_too_long(number, hint)
        yield number, raw


def _open_binary(path: Path) -> io.BufferedReader:
    try:
        return open(path, "rb", buffering=_READ_BUFFER)
    except FileNotFoundError:
        raise StudioError(f"dataset not found: {path}") from None
    except OSError as exc:
        raise StudioError(f"dataset {path.name} could not be read: {exc.strerror or exc}") from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _head(path: Path) -> bytes:
    with _open_binary(path) as handle:
        return handle.read(_SNIFF_BYTES)


def _sniff_kind(path: Path) -> str:
    """The type of a file whose name does not say it, from its first bytes."""
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.removeprefix(_BOM).lstrip()[:1] in (b"[", b"{"):
        return "json"
    raise StudioError(f"dataset {path.name}: unknown file type {path.suffix or '(no extension)'}; "
                      f"LoRA Studio reads {KNOWN_TYPES} files, or a folder of them")


def _json_reader(path: Path, kind: str) -> Reader:
    """The content decides, not the extension: many ``.json`` files hold one object per line,
    and an array is the only JSON document that starts with '['."""
    first = _head(path).removeprefix(_BOM).lstrip()[:1]
    if first == b"[":
        return JsonDocumentReader(path)
    if kind == "jsonl" or first != b"{":
        return JsonlReader(path)
    return JsonlReader(path) if _one_object_per_line(path) else JsonDocumentReader(path)


def _one_object_per_line(path: Path) -> bool:
    with _open_binary(path) as handle:
        first_line = handle.readline(MAX_ROW_BYTES + 1)
        if len(first_line) > MAX_ROW_BYTES:
            return False  # no row is this long: a document (which has a bound of its own)
        try:
            json.loads(first_line.removeprefix(_BOM))
        except (ValueError, RecursionError):
            return False  # a document spread over lines, such as pretty-printed JSON
        # Anything but white space after the first line, read in blocks: the rest may be one long line.
        return any(block.strip() for block in iter(lambda: handle.read(_SNIFF_BYTES), b""))


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}" if exc.lineno == 1 else f"{exc.msg} at line {exc.lineno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _utf8_problem(line: int, exc: UnicodeDecodeError) -> RowProblem:
    return RowProblem(line, f"not UTF-8 text (bad byte at column {exc.start + 1})", code="not_utf8")


class JsonlReader(Reader):
    """One JSON value per line; blank lines are not rows."""

    kind = "jsonl"

    def fresh(self) -> "JsonlReader":
        return JsonlReader(self.path)

    def items(self) -> Iterator[Item]:
        self.done = 0
        with _open_binary(self.path) as handle:
            # Binary lines split on b"\n" only: U+2028 and friends may legally sit inside JSON strings.
            for number, raw in _bounded_lines(handle, self, "JSONL holds one row per line"):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield _utf8_problem(number, exc)
                    continue
                try:
                    yield RawRow(number, json.loads(text))
                except (ValueError, RecursionError) as exc:
                    yield RowProblem(number, f"not valid JSON ({_json_error(exc)})", code="not_json")


class JsonDocumentReader(Reader):
    """A JSON array of rows, an object holding one (``{"train": [...]}``), or one row object.

    Each row is decoded on its own, so a row's line number is where it starts in the file.
    """

    kind = "json"

    def fresh(self) -> "JsonDocumentReader":
        return JsonDocumentReader(self.path)

    def items(self) -> Iterator[Item]:
        self.done = 0
        with _open_binary(self.path) as handle:
            # Read no more than the bound, even from a file that grows while it is read.
            raw = handle.read(MAX_JSON_BYTES + 1).removeprefix(_BOM)
        if len(raw) > MAX_JSON_BYTES:
            raise StudioError(f"dataset {self.name} is one JSON document over the {limit_text(MAX_JSON_BYTES)} "
                              "limit for one; save its rows as JSONL (one JSON object per line), which is "
                              "read a row at a time")
        try:
            text, clean = raw.decode("utf-8"), True
        except UnicodeDecodeError:
            # Decode what can be decoded; rows holding the bad bytes are reported one by one.
            text, clean = raw.decode("utf-8", errors="surrogateescape"), False
        lines = _LineCounter(text)
        start = _JSON_SPACE.match(text).end()
        try:
            # Chosen for files that start with '[' or '{' only.
            rows = _array_items(text, start) if text.startswith("[", start) else _object_rows(text, start, self.name)
            for begin, end, value in rows:
                self.done = end
                line = lines.line_at(begin)
                if not clean and _ESCAPED_BYTES.search(text, begin, end):
                    yield RowProblem(line, "not UTF-8 text", code="not_utf8")
                else:
                    yield RawRow(line, value)
        except json.JSONDecodeError as exc:
            raise StudioError(f"dataset {self.name} is not valid JSON: {exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}") from None
        except RecursionError:
            raise StudioError(f"dataset {self.name} is not valid JSON: nested too deeply") from None
        self.done = self.total


class _LineCounter:
    """Line numbers of positions met in increasing order, counting each newline once."""

    def __init__(self, text: str) -> None:
        self.text, self.position, self.line = text, 0, 1

    def line_at(self, position: int) -> int:
        self.line += self.text.count("\n", self.position, position)
        self.position = position
        return self.line


def _array_items(text: str, start: int, *, whole_document: bool = True) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) for each element of the array at ``start``."""
    decoder = json.JSONDecoder()
    position = _JSON_SPACE.match(text, start + 1).end()
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            begin = position
            value, position = decoder.raw_decode(text, position)
            yield begin, position, value
            position = _JSON_SPACE.match(text, position).end()
            if text.startswith(",", position):
                position = _JSON_SPACE.match(text, position + 1).end()
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
    if whole_document:
        _expect_end(text, position)


def _expect_end(text: str, position: int) -> None:
    position = _JSON_SPACE.match(text, position).end()
    if position != len(text):
        raise json.JSONDecodeError("Extra data", text, position)


def _object_rows(text: str, start: int, name: str) -> Iterator[tuple[int, int, Any]]:
    """The rows of an object that holds them under one key, or the object itself as one row."""
    decoder = json.JSONDecoder()
    document, end = decoder.raw_decode(text, start)
    _expect_end(text, end)
    key = _rows_key(document, name)
    if key is None:
        yield start, end, document
        return
    # Walk the members again to find where the chosen list starts, so its rows keep their lines.
    position = _JSON_SPACE.match(text, start + 1).end()
    while True:
        member, position = decoder.raw_decode(text, position)
        position = _JSON_SPACE.match(text, position).end() + 1  # past the ':'
        position = _JSON_SPACE.match(text, position).end()
        if member == key:
            yield from _array_items(text, position, whole_document=False)
            return
        _, position = decoder.raw_decode(text, position)
        position = _JSON_SPACE.match(text, position).end() + 1  # past the ','
        position = _JSON_SPACE.match(text, position).end()


def _rows_key(document: dict, name: str) -> Optional[str]:
    """The key holding the file's rows: the one list of objects that is not a row's turns."""
    keys = [key for key, value in document.items()
            if key.lower() not in _TURN_KEYS and isinstance(value, list) and value
            and all(isinstance(item, dict) for item in value)]
    if len(keys) > 1:
        preferred = [key for key in keys if key.lower() in ("train", "data", "rows")]
        if len(preferred) != 1:
            raise StudioError(f"dataset {name} holds several lists of rows ({names(keys)}); "
                              "save the one to train on in a file of its own")
        return preferred[0]
    return keys[0] if keys else None


class _CountingReader(io.RawIOBase):
    """Passes a binary file through, counting the bytes read into the owning reader's ``done``."""

    def __init__(self, handle: io.BufferedReader, owner: Reader) -> None:
        super().__init__()
        self._handle, self._owner = handle, owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._handle.readinto(buffer)
        self._owner.done += count or 0
        return count


class CsvReader(Reader):
    """A table with a header line. Cells are text; a cell holding a JSON list is parsed when a
    format needs a list there (a ``messages`` column exported from a data frame)."""

    unit = "line"

    def __init__(self, path: Path, delimiter: str) -> None:
        super().__init__(path)
        self.delimiter = delimiter
        self.kind = "tsv" if delimiter == "\t" else "csv"

    def fresh(self) -> "CsvReader":
        return CsvReader(self.path, self.delimiter)

    def items(self) -> Iterator[Item]:
        self.done = 0
        # Long documents in one cell are normal in pre-training data; the default limit is 128 KiB.
        # A cell is bounded all the same, by the bound on its record (_RecordLines).
        csv.field_size_limit(2**31 - 1)
        with _open_binary(self.path) as handle:
            text = io.TextIOWrapper(io.BufferedReader(_CountingReader(handle, self)), encoding="utf-8-sig",
                                    errors="surrogateescape", newline="")
            lines = _RecordLines(text)
            rows = csv.reader(lines, delimiter=self.delimiter)
            header: Optional[list[str]] = None
            while True:
                start = rows.line_num + 1
                lines.record = 0
                try:
                    cells = next(rows)
                except StopIteration:
                    return
                except _RecordTooLong:
                    raise self.row_too_long(start, "is a quote left open?" if lines.lines > 1
                                            else "a table holds one row per line") from None
                except csv.Error as exc:
                    yield RowProblem(start, f"not valid {self.kind.upper()} ({exc})")
                    continue
                if not any(cell.strip() for cell in cells):
                    continue
                if header is None:
                    header = self._header(cells)
                    continue
                if _ESCAPED_BYTES.search("\0".join(cells)):
                    yield RowProblem(start, "not UTF-8 text", code="not_utf8")
                elif len(cells) != len(header):
                    yield RowProblem(start, f"has {len(cells)} fields; the header line has {len(header)}")
                else:
                    yield RawRow(start, dict(zip(header, cells)))

    def _header(self, cells: list[str]) -> list[str]:
        check_width(len(cells), f"dataset {self.name}")
        if _ESCAPED_BYTES.search("\0".join(cells)):
            raise StudioError(f"dataset {self.name}: the header line is not UTF-8 text")
        return _unique_names(cells)


def _unique_names(cells: list[str]) -> list[str]:
    """Column names from header cells: a blank one is named by its place, a repeated one numbered
    ('answer', 'answer (2)'). Linear in the header: a header of ten thousand copies of one name
    must not make each copy search the names before it."""
    names: list[str] = []
    taken: set[str] = set()
    copies: dict[str, int] = {}
    for number, cell in enumerate(cells, start=1):
        base = name = cell.strip() or f"column {number}"
        while name in taken:
            # The count per name only grows, so all the renaming together stays linear.
            copies[base] = copies.get(base, 1) + 1
            name = f"{base} ({copies[base]})"
        taken.add(name)
        names.append(name)
    return names


class _RecordTooLong(Exception):
    """Raised through csv.reader when a record grows past ``MAX_ROW_BYTES``."""


class _RecordLines:
    """The lines of a table for ``csv.reader``, read with a bounded read; a record (one line, or
    several when a quoted cell holds line breaks, or an unclosed quote swallows the rest of the
    file) longer than ``MAX_ROW_BYTES`` characters raises ``_RecordTooLong``. The caller sets
    ``record`` to 0 at the start of each record; csv.reader asks for no line past the record's end.
    """

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text, self.record, self.lines = text, 0, 0

    def __iter__(self) -> "_RecordLines":
        return self

    def __next__(self) -> str:
        if self.record == 0:
            self.lines = 0
        line = self.text.readline(MAX_ROW_BYTES + 1 - self.record)
        if not line:
            raise StopIteration
        self.record += len(line)
        self.lines += 1
        if self.record > MAX_ROW_BYTES:
            raise _RecordTooLong
        return line


class ParquetReader(Reader):
    kind = "parquet"
    unit = "row"
    _BATCH_ROWS = 1024

    def fresh(self) -> "ParquetReader":
        return ParquetReader(self.path)

    def items(self) -> Iterator[Item]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.done = 0
        try:
            parquet = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise StudioError(f"dataset {self.name} is not a readable Parquet file ({first_line(exc)})") from None
        check_width(parquet.metadata.num_columns, f"dataset {self.name}")
        rows = max(1, parquet.metadata.num_rows)
        number = 0
        try:
            for batch in parquet.iter_batches(batch_size=self._batch_rows(parquet.metadata)):
                for value in batch.to_pylist():
                    number += 1
                    yield RawRow(number, value, unit="row")
                self.done = self.total * number // rows
        except (pa.ArrowException, OSError) as exc:
            raise StudioError(f"dataset {self.name} is damaged after row {number}: {first_line(exc)}") from None

    def _batch_rows(self, metadata: Any) -> int:
        """Rows per batch, so that a batch holds about one row's bound; a row group whose rows
        average over ``MAX_ROW_BYTES`` (uncompressed, as its metadata says) is refused unread."""
        widest, first = 1, 1
        for index in range(metadata.num_row_groups):
            group = metadata.row_group(index)
            average = group.total_byte_size // max(1, group.num_rows)
            if average > MAX_ROW_BYTES:
                raise StudioError(f"dataset {self.name}: rows {first} to {first + group.num_rows - 1} are over the "
                                  f"{limit_text(MAX_ROW_BYTES)} limit for one row (on average)")
            widest, first = max(widest, average), first + group.num_rows
        return max(1, min(self._BATCH_ROWS, MAX_ROW_BYTES // widest))



class TextReader(Reader):
    """Plain text for continued pre-training: one document per line, or the whole file cut into
    chunks of about ``CHUNK_CHARS`` characters at paragraph and line breaks."""

    kind = "text"

    def __init__(self, path: Path, split: str = "auto", chunk_chars: int = CHUNK_CHARS) -> None:
        super().__init__(path)
        self.chunk_chars = chunk_chars
        self.split = _guess_split(path) if split == "auto" else split

    def fresh(self) -> "TextReader":
        return TextReader(self.path, self.split, self.chunk_chars)

    def items(self) -> Iterator[Item]:
        self.done = 0
        lines = self._lines()
        yield from (self._documents(lines) if self.split == "lines" else self._chunks(lines))

    def _lines(self) -> Iterator[tuple[int, Optional[str], Optional[RowProblem]]]:
        with _open_binary(self.path) as handle:
            for number, raw in _bounded_lines(handle, self, "plain text is read a line at a time: "
                                                            "break it into lines or paragraphs"):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n"), None
                except UnicodeDecodeError as exc:
                    yield number, None, _utf8_problem(number, exc)

    def _documents(self, lines: Iterator[tuple[int, Optional[str], Optional[RowProblem]]]) -> Iterator[Item]:
        for number, line, problem in lines:
            if problem is not None:
                yield problem
            elif line.strip():
                yield RawRow(number, {"text": line})

    def _chunks(self, lines: Iterator[tuple[int, Optional[str], Optional[RowProblem]]]) -> Iterator[Item]:
        chunk: list[str] = []  # joined only when full: growing one string would copy it at every part
        length, first = 0, 0
        for item in _paragraph_parts(lines, self.chunk_chars):
            if isinstance(item, RowProblem):
                # Never glue the text on either side of an unreadable line into one chunk.
                if chunk:
                    yield RawRow(first, {"text": "".join(chunk)})
                chunk, length = [], 0
                yield item
                continue
            number, separator, part = item
            if chunk and length + len(separator) + len(part) > self.chunk_chars:
                yield RawRow(first, {"text": "".join(chunk)})
                chunk, length = [], 0
            if not chunk:
                first, separator = number, ""
            chunk += (separator, part)
            length += len(separator) + len(part)
        if chunk:
            yield RawRow(first, {"text": "".join(chunk)})


def _paragraph_parts(lines: Iterator[tuple[int, Optional[str], Optional[RowProblem]]], size: int
                     ) -> Iterator[Union[RowProblem, tuple[int, str, str]]]:
    """(line number, separator, text) for pieces of paragraphs (runs of non-blank lines) of at most
    ``size`` characters, and the problems in between, streamed: a paragraph of a million lines is
    never held whole.

    The first piece of a paragraph is separated from what precedes it by a blank line, the others
    by a line break.
    """
    part: list[str] = []
    length, part_first, separator = 0, 0, "\n\n"
    for number, line, problem in lines:
        if problem is not None or not line.strip():
            if part:
                yield part_first, separator, "\n".join(part)
            part, length, separator = [], 0, "\n\n"
            if problem is not None:
                yield problem
            continue
        for piece in _pieces(line, size):
            # The part joined with line breaks is its pieces' length plus one per piece after the first.
            if part and length + len(part) + len(piece) > size:
                yield part_first, separator, "\n".join(part)
                part, length, separator = [], 0, "\n"
            if not part:
                part_first = number
            part.append(piece)
            length += len(piece)
    if part:
        yield part_first, separator, "\n".join(part)


def _pieces(line: str, size: int) -> Iterator[str]:
    """A line cut into pieces of at most ``size`` characters, at spaces where there are some.

    The cuts move along the line by position: cutting off the front again and again would copy
    the rest of a long line at every piece, which is quadratic in its length."""
    start = 0
    while len(line) - start > size:
        cut = line.rfind(" ", start + size // 2, start + size)
        cut = cut + 1 if cut > start else start + size
        yield line[start:cut]
        start = cut
    yield line[start:]


def _guess_split(path: Path) -> str:
    """Prose with blank lines between paragraphs is chunked; a file without them is one
    document per line (the usual layout of a corpus dump)."""
    text = _head(path).decode("utf-8", errors="replace").replace("\r\n", "\n").strip("\n")
    return "chunks" if re.search(r"\S[ \t]*\n[ \t]*\n\s*\S", text) else "lines"


class FolderReader(Reader):
    """Every dataset file in a folder and its subfolders, in name order; hidden files and
    documentation are skipped.

    A file that cannot be read at all becomes one problem; the other files still count.
    """

    kind = "folder"

    def __init__(self, path: Path, text_split: str = "auto") -> None:
        self.path, self.name, self.text_split = path, path.name, text_split
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        # A link to a file elsewhere (a downloaded folder could point at anything on this disk) is not read.
        inside = path.resolve()
        readable = [p.suffix.lower() in SUFFIXES and p.suffix.lower() not in _FOLDER_SKIPS
                    and p.resolve().is_relative_to(inside) for p in files]
        self.files = [p for p, ok in zip(files, readable) if ok]
        self.skipped_files = [str(p.relative_to(path)) for p, ok in zip(files, readable) if not ok]
        if not self.files:
            raise StudioError(f"folder {path.name} holds no dataset files ({KNOWN_TYPES})")
        self.done = 0
        self.total = max(1, sum(_size(p) for p in self.files))

    def fresh(self) -> "FolderReader":
        return FolderReader(self.path, self.text_split)

    def is_blank(self) -> bool:
        return all(file_reader(p, self.text_split).is_blank() for p in self.files)

    def items(self) -> Iterator[Item]:
        finished = 0
        for path in self.files:
            name = str(path.relative_to(self.path))
            try:
                reader = file_reader(path, self.text_split)
                for item in reader.items():
                    self.done = finished + reader.done
                    item.file = name
                    yield item
            except StudioError as exc:
                yield RowProblem(0, str(exc), file=name, unit="file", code="bad_file")
            finished += _size(path)
            self.done = finished


class HubReader(Reader):
    """A dataset on the Hugging Face hub, streamed row by row (its ``train`` split)."""

    kind = "hub"
    unit = "row"

    def __init__(self, repo_id: str) -> None:
        self.path, self.name, self.repo_id = Path(repo_id), repo_id, repo_id
        self.done, self.total = 0, 1

    def fresh(self) -> "HubReader":
        return HubReader(self.repo_id)

    def is_blank(self) -> bool:
        return False

    def items(self) -> Iterator[Item]:
        if _hub_offline():
            raise StudioError(f"{self.repo_id} is not a file or folder here, and the Hugging Face hub is "
                              "switched off (HF_HUB_OFFLINE): download the dataset and open its files")
        rows = self._stream()
        number = 0
        while True:
            try:
                value = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # network and format errors from datasets, as one readable line
                raise StudioError(f"reading the Hugging Face dataset {self.repo_id} failed at row {number + 1}: "
                                  f"{first_line(exc)}") from None
            number += 1
            yield RawRow(number, value, unit="row")

    def _stream(self) -> Iterator[Any]:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        # One quick request first: datasets itself retries an unreachable hub for half a minute.
        try:
            HfApi().dataset_info(self.repo_id, timeout=10)
        except RepositoryNotFoundError:
            raise StudioError(f"there is no dataset {self.repo_id} on the Hugging Face hub, "
                              "and no such file or folder here") from None
        except Exception as exc:
            raise StudioError(f"cannot reach the Hugging Face hub to open {self.repo_id} ({first_line(exc)}): "
                              "download the dataset and open its files") from None
        from datasets import load_dataset

        try:
            return iter(load_dataset(self.repo_id, split="train", streaming=True))
        except Exception as exc:
            raise StudioError(f"cannot open the Hugging Face dataset {self.repo_id}: {first_line(exc)}") from None


def _hub_offline() -> bool:
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def quoted(name: Any) -> str:
    """A column or key name as messages show it: quoted, cut to 40 characters and with
    line breaks and other control characters escaped, so a message stays one line."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(name)[:41])
    return f"'{text if len(text) <= 40 else text[:37] + '...'}'"


_NAMED_AT_MOST = 20


def names(columns: Any) -> str:
    """Names for a message, the first twenty of them: a message stays one readable line."""
    columns = list(columns)
    shown = ", ".join(quoted(column)[1:-1] for column in columns[:_NAMED_AT_MOST])
    more = len(columns) - _NAMED_AT_MOST
    return f"{shown} and {more:,} more" if more > 0 else shown


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
