"""Tokenised examples: one conversation (or raw text) as token ids and labels, with
everything but the assistant's replies masked out of the loss, the statistics of a set of
them, the rule for which rows max length cuts and which it leaves nothing to learn, the
measures a scan counts them by, and the training text of one row in segments (prompt,
trained, cut off) for a look.

Nothing here imports torch: the tokenizer object is handed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from engine.core.choices import TRAIN_ON
from engine.data.dataset import DatasetFile, Sample
from engine.data.formats import TEMPLATE_REFUSED, TEXT_ROLE
from engine.data.passes import DatasetPass
from engine.data.readers import RowProblem
from engine.data.rendering import assistant_spans, render_conversation
from engine.data.templates import TemplateRefused
from engine.errors import StudioError

IGNORE_INDEX = -100


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


def _is_text(messages: list[dict]) -> bool:
    return len(messages) == 1 and messages[0]["role"] == TEXT_ROLE


@dataclass
class _Encoded:
    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    trained: list[bool]

    @property
    def first_learnt(self) -> int:
        """The position of the first token learnt; the row's length when it learns none."""
        return next((index for index, trained in enumerate(self.trained) if trained), len(self.trained))


@dataclass
class _Rendered:
    """A row's training text and the character spans learnt (None: every token)."""

    text: str
    spans: Optional[list[tuple[int, int]]]
    raw_text: bool  # plain text: the tokenizer adds its own BOS, and EOS ends the document


def _render(messages: list[dict], tokenizer: Any, chat_template: Optional[str], train_on: str) -> _Rendered:
    if train_on not in TRAIN_ON:
        raise StudioError(f"train on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    if _is_text(messages):
        return _Rendered(messages[0]["content"], None, True)
    if train_on == "all":
        return _Rendered(render_conversation(messages, tokenizer, chat_template=chat_template), None, False)
    text, spans = assistant_spans(messages, tokenizer, chat_template)
    return _Rendered(text, spans, False)


def _tokenize(rows: list[_Rendered], tokenizer: Any) -> list[_Encoded]:
    """Every token of each rendered row, where it sits in the text, and whether it is learnt:
    one tokenizer call per kind of row (a batch gives the same ids as one row at a time)."""
    if not getattr(tokenizer, "is_fast", False):
        raise StudioError("masking the prompt needs a fast tokenizer (tokenizer.json); this model only has a slow one")
    encoded: list[Optional[_Encoded]] = [None] * len(rows)
    for raw_text in (True, False):
        indices = [index for index, row in enumerate(rows) if row.raw_text == raw_text]
        if not indices:
            continue
        # The template writes its own special tokens (BOS included); adding more would double them.
        batch = tokenizer([rows[index].text for index in indices], add_special_tokens=raw_text,
                          return_offsets_mapping=True, return_attention_mask=False)
        for index, ids, offsets in zip(indices, batch["input_ids"], batch["offset_mapping"]):
            encoded[index] = _encoded(rows[index], list(ids), [tuple(o) for o in offsets], tokenizer)
    return encoded


def _encoded(row: _Rendered, ids: list[int], offsets: list[tuple[int, int]], tokenizer: Any) -> _Encoded:
    if row.raw_text and _needs_eos(tokenizer, ids):
        ids.append(tokenizer.eos_token_id)  # so documents end
        offsets.append((len(row.text), len(row.text)))
    trained = [row.spans is None or _starts_inside(start, row.spans) for start, _end in offsets]
    return _Encoded(row.text, ids, offsets, trained)


def _encode(messages: list[dict], tokenizer: Any, chat_template: Optional[str], train_on: str) -> _Encoded:
    """Every token of a training row, where it sits in the rendered text, and whether it is learnt."""
    return _tokenize([_render(messages, tokenizer, chat_template, train_on)], tokenizer)[0]


def learns_nothing(tokens: Any, first_learnt: Any, max_length: int) -> Any:
    """Whether a row gives training nothing: the first token it learns lies at or past max
    length (or it learns none). The one rule for a run's examples and a scan's counts: numbers
    or numpy arrays of them."""
    return (first_learnt >= max_length) | (first_learnt >= tokens)


def is_cut(tokens: Any, max_length: int) -> Any:
    """Whether max length cuts a row's end off (numbers or numpy arrays of them)."""
    return tokens > max_length


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
    tokens = len(encoded.input_ids)
    if learns_nothing(tokens, encoded.first_learnt, max_length):
        return None
    labels = [token if trained else IGNORE_INDEX for token, trained in zip(encoded.input_ids, encoded.trained)]
    # Keep the start: the system prompt and first question give the replies their meaning.
    return TokenizedExample(input_ids=encoded.input_ids[:max_length], labels=labels[:max_length],
                            truncated=bool(is_cut(tokens, max_length)))


def tokens_before_learning(
    messages: list[dict],
    tokenizer,
    chat_template: Optional[str] = None,
    train_on: str = "assistant",
) -> int:
    """How many tokens of a row come before the first one it learns: the prompt, as the
    template renders it. A max length up to this leaves the row nothing to learn."""
    return _encode(messages, tokenizer, chat_template, train_on).first_learnt


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


# A row whose replies the template cannot mask (it renders earlier turns differently once a
# reply follows): trained on every token it trains, refused when only the replies are learnt.
CANNOT_MASK = -1


def measure_rows(samples: list[Sample], tokenizer: Any, chat_template: Optional[str],
                 counts: DatasetPass) -> list[Optional[tuple[int, int]]]:
    """For each row, its untruncated token count and the position of the first token it learns
    when only the replies are learnt (``CANNOT_MASK`` when the template cannot mask it), exactly
    as ``tokenize_conversation`` tokenises it, the batch in one tokenizer call; None (and a
    problem counted) for a row the chat template refuses. With every token learnt, a row
    learns from its first token on."""
    rendered: list[Optional[_Rendered]] = []
    for sample in samples:
        try:
            rendered.append(_render(sample.conversation, tokenizer, chat_template, "assistant"))
        except TemplateRefused:
            raise  # the template, not this row: every row would fail, each after its time bound
        except StudioError:
            rendered.append(_render_whole(sample, tokenizer, chat_template, counts))
    encoded = iter(_tokenize([row for row in rendered if row is not None], tokenizer))
    measured: list[Optional[tuple[int, int]]] = []
    for row in rendered:
        if row is None:
            measured.append(None)
            continue
        tokens = next(encoded)
        measured.append((len(tokens.input_ids), tokens.first_learnt if row.spans is not None or row.raw_text
                         else CANNOT_MASK))
    return measured


def _render_whole(sample: Sample, tokenizer: Any, chat_template: Optional[str],
                  counts: DatasetPass) -> Optional[_Rendered]:
    """A row whose replies could not be found: trainable on every token when the template renders
    it, else a bad row."""
    try:
        return _render(sample.conversation, tokenizer, chat_template, "all")
    except TemplateRefused:
        raise
    except StudioError as exc:
        counts.problem(RowProblem(sample.line, str(exc), sample.file, code=TEMPLATE_REFUSED))
        return None
