"""Row formats: which columns hold what, detected from a file's first rows or set by the
user as a column mapping, and the turning of one row into chat messages.

A conversation is a list of ``{"role", "content"}`` messages with roles system, user
and assistant; raw text for continued pre-training is a conversation of one message
with the role ``text``. Every check that can fail raises ``BadRow`` with a reason that
names the column, so the user can find and fix the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from engine.core.choices import DATASET_FORMATS
from engine.data.readers import json_type, names, quoted
from engine.errors import StudioError

ROLES = ("system", "user", "assistant")
TEXT_ROLE = "text"
# Codes of the problems a row can have, so a pass can say how many rows have which
# (``engine.data.trainable`` words them when no row can train).
EMPTY_ANSWER = "empty_answer"
EMPTY = "empty"
ROLE_ORDER = "role_order"
UNKNOWN_ROLE = "unknown_role"
NO_ANSWER = "no_answer"
SYSTEM_ONLY = "system_only"
TEMPLATE_REFUSED = "template"  # the chat template fails on the row (engine.data.rendering)


@dataclass(frozen=True)
class RowFormat:
    name: str
    title: str
    fields: tuple[str, ...]
    required: tuple[str, ...]
    # Column names (lower case) that hold each field, most likely first.
    aliases: dict[str, tuple[str, ...]]


_SYSTEM = ("system", "system_prompt", "system_message")
_PROMPT = ("prompt", "question", "instruction", "input", "query")
_CHOSEN = ("chosen", "chosen_response", "response_chosen", "preferred")
_REJECTED = ("rejected", "rejected_response", "response_rejected", "dispreferred")
FORMATS: dict[str, RowFormat] = {f.name: f for f in (
    RowFormat("messages", "OpenAI chat (messages: role / content)", ("messages",), ("messages",),
              {"messages": ("messages", "conversations", "conversation", "chat", "dialog", "dialogue")}),
    RowFormat("sharegpt", "ShareGPT (conversations: from / value)", ("conversations", "system"), ("conversations",),
              {"conversations": ("conversations", "conversation", "messages", "chat", "items"), "system": _SYSTEM}),
    RowFormat("alpaca", "Alpaca (instruction / input / output)", ("instruction", "input", "output", "system", "history"),
              ("instruction", "output"),
              {"instruction": ("instruction",), "input": ("input", "context"), "output": ("output",),
               "system": _SYSTEM, "history": ("history",)}),
    RowFormat("prompt_completion", "Prompt / completion", ("prompt", "completion", "system"), ("prompt", "completion"),
              {"prompt": ("prompt",), "completion": ("completion",), "system": _SYSTEM}),
    RowFormat("qa", "Question / answer pairs", ("question", "answer", "system"), ("question", "answer"),
              {"question": ("question", "query", "prompt", "input", "instruction", "user", "human", "request",
                            "q"),
               "answer": ("answer", "response", "output", "completion", "reply", "assistant", "gpt", "target",
                          "a"),
               "system": _SYSTEM}),
    RowFormat("text", "Raw text (continued pre-training)", ("text",), ("text",),
              {"text": ("text", "content", "document", "body", "raw_text", "passage")}),
    # The preference layouts (their rows become pairs in engine.data.pair_rows).
    RowFormat("preference", "Pairs (prompt / chosen / rejected)", ("prompt", "chosen", "rejected", "system"),
              ("prompt", "chosen", "rejected"),
              {"prompt": _PROMPT, "chosen": _CHOSEN, "rejected": _REJECTED, "system": _SYSTEM}),
    RowFormat("preference_conversations", "Pairs of whole conversations (HH-RLHF)",
              ("chosen", "rejected", "system"), ("chosen", "rejected"),
              {"chosen": _CHOSEN, "rejected": _REJECTED, "system": _SYSTEM}),
    RowFormat("sharegpt_preference", "ShareGPT with chosen / rejected",
              ("conversations", "chosen", "rejected", "system"), ("conversations", "chosen", "rejected"),
              {"conversations": ("conversations", "conversation", "messages", "chat", "items"), "chosen": _CHOSEN,
               "rejected": _REJECTED, "system": _SYSTEM}),
    RowFormat("unpaired_preference", "KTO (prompt / completion / label)",
              ("prompt", "completion", "label", "system"), ("prompt", "completion", "label"),
              {"prompt": _PROMPT, "completion": ("completion", "response", "answer", "output"),
               "label": ("label", "kto_tag", "desirable"), "system": _SYSTEM}),
)}
_TURN_COLUMNS = set(FORMATS["messages"].aliases["messages"] + FORMATS["sharegpt"].aliases["conversations"])
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "model": "assistant", "bard": "assistant", "bing": "assistant",
                   "system": "system"}


class BadRow(Exception):
    """A row that cannot be used; its message becomes a RowProblem's reason.

    ``prompt`` is the row's conversation when its only fault is that no answer ends it: nothing
    to train on, but a prompt an evaluation can still put to a model (``DatasetSource.items``).
    """

    def __init__(self, reason: str, code: str = "bad_row", prompt: Optional[list[dict]] = None) -> None:
        super().__init__(reason)
        self.code = code
        self.prompt = prompt


@dataclass(frozen=True)
class Layout:
    """A format and the column that holds each of its fields."""

    format: str
    mapping: dict[str, str]

    @property
    def title(self) -> str:
        return FORMATS[self.format].title


def choose_layout(rows: list[Any], format_name: Optional[str] = None,
                  columns: Optional[dict[str, str]] = None, name: str = "dataset") -> Layout:
    """The layout of a file from its first rows: detected, or the one the user chose.

    ``columns`` maps a format's fields to column names; fields left out are found by
    their usual names. Raises StudioError naming the columns when no format fits.
    """
    columns = dict(columns or {})
    present = row_columns(rows)
    if format_name is None and columns:
        format_name = _format_for_fields(columns)
    if format_name is None:
        detected = _detect(rows, present)
        if detected is None:
            raise StudioError(_undetected(rows, present, name))
        return detected
    if format_name not in FORMATS:
        raise StudioError(f"unknown format {format_name!r}; choose one of {', '.join(DATASET_FORMATS)}")
    return Layout(format_name, _complete_mapping(FORMATS[format_name], columns, present, name))


def row_columns(rows: list[Any]) -> list[str]:
    """Every key of the dict rows, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            seen.update((str(key), None) for key in row)
    return list(seen)


def _format_for_fields(columns: dict[str, str]) -> str:
    fields = set(columns)
    candidates = [f.name for f in FORMATS.values() if fields <= set(f.fields)]
    # Several formats share optional fields (system): prefer one whose required fields are all named.
    exact = [name for name in candidates if set(FORMATS[name].required) <= fields]
    if exact or candidates:
        return (exact or candidates)[0]
    known = sorted({field for f in FORMATS.values() for field in f.fields})
    raise StudioError(f"unknown field(s) {names(sorted(fields - set(known)) or sorted(fields))} in the column "
                      f"mapping; the fields are {', '.join(known)}")


def _find(present: list[str], aliases: tuple[str, ...], taken: set[str]) -> Optional[str]:
    by_lower: dict[str, str] = {}
    for column in present:
        by_lower.setdefault(column.lower(), column)
    for alias in aliases:
        column = by_lower.get(alias)
        if column is not None and column not in taken:
            return column
    return None


def _complete_mapping(spec: RowFormat, given: dict[str, str], present: list[str], name: str) -> dict[str, str]:
    unknown = sorted(set(given) - set(spec.fields))
    if unknown:
        raise StudioError(f"the {spec.name} format has no field {names(unknown)}; "
                          f"its fields are {', '.join(spec.fields)}")
    for field, column in given.items():
        if not isinstance(column, str) or column not in present:
            raise StudioError(f"{name} has no column {quoted(column)} for {field} "
                              f"(its columns: {names(present) or 'none'})")
    mapping = dict(given)
    for field in spec.fields:
        if field not in mapping:
            column = _find(present, spec.aliases[field], set(mapping.values()))
            if column is not None:
                mapping[field] = column
    missing = [field for field in spec.required if field not in mapping]
    if missing:
        raise StudioError(f"{name}: no column for {', '.join(missing)} in the {spec.name} format "
                          f"(its columns: {names(present) or 'none'}); map them, e.g. {missing[0]}=COLUMN")
    return {field: mapping[field] for field in spec.fields if field in mapping}


def _undetected(rows: list[Any], present: list[str], name: str) -> str:
    """Why no format fits: a file of one answer where a preference pair needs two, or a turns
    column that holds no turns, is named as such."""
    one_answer = _one_answer_message(present, name)
    if one_answer:
        return one_answer
    for column in present:
        if column.lower() in _TURN_COLUMNS:
            first = next((row.get(column) for row in rows if isinstance(row, dict)), None)
            shown = repr(first)[:40]
            return (f"{name}: column {column!r} should hold a list of turns (role and content) but holds "
                    f"{shown}; fix the rows, or choose a format and map the columns")
    return (f"{name}: cannot tell the format from its columns ({names(present) or 'none'}); choose a "
            "format and map the columns, for example question=COLUMN,answer=COLUMN")


def _one_answer_message(present: list[str], name: str) -> Optional[str]:
    """A chosen column without a rejected one (or the other way round): half a preference pair."""
    chosen, rejected = _find(present, _CHOSEN, set()), _find(present, _REJECTED, set())
    if (chosen is None) == (rejected is None):
        return None
    has, lacks = ((chosen, "rejected") if chosen else (rejected, "chosen"))
    return (f"{name} has a {has!r} column and no {lacks} one: its rows hold one answer, and a preference pair "
            f"needs a chosen and a rejected answer; map the other answer ({lacks}=COLUMN), or train on the answers "
            f"with SFT (question / answer format, answer={has})")


def _detect(rows: list[Any], present: list[str]) -> Optional[Layout]:
    if _one_answer_message(present, "") is not None:
        return None  # half a pair: _undetected says so, rather than a guess at another format
    preference = _preference_layout(rows, present)
    if preference is not None:
        return preference
    usual = [column for column in present if column.lower() in _TURN_COLUMNS]
    turns = _turns_layout(rows, usual, present)
    if turns is not None:
        return turns
    lower = {column.lower() for column in present}
    for format_name, needs in (("alpaca", {"instruction", "output"}), ("prompt_completion", {"prompt", "completion"})):
        if needs <= lower:
            return Layout(format_name, _complete_mapping(FORMATS[format_name], {}, present, ""))
    qa = FORMATS["qa"]
    question = _find(present, qa.aliases["question"], set())
    answer = _find(present, qa.aliases["answer"], {question} if question else set())
    if question and answer:
        return Layout("qa", _complete_mapping(qa, {}, present, ""))
    # Last, message lists under an unusual column name.
    turns = _turns_layout(rows, [column for column in present if column not in usual], present)
    if turns is not None:
        return turns
    text = _find(present, FORMATS["text"].aliases["text"], set())
    if text is None and len(present) == 1 and all(isinstance(row.get(present[0]), str) for row in rows
                                                  if isinstance(row, dict)):
        text = present[0]
    return Layout("text", {"text": text}) if text else None


def _preference_layout(rows: list[Any], present: list[str]) -> Optional[Layout]:
    """A preference layout: chosen and rejected answers (with ShareGPT turns, a prompt, or neither,
    when they are whole conversations), or KTO's completions labelled good or bad."""
    def layout(format_name: str) -> Layout:
        return Layout(format_name, _complete_mapping(FORMATS[format_name], {}, present, ""))

    if _find(present, _CHOSEN, set()) and _find(present, _REJECTED, set()):
        turns = _turns_layout(rows, [column for column in present if column.lower() in _TURN_COLUMNS], present)
        if turns is not None and turns.format == "sharegpt":
            return layout("sharegpt_preference")
        return layout("preference" if _find(present, _PROMPT, set()) else "preference_conversations")
    spec = FORMATS["unpaired_preference"]
    label = _find(present, spec.aliases["label"], set())
    # A label column is KTO's only when it holds true / false: an evaluation's question / answer /
    # label file (a class name) stays question / answer pairs.
    if label and any(isinstance(row.get(label), bool) for row in rows if isinstance(row, dict)) and all(
            _find(present, spec.aliases[field], set()) for field in ("prompt", "completion")):
        return layout("unpaired_preference")
    return None


def _turns_layout(rows: list[Any], candidates: list[str], present: list[str]) -> Optional[Layout]:
    """The first candidate column holding message lists: role/content or ShareGPT's from/value."""
    for column in candidates:
        for row in rows:
            value = row.get(column) if isinstance(row, dict) else None
            messages = _as_list(value)
            first = messages[0] if isinstance(messages, list) and messages else None
            if not isinstance(first, dict):
                continue
            if "from" in first and "value" in first:
                system = _find(present, _SYSTEM, {column})
                mapping = {"conversations": column, **({"system": system} if system else {})}
                return Layout("sharegpt", mapping)
            if "role" in first:
                return Layout("messages", {"messages": column})
            break
    return None


def _as_list(value: Any) -> Any:
    """A list as is; a string holding a JSON list (a table cell) parsed; anything else as is."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def converter(layout: Layout) -> Callable[[Any], list[dict]]:
    """A function turning one row of this layout into a conversation, or raising BadRow."""
    return object_rows(_CONVERTERS[layout.format], layout.mapping)


def object_rows(convert: Callable[[dict, dict[str, str]], Any], mapping: dict[str, str]) -> Callable[[Any], Any]:
    """``convert`` applied to a row with this column mapping, once the row is known to be an object."""
    def to_value(row: Any) -> Any:
        if not isinstance(row, dict):
            raise BadRow(f"row is a JSON {json_type(row)}, not an object", "wrong_type")
        return convert(row, mapping)

    return to_value


def _column(row: dict, mapping: dict[str, str], field: str, required: bool = True) -> Any:
    column = mapping.get(field)
    if column is None:
        return None
    value = row.get(column)
    if value is None and required:
        raise BadRow(f"{quoted(column)} is missing", "missing")
    return value


def _text(value: Any, what: str) -> str:
    if value is None:
        raise BadRow(f"{what} is missing", "missing")
    if not isinstance(value, str):
        raise BadRow(f"{what} must be text, not a JSON {json_type(value)}", "wrong_type")
    try:
        # JSON allows escaped lone surrogates ("\ud800"); no tokenizer can encode them.
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRow(f"{what} contains an invalid Unicode escape", "wrong_type") from None
    return value


def _field_text(row: dict, mapping: dict[str, str], field: str, required: bool = True) -> str:
    value = _column(row, mapping, field, required)
    if value is None:
        return ""
    return _text(value, f"{quoted(mapping[field])}")


def _brief(value: Any) -> str:
    # Problems are shown one per line: a stray megabyte must not become one.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _content(value: Any, what: str) -> str:
    """Message content: text, or OpenAI's list of parts when every part is text."""
    if isinstance(value, list) and value and all(isinstance(part, dict) for part in value):
        kinds = {part.get("type") for part in value}
        if kinds != {"text"}:
            other = sorted(str(kind) for kind in kinds - {"text"})
            raise BadRow(f"{what} has non-text parts ({names(other)})", "wrong_type")
        return "".join(_text(part.get("text"), f"{what} text") for part in value)
    return _text(value, what)


def _check_conversation(conversation: list[dict]) -> list[dict]:
    for number, message in enumerate(conversation, start=1):
        role, content = message["role"], message["content"]
        if role == "system" and number != 1:
            raise BadRow(f"message {number} is a system message; only the first message may be one", ROLE_ORDER)
        if role != "system" and not content.strip():
            raise BadRow(f"message {number} is an empty {role} message",
                         EMPTY_ANSWER if role == "assistant" else EMPTY)
    turns = [message["role"] for message in conversation if message["role"] != "system"]
    if not turns:
        raise BadRow("the conversation holds only a system message", SYSTEM_ONLY)
    if turns == ["user"]:
        # A question alone has no answer to learn from.
        raise BadRow("the conversation must end with an assistant reply, and has none", NO_ANSWER, conversation)
    if turns[0] != "user" or turns[-1] != "assistant":
        raise BadRow(f"the roles go {_roles(turns)}: a conversation must start with a user message (after an "
                     "optional system message) and end with an assistant reply", ROLE_ORDER)
    return conversation


def _roles(turns: list[str], shown: int = 6) -> str:
    more = ", ..." if len(turns) > shown else ""
    return ", ".join(turns[:shown]) + more


def _message_list(value: Any, column: str) -> list:
    messages = _as_list(value)
    if not isinstance(messages, list):
        raise BadRow(f"{quoted(column)} must be a list of messages, not a JSON {json_type(messages)}", "wrong_type")
    if not messages:
        raise BadRow(f"{quoted(column)} is empty", EMPTY)
    return messages


def _role_content_messages(messages: list, column: str) -> list[dict]:
    conversation = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise BadRow(f"message {number} in {quoted(column)} is not an object", "wrong_type")
        role = message.get("role")
        if role not in ROLES:
            raise BadRow(f"message {number} has role {_brief(role)}; expected system, user or assistant",
                         UNKNOWN_ROLE)
        conversation.append({"role": role, "content": _content(message.get("content"), f"message {number} content")})
    return conversation


def _messages_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    column = mapping["messages"]
    messages = _message_list(_column(row, mapping, "messages"), column)
    return _check_conversation(_role_content_messages(messages, column))


def sharegpt_message(turn: Any, what: str) -> dict:
    """One ShareGPT turn (from / value) as a chat message; ``what`` names the turn in a bad row's reason."""
    if not isinstance(turn, dict):
        raise BadRow(f"{what} is a JSON {json_type(turn)}, not a turn (from / value)", "wrong_type")
    speaker = turn.get("from")
    role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        raise BadRow(f"{what} is from {_brief(speaker)}; expected human, gpt or system", UNKNOWN_ROLE)
    return {"role": role, "content": _text(turn.get("value"), f"{what} value")}


def _sharegpt_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    column = mapping["conversations"]
    messages = _message_list(_column(row, mapping, "conversations"), column)
    conversation = [sharegpt_message(message, f"message {number}") for number, message in enumerate(messages, start=1)]
    system = _field_text(row, mapping, "system", required=False)
    if system.strip() and not (conversation and conversation[0]["role"] == "system"):
        conversation.insert(0, {"role": "system", "content": system})
    return _check_conversation(conversation)


def _alpaca_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    instruction = _field_text(row, mapping, "instruction")
    output = _field_text(row, mapping, "output")
    extra = _field_text(row, mapping, "input", required=False)
    system = _field_text(row, mapping, "system", required=False)
    if not instruction.strip():
        raise BadRow(f"{quoted(mapping['instruction'])} is empty", EMPTY)
    conversation = [{"role": "system", "content": system}] if system.strip() else []
    conversation += _alpaca_history(row, mapping)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    conversation.append({"role": "user", "content": prompt})
    if not output.strip():
        raise BadRow(f"{quoted(mapping['output'])} is empty", EMPTY_ANSWER, conversation)
    conversation.append({"role": "assistant", "content": output})
    return _check_conversation(conversation)


def _alpaca_history(row: dict, mapping: dict[str, str]) -> list[dict]:
    """Earlier turns, as Alpaca-style datasets store them: a list of [instruction, output] pairs."""
    history = _as_list(_column(row, mapping, "history", required=False))
    if history is None:
        return []
    column = mapping["history"]
    if not isinstance(history, list):
        raise BadRow(f"{quoted(column)} must be a list of [instruction, output] pairs", "wrong_type")
    turns = []
    for number, pair in enumerate(history, start=1):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise BadRow(f"{quoted(column)} item {number} must be an [instruction, output] pair", "wrong_type")
        turns.append({"role": "user", "content": _text(pair[0], f"{quoted(column)} item {number} instruction")})
        turns.append({"role": "assistant", "content": _text(pair[1], f"{quoted(column)} item {number} output")})
    return turns


def _prompt_completion_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    prompt = _as_list(_column(row, mapping, "prompt"))
    completion = _as_list(_column(row, mapping, "completion"))
    if isinstance(prompt, list) and isinstance(completion, list):
        # The conversational variant: both sides are lists of role/content messages.
        conversation = (_role_content_messages(_message_list(prompt, mapping["prompt"]), mapping["prompt"])
                        + _role_content_messages(_message_list(completion, mapping["completion"]),
                                                 mapping["completion"]))
        return _check_conversation(conversation)
    return _pair(row, mapping, "prompt", "completion")


def _qa_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    return _pair(row, mapping, "question", "answer")


def _pair(row: dict, mapping: dict[str, str], ask: str, reply: str) -> list[dict]:
    question = _field_text(row, mapping, ask)
    answer = _field_text(row, mapping, reply)
    system = _field_text(row, mapping, "system", required=False)
    if not question.strip():
        raise BadRow(f"{quoted(mapping[ask])} is empty", EMPTY)
    conversation = [{"role": "system", "content": system}] if system.strip() else []
    conversation.append({"role": "user", "content": question})
    if not answer.strip():
        raise BadRow(f"{quoted(mapping[reply])} is empty", EMPTY_ANSWER, conversation)
    return conversation + [{"role": "assistant", "content": answer}]


def _text_row(row: dict, mapping: dict[str, str]) -> list[dict]:
    text = _field_text(row, mapping, "text")
    if not text.strip():
        raise BadRow(f"{quoted(mapping['text'])} is empty", EMPTY)
    return [{"role": TEXT_ROLE, "content": text}]


_CONVERTERS: dict[str, Callable[[dict, dict[str, str]], list[dict]]] = {
    "messages": _messages_row,
    "sharegpt": _sharegpt_row,
    "alpaca": _alpaca_row,
    "prompt_completion": _prompt_completion_row,
    "qa": _qa_row,
    "text": _text_row,
}


def parse_columns(text: str) -> dict[str, str]:
    """``field=column,field=column`` (as typed on the command line) as a mapping."""
    mapping: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise StudioError(f"column mapping {pair!r} must look like field=column, e.g. question=prompt_text")
        mapping[field.strip()] = column.strip()
    return mapping
