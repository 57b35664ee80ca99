"""Tokenised examples: one conversation (or raw text) as token ids and labels, with
everything but the assistant's replies masked out of the loss, the statistics of a set of
them, untruncated token counts for a batch of rows, and the training text of one row in
segments (prompt, trained, cut off) for a look.

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


def tokens_before_learning(
    messages: list[dict],
    tokenizer,
    chat_template: Optional[str] = None,
    train_on: str = "assistant",
) -> int:
    """How many tokens of a row come before the first one it learns: the prompt, as the
    template renders it. A max length up to this leaves the row nothing to learn."""
    encoded = _encode(messages, tokenizer, chat_template, train_on)
    return next((index for index, trained in enumerate(encoded.trained) if trained), len(encoded.trained))


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


def token_lengths(samples: list[Sample], tokenizer: Any, chat_template: Optional[str],
                  counts: DatasetPass) -> list[Optional[int]]:
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
        except TemplateRefused:
            raise  # the template, not this row: every row would fail, each after its time bound
        except StudioError as exc:
            counts.problem(RowProblem(sample.line, str(exc), sample.file, code=TEMPLATE_REFUSED))
            texts.append(None)
    rendered = [text for text in texts if text is not None]
    ids = iter(tokenizer(rendered, add_special_tokens=False, return_attention_mask=False)["input_ids"]
               if rendered else [])
    return [None if text is None else len(next(ids)) for text in texts]
