"""Datasets: reading files, detecting their format, turning rows into chat messages,
rendering them with the model's chat template and tokenising them with everything
but the assistant's replies masked out of the loss.

``engine.data.readers`` reads every common file type row by row and
``engine.data.formats`` detects the row format and turns rows into
conversations. Here they come together:

- ``open_dataset`` reads only a file's first rows to settle its type and format,
  so even a file of a million rows opens at once;
- ``preview_dataset`` gives the first usable rows for a look;
- ``scan_dataset`` streams the whole file once, counting good and bad rows,
  duplicates and empty answers and, given a tokenizer, every row's length;
- ``write_examples`` streams it once more into an Arrow file of token ids and
  labels for training, holding one small batch in memory at a time;
- ``load_dataset_file`` / ``build_examples`` do the same in memory, for small data.

A bad row never stops a pass: it becomes a ``RowProblem`` with its line, so the
user can fix the file or train on the good rows. Nothing here imports torch: the
tokenizer object is handed in by the caller.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from engine.core.choices import TRAIN_ON
from engine.data.formats import (
    EMPTY_ANSWER,
    FORMATS,
    ROLES,
    TEXT_ROLE,
    BadRow,
    Layout,
    choose_layout,
    converter,
    row_columns,
)
from engine.data.readers import FolderReader, HubReader, RawRow, Reader, RowProblem, json_type, open_reader
from engine.errors import StudioError

__all__ = [
    "CHATML_TEMPLATE", "IGNORE_INDEX", "ROLES", "DataOptions", "DatasetFile", "DatasetPreview",
    "DatasetReport", "DatasetSource", "ExampleStats", "RowProblem", "Sample", "TextSegment", "TokenizedExample",
    "WrittenExamples", "assistant_spans", "build_examples", "chat_template_for", "dataset_columns", "dataset_fingerprint",
    "load_dataset_file", "open_dataset", "preview_dataset", "render_conversation", "scan_dataset",
    "split_counts", "split_indices", "tokenize_conversation", "training_view", "write_examples",
]

IGNORE_INDEX = -100
DETECT_ROWS = 200
PREVIEW_ROWS = 200
KEPT_PROBLEMS = 100
_TOKENIZE_BATCH = 256
_WRITE_BATCH = 1000
_PROGRESS_EVERY_S = 0.1

# For base models that ship without a chat template. ChatML, with the model's own BOS in
# front and its EOS after each reply, so a trained adapter learns to stop. Training saves
# it with the adapter, so chat renders exactly what training saw.
CHATML_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' }}"
    "{% if message['role'] == 'assistant' and eos_token and eos_token != '<|im_end|>' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

Progress = Callable[[float], None]
Cancelled = Callable[[], bool]


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


@dataclass
class DatasetFile:
    path: Path
    format: str
    conversations: list[list[dict]]
    problems: list[RowProblem] = field(default_factory=list)
    total_rows: int = 0
    kind: str = ""
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


@dataclass
class ExampleStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    total_tokens: int = 0
    trained_tokens: int = 0

    def add(self, example: Optional[TokenizedExample]) -> None:
        if example is None:
            self.dropped += 1
            return
        self.examples += 1
        self.truncated += example.truncated
        self.total_tokens += len(example.input_ids)
        self.trained_tokens += sum(label != IGNORE_INDEX for label in example.labels)


class DatasetSource:
    """An opened dataset: its file type, its format and column mapping, and its columns.

    ``items()`` reads the rows from the start each time it is called, as samples and
    problems in file order; nothing is kept in memory between calls.
    """

    def __init__(self, reader: Reader, layout: Layout, columns: list[str]) -> None:
        self._reader = reader
        self._active = reader
        self._convert = converter(layout)
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

    def items(self) -> Iterator[Union[Sample, RowProblem]]:
        reader = self._active = self._reader.fresh()
        for item in reader.items():
            if isinstance(item, RowProblem):
                yield item
                continue
            try:
                yield Sample(item.line, self._convert(item.value), item.file)
            except BadRow as exc:
                yield RowProblem(item.line, str(exc), item.file, item.unit, exc.code)

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
    head = list(islice(reader.items(), DETECT_ROWS))
    rows = [item.value for item in head if isinstance(item, RawRow)]
    if not head:
        raise StudioError(f"{label} is empty" if reader.is_blank() else f"{label} has no rows")
    if not any(isinstance(row, dict) for row in rows):
        first = next(item for item in head if isinstance(item, RowProblem) or not isinstance(item.value, dict))
        problem = first if isinstance(first, RowProblem) else RowProblem(
            first.line, f"row is a JSON {json_type(first.value)}, not an object", first.file, first.unit)
        which = "no usable rows" if len(head) < DETECT_ROWS else f"the first {len(head)} rows are all unusable"
        raise StudioError(f"{label}: {which} (first problem, {problem.where()}: {problem.reason})")
    if reader.kind == "text" and options.format not in (None, "text"):
        raise StudioError(f"{label} is plain text, which can only be trained on as raw text")
    layout = choose_layout(rows, options.format, options.columns, label)
    return DatasetSource(reader, layout, row_columns(rows))


def dataset_columns(reference: Union[str, Path], text_split: str = "auto") -> list[str]:
    """The columns of a dataset's first rows, to map by hand when no format fits them."""
    reader = open_reader(reference, text_split)
    return row_columns([item.value for item in islice(reader.items(), DETECT_ROWS) if isinstance(item, RawRow)])


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
    # A file of bad rows must not be read to the end just to fill a preview.
    for item in islice(items, limit * 10):
        if isinstance(item, Sample):
            samples.append(item)
            if len(samples) == limit:
                break
        else:
            problems.append(item)
    complete = next(items, None) is None
    items.close()
    return DatasetPreview(samples=samples, problems=problems, complete=complete)


# rendering and tokenising ---------------------------------------------------------------------
def chat_template_for(tokenizer: Any) -> tuple[str, bool]:
    """The template to train with: the model's own, or ChatML when it has none (True)."""
    own = getattr(tokenizer, "chat_template", None)
    return (own, False) if isinstance(own, str) and own else (CHATML_TEMPLATE, True)


def render_conversation(
    messages: list[dict],
    tokenizer,
    *,
    add_generation_prompt: bool = False,
    chat_template: Optional[str] = None,
) -> str:
    """The conversation as the model sees it, through its chat template.

    Training and chat both render through here, so they cannot disagree on the template.
    """
    from jinja2 import TemplateError

    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise StudioError("the model's tokenizer has no chat template; choose one before training on chat data")
    try:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=chat_template,
        )
    except TemplateError as exc:
        raise StudioError(f"the chat template failed on a conversation: {exc}") from None


def assistant_spans(
    messages: list[dict], tokenizer, chat_template: Optional[str] = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the model must learn to write.

    A reply's span runs from the end of the generation prompt that precedes it to the
    end of its own turn, so it covers the reply and the template's end-of-turn marker
    (the model learns to stop) and nothing the user or the template wrote.
    """
    full = render_conversation(messages, tokenizer, chat_template=chat_template)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_conversation(
            messages[:index], tokenizer, add_generation_prompt=True, chat_template=chat_template
        )
        # Up to the last reply is the whole conversation: no need to render it twice.
        last = index == len(messages) - 1
        upto = full if last else render_conversation(messages[: index + 1], tokenizer, chat_template=chat_template)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise StudioError(
                "the chat template renders earlier turns differently once a reply follows, "
                "so the prompt cannot be masked out of the loss; use a template whose "
                "rendering of a conversation starts with the rendering of its first turns"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def _is_text(messages: list[dict]) -> bool:
    return len(messages) == 1 and messages[0]["role"] == TEXT_ROLE


@dataclass
class _Encoded:
    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    trained: list[bool]


def _encode(messages: list[dict], tokenizer: Any, chat_template: Optional[str], train_on: str) -> _Encoded:
    """Every token of a training row, where it sits in the rendered text, and whether it is learnt."""
    if not getattr(tokenizer, "is_fast", False):
        raise StudioError("masking the prompt needs a fast tokenizer (tokenizer.json); this model only has a slow one")
    if train_on not in TRAIN_ON:
        raise StudioError(f"train on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    if _is_text(messages):
        # Raw text: the tokenizer's own BOS, every token learnt, and EOS so documents end.
        text = messages[0]["content"]
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
        if _needs_eos(tokenizer, ids):
            ids.append(tokenizer.eos_token_id)
            offsets.append((len(text), len(text)))
        return _Encoded(text, ids, offsets, [True] * len(ids))
    if train_on == "all":
        text = render_conversation(messages, tokenizer, chat_template=chat_template)
        spans = [(0, len(text))]
    else:
        text, spans = assistant_spans(messages, tokenizer, chat_template)
    # The template writes its own special tokens (BOS included); adding more would double them.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoding["offset_mapping"]]
    trained = [train_on == "all" or _starts_inside(start, spans) for start, _end in offsets]
    return _Encoded(text, list(encoding["input_ids"]), offsets, trained)


def _needs_eos(tokenizer: Any, ids: list[int]) -> bool:
    eos = getattr(tokenizer, "eos_token_id", None)
    return eos is not None and (not ids or ids[-1] != eos)


def _starts_inside(start: int, spans: list[tuple[int, int]]) -> bool:
    # A token is the model's to predict when it begins inside a reply: a token that
    # straddles the generation prompt and the reply never occurs at inference time,
    # because there the prompt is tokenised on its own.
    return any(begin <= start < end for begin, end in spans)


def tokenize_conversation(
    messages: list[dict],
    tokenizer,
    max_length: int,
    chat_template: Optional[str] = None,
    train_on: str = "assistant",
) -> Optional[TokenizedExample]:
    """Token ids and labels for one conversation; None when truncation leaves nothing to learn."""
    if max_length < 1:
        raise StudioError(f"max length must be a positive number, got {max_length}")
    encoded = _encode(messages, tokenizer, chat_template, train_on)
    labels = [token if trained else IGNORE_INDEX for token, trained in zip(encoded.input_ids, encoded.trained)]
    truncated = len(encoded.input_ids) > max_length
    # Keep the start: the system prompt and first question give the replies their meaning.
    input_ids, labels = encoded.input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return TokenizedExample(input_ids=input_ids, labels=labels, truncated=truncated)


def build_examples(
    dataset: DatasetFile,
    tokenizer,
    max_length: int,
    chat_template: Optional[str] = None,
    train_on: str = "assistant",
) -> tuple[list[TokenizedExample], ExampleStats]:
    examples: list[TokenizedExample] = []
    stats = ExampleStats()
    for conversation in dataset.conversations:
        example = tokenize_conversation(conversation, tokenizer, max_length, chat_template, train_on)
        stats.add(example)
        if example is not None:
            examples.append(example)
    return examples, stats


@dataclass
class TextSegment:
    """A stretch of a row's rendered training text whose tokens share one fate."""

    text: str
    trained: bool
    cut: bool  # past max length: removed before training


def training_view(
    messages: list[dict],
    tokenizer,
    max_length: int,
    chat_template: Optional[str] = None,
    train_on: str = "assistant",
) -> tuple[list[TextSegment], int]:
    """The rendered training text of one row in segments (prompt, trained, cut off), and its token count."""
    encoded = _encode(messages, tokenizer, chat_template, train_on)
    segments: list[TextSegment] = []
    cursor = 0
    for index, ((start, end), trained) in enumerate(zip(encoded.offsets, encoded.trained)):
        if end <= cursor and start == end:
            # A token with no text of its own (BOS/EOS added by the tokenizer): show its name.
            piece = tokenizer.convert_ids_to_tokens(encoded.input_ids[index])
        else:
            # Text a token skipped (some tokenizers drop spaces) belongs to the token after it.
            piece = encoded.text[cursor:end]
            cursor = max(cursor, end)
        _append_segment(segments, piece, trained, index >= max_length)
    if cursor < len(encoded.text):
        _append_segment(segments, encoded.text[cursor:], False, len(encoded.input_ids) > max_length)
    return segments, len(encoded.input_ids)


def _append_segment(segments: list[TextSegment], text: str, trained: bool, cut: bool) -> None:
    if not text:
        return
    if segments and segments[-1].trained == trained and segments[-1].cut == cut:
        segments[-1].text += text
    else:
        segments.append(TextSegment(text, trained, cut))


def _lengths(samples: list[Sample], tokenizer: Any, chat_template: Optional[str],
             counts: "_Pass") -> list[Optional[int]]:
    """Untruncated token counts, exactly as ``tokenize_conversation`` counts them, rendering
    each row once and tokenising the batch in one call; None (and a problem) for a row the
    chat template refuses."""
    if samples and _is_text(samples[0].conversation):
        ids = tokenizer([s.conversation[0]["content"] for s in samples], add_special_tokens=True,
                        return_attention_mask=False)["input_ids"]
        return [len(row) + _needs_eos(tokenizer, row) for row in ids]
    texts: list[Optional[str]] = []
    for sample in samples:
        try:
            texts.append(render_conversation(sample.conversation, tokenizer, chat_template=chat_template))
        except StudioError as exc:
            counts.problem(RowProblem(sample.line, str(exc), sample.file, code="template"))
            texts.append(None)
    rendered = [text for text in texts if text is not None]
    ids = iter(tokenizer(rendered, add_special_tokens=False, return_attention_mask=False)["input_ids"]
               if rendered else [])
    return [None if text is None else len(next(ids)) for text in texts]


# whole-dataset passes -----------------------------------------------------------------------
class _Pass:
    """Bookkeeping shared by the streaming passes: counts, kept problems, progress, cancel."""

    def __init__(self, source: DatasetSource, progress: Optional[Progress], cancelled: Optional[Cancelled]):
        self.source, self._progress, self._cancelled = source, progress, cancelled
        self.good = 0
        self.bad = 0
        self.empty_answers = 0
        self.problems: list[RowProblem] = []
        self._last_report = 0.0

    def problem(self, problem: RowProblem) -> None:
        self.bad += 1
        self.empty_answers += problem.code == EMPTY_ANSWER
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(problem)

    def tick(self) -> bool:
        """Report progress now and then; False when the caller asked to stop."""
        if self._cancelled is not None and self._cancelled():
            return False
        now = time.monotonic()
        if self._progress is not None and now - self._last_report >= _PROGRESS_EVERY_S:
            self._last_report = now
            self._progress(self.source.fraction_read())
        return True


@dataclass
class DatasetReport:
    """What a whole pass over a dataset found. ``token_lengths`` (one per good row,
    before truncation) is there when a tokenizer was given."""

    path: Path
    kind: str
    format: str
    format_title: str
    mapping: dict[str, str]
    columns: list[str]
    ignored_columns: list[str]
    skipped_files: list[str]
    text_split: Optional[str]
    total_rows: int
    good_rows: int
    bad_rows: int
    problems: list[RowProblem]
    empty_answers: int
    duplicates: int
    token_lengths: Any = None
    chat_template_fallback: bool = False

    def truncated(self, max_length: int) -> int:
        if self.token_lengths is None:
            return 0
        return int((self.token_lengths > max_length).sum())

    def length_percentiles(self) -> dict[str, int]:
        import numpy as np

        if self.token_lengths is None or not len(self.token_lengths):
            return {}
        points = (50, 90, 95, 99, 100)
        values = np.percentile(self.token_lengths, points)
        return {("max" if p == 100 else f"p{p}"): int(round(v)) for p, v in zip(points, values)}

    def to_dict(self, max_length: int, val_fraction: float = 0.0, problems: int = 20) -> dict[str, Any]:
        train, validation = split_counts(self.good_rows, val_fraction)
        report: dict[str, Any] = {
            "file": str(self.path), "kind": self.kind, "format": self.format, "format_title": self.format_title,
            "mapping": self.mapping, "columns": self.columns, "ignored_columns": self.ignored_columns, "skipped_files": self.skipped_files,
            "text_split": self.text_split,
            "rows": self.total_rows, "good_rows": self.good_rows, "bad_rows": self.bad_rows,
            "empty_answers": self.empty_answers, "duplicates": self.duplicates,
            "problems": [{"line": p.line, "file": p.file, "unit": p.unit, "reason": p.reason}
                         for p in self.problems[:problems]],
            "validation": {"fraction": val_fraction, "train_rows": train, "validation_rows": validation},
        }
        if self.token_lengths is not None:
            truncated = self.truncated(max_length)
            report.update({
                "max_length": max_length,
                "token_percentiles": self.length_percentiles(),
                "tokens_total": int(self.token_lengths.sum()),
                "truncated": truncated,
                "truncated_share": round(truncated / self.good_rows, 4) if self.good_rows else 0.0,
                "chat_template": "chatml-fallback" if self.chat_template_fallback else "model",
            })
        return report


def scan_dataset(
    source: DatasetSource,
    tokenizer: Any = None,
    *,
    progress: Optional[Progress] = None,
    cancelled: Optional[Cancelled] = None,
) -> Optional[DatasetReport]:
    """Read the whole dataset once: counts, problems, duplicates and (with a tokenizer) lengths.

    Memory stays bounded whatever the size: 8 bytes per row for duplicate detection, 4 for
    its length, one batch of rows and the first problems. None when cancelled.
    """
    import numpy as np

    template, fallback = chat_template_for(tokenizer) if tokenizer is not None else (None, False)
    counts = _Pass(source, progress, cancelled)
    hashes = _Int64Buffer()
    lengths = _Int64Buffer()
    batch: list[Sample] = []

    def measure() -> None:
        # Rows the chat template refuses (some insist on strictly alternating turns) are bad rows.
        for sample, length in zip(batch, _lengths(batch, tokenizer, template, counts)):
            if length is not None:
                good(sample)
                lengths.append(length)
        batch.clear()

    def good(sample: Sample) -> None:
        counts.good += 1
        hashes.append(hash(repr(sample.conversation)))

    for number, item in enumerate(source.items()):
        if number % 512 == 0 and not counts.tick():
            return None
        if isinstance(item, RowProblem):
            counts.problem(item)
        elif tokenizer is None:
            good(item)
        else:
            batch.append(item)
            if len(batch) == _TOKENIZE_BATCH:
                measure()
    if batch:
        measure()
    values = hashes.values()
    return DatasetReport(
        path=source.path, kind=source.kind, format=source.format, format_title=FORMATS[source.format].title,
        mapping=source.mapping, columns=source.columns, ignored_columns=source.ignored_columns,
        skipped_files=source.skipped_files, text_split=source.text_split,
        total_rows=counts.good + counts.bad, good_rows=counts.good, bad_rows=counts.bad,
        problems=sorted(counts.problems, key=lambda p: (p.file, p.line)),
        empty_answers=counts.empty_answers, duplicates=int(len(values) - len(np.unique(values))),
        token_lengths=lengths.values().astype(np.int32) if tokenizer is not None else None,
        chat_template_fallback=fallback and source.format != "text",
    )


class _Int64Buffer:
    """A growing array of integers: 8 bytes each, where a Python list would spend about 36."""

    def __init__(self) -> None:
        import numpy as np

        self._data = np.empty(4096, dtype=np.int64)
        self._size = 0

    def append(self, value: int) -> None:
        if self._size == len(self._data):
            self._data.resize(2 * self._size, refcheck=False)
        self._data[self._size] = value
        self._size += 1

    def values(self) -> Any:
        return self._data[: self._size]


@dataclass
class WrittenExamples:
    path: Path
    stats: ExampleStats
    total_rows: int
    bad_rows: int
    problems: list[RowProblem]


def write_examples(
    source: DatasetSource,
    tokenizer: Any,
    max_length: int,
    path: Path,
    *,
    train_on: str = "assistant",
    progress: Optional[Progress] = None,
    cancelled: Optional[Cancelled] = None,
) -> Optional[WrittenExamples]:
    """Tokenise every good row into an Arrow file (``input_ids``, ``labels``) for training.

    Rows stream through in batches, so memory stays flat however large the dataset; the
    file appears under ``path`` only once complete. Uses the model's chat template, or
    ChatML when it has none. None when cancelled.
    """
    import pyarrow as pa

    template, _fallback = chat_template_for(tokenizer)
    counts = _Pass(source, progress, cancelled)
    stats = ExampleStats()
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32()))])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    ids_batch: list[list[int]] = []
    labels_batch: list[list[int]] = []
    stopped = False
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            def flush() -> None:
                writer.write_batch(pa.record_batch([pa.array(ids_batch, pa.list_(pa.int32())),
                                                    pa.array(labels_batch, pa.list_(pa.int32()))], schema=schema))
                ids_batch.clear()
                labels_batch.clear()

            for number, item in enumerate(source.items()):
                if number % 512 == 0 and not counts.tick():
                    stopped = True
                    break
                if isinstance(item, RowProblem):
                    counts.problem(item)
                    continue
                try:
                    example = tokenize_conversation(item.conversation, tokenizer, max_length, template, train_on)
                except StudioError as exc:
                    counts.problem(RowProblem(item.line, str(exc), item.file, code="template"))
                    continue
                counts.good += 1
                stats.add(example)
                if example is not None:
                    ids_batch.append(example.input_ids)
                    labels_batch.append(example.labels)
                    if len(ids_batch) == _WRITE_BATCH:
                        flush()
            if ids_batch and not stopped:
                flush()
        if stopped:
            return None
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return WrittenExamples(path=path, stats=stats, total_rows=counts.good + counts.bad, bad_rows=counts.bad,
                           problems=counts.problems)


# validation split and identity ----------------------------------------------------------------
def split_counts(rows: int, val_fraction: float) -> tuple[int, int]:
    """(training rows, validation rows) for a share held out; at least one of each when asked."""
    if val_fraction <= 0 or rows < 2:
        return rows, 0
    validation = min(rows - 1, max(1, round(rows * val_fraction)))
    return rows - validation, validation


def split_indices(rows: int, val_fraction: float, seed: int) -> tuple[Any, Any]:
    """Sorted row indices for training and validation: a seeded, reproducible random split."""
    import numpy as np

    _, validation = split_counts(rows, val_fraction)
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[validation:]), np.sort(order[:validation])


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
