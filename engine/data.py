"""Datasets: reading files, detecting their format, turning rows into chat messages,
rendering them with the model's chat template and tokenising them with everything
but the assistant's replies masked out of the loss.

Files are JSONL (one object per line) or JSON (an array of objects). Two row
formats are understood and auto-detected: OpenAI chat (``messages``) and Alpaca
(``instruction``/``input``/``output``). A bad row never stops the load: it is
skipped and reported as a ``RowProblem`` with its line, so the user can fix the
file. Only a file with nothing usable in it is an error.

Nothing here imports torch: the tokenizer object is handed in by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from engine.errors import StudioError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


@dataclass
class RowProblem:
    line: int
    reason: str


@dataclass
class DatasetFile:
    path: Path
    format: str
    conversations: list[list[dict]]
    problems: list[RowProblem] = field(default_factory=list)
    total_rows: int = 0


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


class _BadRow(Exception):
    """A row that cannot be used; its message becomes a RowProblem's reason."""


def load_dataset_file(path: str | Path) -> DatasetFile:
    path = Path(path)
    rows, problems = _parse_rows(path, _read_text(path))
    total_rows = len(rows) + len(problems)
    if not total_rows:
        raise StudioError(f"dataset {path.name} has no rows")
    dataset_format = _detect_format(value for _, value in rows)
    conversations: list[list[dict]] = []
    for line, value in rows:
        try:
            conversations.append(_to_conversation(value, dataset_format))
        except _BadRow as exc:
            problems.append(RowProblem(line=line, reason=str(exc)))
    problems.sort(key=lambda problem: problem.line)
    if not conversations:
        first = problems[0]
        raise StudioError(f"dataset {path.name}: no usable rows (first problem, line {first.line}: {first.reason})")
    return DatasetFile(
        path=path,
        format=dataset_format,
        conversations=conversations,
        problems=problems,
        total_rows=total_rows,
    )


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StudioError(f"dataset not found: {path}") from None
    except IsADirectoryError:
        raise StudioError(f"dataset {path} is a folder; choose a .jsonl or .json file") from None
    except OSError as exc:
        raise StudioError(f"dataset {path.name} could not be read: {exc.strerror or exc}") from None
    try:
        # utf-8-sig: editors on Windows like to start files with a byte-order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StudioError(f"dataset {path.name} is not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise StudioError(f"dataset {path.name} is empty")
    return text


def _parse_rows(path: Path, text: str) -> tuple[list[tuple[int, Any]], list[RowProblem]]:
    """(line, value) for every row that is JSON, and a problem for every line that is not.

    The content decides the layout, not the extension: many ``.json`` files are
    really JSONL, and an array is the only JSON document that starts with '['.
    """
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StudioError(f"dataset {path.name} is not valid JSON: {_json_error(exc)}") from None
        return [(index + 1, value) for index, value in enumerate(values)], []
    rows: list[tuple[int, Any]] = []
    problems: list[RowProblem] = []
    # split("\n"), not splitlines(): U+2028 and friends may legally sit inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except (ValueError, RecursionError) as exc:
            problems.append(RowProblem(line=number, reason=f"not valid JSON ({_json_error(exc)})"))
    return rows, problems


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at column {exc.colno}" if exc.lineno == 1 else f"{exc.msg} at line {exc.lineno}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _detect_format(values: Iterable[Any]) -> Optional[str]:
    """The format of the first row that looks like either; None if none does."""
    for value in values:
        if not isinstance(value, dict):
            continue
        if "messages" in value:
            return "messages"
        if "instruction" in value or "output" in value:
            return "alpaca"
    return None


def _to_conversation(row: Any, dataset_format: Optional[str]) -> list[dict]:
    if not isinstance(row, dict):
        raise _BadRow(f"row is a JSON {_json_type(row)}, not an object")
    if dataset_format == "messages":
        return _messages_row(row)
    if dataset_format == "alpaca":
        return _alpaca_row(row)
    raise _BadRow("expected a 'messages' list (chat format) or 'instruction' and 'output' (Alpaca format)")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _brief(value: Any) -> str:
    # Problems are shown one per line in the studio: a stray megabyte must not become one.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _messages_row(row: dict) -> list[dict]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise _BadRow("'messages' must be a list of {role, content} objects")
    if not messages:
        raise _BadRow("'messages' is empty")
    conversation = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise _BadRow(f"message {number} is not an object")
        role = message.get("role")
        if role not in ROLES:
            raise _BadRow(f"message {number} has role {_brief(role)}; expected system, user or assistant")
        content = _text(message.get("content"), f"message {number} content")
        if role == "system" and number != 1:
            raise _BadRow(f"message {number} is a system message; only the first message may be one")
        if role != "system" and not content.strip():
            raise _BadRow(f"message {number} is an empty {role} message")
        conversation.append({"role": role, "content": content})
    _check_turn_order(conversation)
    return conversation


def _check_turn_order(conversation: list[dict]) -> None:
    turns = [message["role"] for message in conversation if message["role"] != "system"]
    if not turns or turns[0] != "user":
        raise _BadRow("the conversation must start with a user message (after an optional system message)")
    if turns[-1] != "assistant":
        # A trailing question has no answer to learn from.
        raise _BadRow("the conversation must end with an assistant reply")


def _alpaca_row(row: dict) -> list[dict]:
    instruction = _text(row.get("instruction"), "'instruction'")
    output = _text(row.get("output"), "'output'")
    extra = _optional_text(row, "input")
    system = _optional_text(row, "system")
    if not instruction.strip():
        raise _BadRow("'instruction' is empty")
    if not output.strip():
        raise _BadRow("'output' is empty")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    conversation = [{"role": "system", "content": system}] if system.strip() else []
    conversation.append({"role": "user", "content": prompt})
    conversation.append({"role": "assistant", "content": output})
    return conversation


def _optional_text(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else _text(value, f"'{key}'")


def _text(value: Any, what: str) -> str:
    if value is None:
        raise _BadRow(f"{what} is missing")
    if not isinstance(value, str):
        raise _BadRow(f"{what} must be text, not a JSON {_json_type(value)}")
    try:
        # JSON allows escaped lone surrogates ("\ud800"); no tokenizer can encode them.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _BadRow(f"{what} contains an invalid Unicode escape") from None
    return value


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
        upto = render_conversation(messages[: index + 1], tokenizer, chat_template=chat_template)
        if not upto.startswith(prompt) or not full.startswith(upto):
            raise StudioError(
                "the chat template renders earlier turns differently once a reply follows, "
                "so the prompt cannot be masked out of the loss; use a template whose "
                "rendering of a conversation starts with the rendering of its first turns"
            )
        spans.append((len(prompt), len(upto)))
    return full, spans


def tokenize_conversation(
    messages: list[dict],
    tokenizer,
    max_length: int,
    chat_template: Optional[str] = None,
) -> Optional[TokenizedExample]:
    """Token ids and labels for one conversation; None when truncation leaves nothing to learn."""
    if not getattr(tokenizer, "is_fast", False):
        raise StudioError("masking the prompt needs a fast tokenizer (tokenizer.json); this model only has a slow one")
    if max_length < 1:
        raise StudioError(f"max length must be a positive number, got {max_length}")
    text, spans = assistant_spans(messages, tokenizer, chat_template)
    # The template writes its own special tokens (BOS included); adding more would double them.
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [
        token if _starts_inside(start, spans) else IGNORE_INDEX
        for token, (start, _end) in zip(input_ids, encoding["offset_mapping"])
    ]
    truncated = len(input_ids) > max_length
    # Keep the start: the system prompt and first question give the replies their meaning.
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return TokenizedExample(input_ids=input_ids, labels=labels, truncated=truncated)


def _starts_inside(start: int, spans: list[tuple[int, int]]) -> bool:
    # A token is the model's to predict when it begins inside a reply: a token that
    # straddles the generation prompt and the reply never occurs at inference time,
    # because there the prompt is tokenised on its own.
    return any(begin <= start < end for begin, end in spans)


def build_examples(
    dataset: DatasetFile,
    tokenizer,
    max_length: int,
    chat_template: Optional[str] = None,
) -> tuple[list[TokenizedExample], ExampleStats]:
    examples: list[TokenizedExample] = []
    stats = ExampleStats()
    for conversation in dataset.conversations:
        example = tokenize_conversation(conversation, tokenizer, max_length, chat_template)
        if example is None:
            stats.dropped += 1
            continue
        examples.append(example)
        stats.examples += 1
        stats.truncated += example.truncated
        stats.total_tokens += len(example.input_ids)
        stats.trained_tokens += sum(label != IGNORE_INDEX for label in example.labels)
    return examples, stats
