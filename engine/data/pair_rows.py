"""One row of a preference layout as the pair TRL's trainers read, in its conversational form:

    {"prompt": [messages], "chosen": [assistant messages], "rejected": [assistant messages]}

or, for KTO's labelled answers, ``{"prompt": [...], "completion": [...], "label": True}``.

Each layout (``engine.data.formats.FORMATS``) has its converter here; a row that cannot be a
pair raises ``BadRow`` naming the column, as the SFT converters do. Whole conversations
(HH-RLHF's ``chosen`` / ``rejected``) share a start: that start becomes the prompt, as TRL's
``extract_prompt`` makes it.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from engine.data.formats import (_SHAREGPT_ROLES, EMPTY, EMPTY_ANSWER, ROLE_ORDER, BadRow, Layout, _as_list,
                                 _brief, _check_conversation, _column, _field_text,
                                 object_rows, _role_content_messages, _text, sharegpt_message)
from engine.data.readers import quoted

ONE_ANSWER = "one_answer"  # a row whose chosen or rejected answer is missing or empty
BAD_LABEL = "bad_label"  # a KTO row whose label is not true or false

# HH-RLHF's transcripts: "\n\nHuman: ...\n\nAssistant: ..." (the speakers at the start of a line).
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def pair_converter(layout: Layout) -> Callable[[Any], dict]:
    """A function turning one row of this preference layout into a pair, or raising BadRow."""
    return object_rows(_CONVERTERS[layout.format], layout.mapping)


def pair_conversation(pair: dict) -> list[dict]:
    """The conversation a pair's preferred answer ends (KTO: its one answer), for the views and
    hashes that read conversations."""
    return pair["prompt"] + pair.get("chosen", pair.get("completion", []))


# ------------------------------------------------------------------ the layouts
def _preference_row(row: dict, mapping: dict[str, str]) -> dict:
    chosen, rejected = _answer_values(row, mapping)
    if _whole_conversations(chosen) and _whole_conversations(rejected):
        # The answers repeat the prompt (UltraFeedback's layout): their shared start is the prompt.
        return _split_shared_start(_messages(chosen, mapping["chosen"]), _messages(rejected, mapping["rejected"]),
                                   _system(row, mapping))
    prompt = _prompt(row, mapping, "prompt")
    return _pair(prompt, _answer(chosen, mapping["chosen"]), _answer(rejected, mapping["rejected"]))


def _conversations_row(row: dict, mapping: dict[str, str]) -> dict:
    chosen, rejected = _answer_values(row, mapping)
    return _split_shared_start(_transcript(chosen, mapping["chosen"]), _transcript(rejected, mapping["rejected"]),
                               _system(row, mapping))


def _sharegpt_row(row: dict, mapping: dict[str, str]) -> dict:
    column = mapping["conversations"]
    turns = _as_list(_column(row, mapping, "conversations"))
    if not isinstance(turns, list) or not turns:
        raise BadRow(f"{quoted(column)} must be a non-empty list of turns (from / value)", "wrong_type")
    prompt = [sharegpt_message(turn, f"turn {number} of {quoted(column)}") for number, turn in enumerate(turns, 1)]
    system = _system(row, mapping)
    if system and prompt[0]["role"] != "system":
        prompt.insert(0, system[0])
    chosen, rejected = _answer_values(row, mapping)
    return _pair(prompt, _sharegpt_answer(chosen, mapping["chosen"]), _sharegpt_answer(rejected, mapping["rejected"]))


def _unpaired_row(row: dict, mapping: dict[str, str]) -> dict:
    label = _column(row, mapping, "label")
    if not isinstance(label, bool):
        raise BadRow(f"{quoted(mapping['label'])} is {_brief(label)}, not true (a good answer) or false (a bad one)",
                     BAD_LABEL)
    prompt = _prompt(row, mapping, "prompt")
    completion = _column(row, mapping, "completion")
    answer = _answer(completion, mapping["completion"])
    _check_conversation(prompt + answer)
    return {"prompt": prompt, "completion": answer, "label": label}


# ------------------------------------------------------------------ the parts of a row
def _answer_values(row: dict, mapping: dict[str, str]) -> tuple[Any, Any]:
    """The two answers' raw values; a row with one of them missing or empty has only one answer."""
    values = []
    for field in ("chosen", "rejected"):
        value = row.get(mapping[field])
        if value is None or (isinstance(value, (str, list, dict)) and not _has_text(value)):
            other = "rejected" if field == "chosen" else "chosen"
            raise BadRow(f"{quoted(mapping[field])} is {'missing' if value is None else 'empty'}: the row has only "
                         f"its {other} answer", ONE_ANSWER)
        values.append(value)
    return values[0], values[1]


def _has_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value)


def _system(row: dict, mapping: dict[str, str]) -> list[dict]:
    system = _field_text(row, mapping, "system", required=False)
    return [{"role": "system", "content": system}] if system.strip() else []


def _prompt(row: dict, mapping: dict[str, str], field: str) -> list[dict]:
    """The prompt: text (the user's message) or a list of messages, the system column in front."""
    column = mapping[field]
    value = _messages_or_text(_column(row, mapping, field))
    if isinstance(value, list):
        prompt = _messages(value, column)
    else:
        text = _text(value, quoted(column))
        if not text.strip():
            raise BadRow(f"{quoted(column)} is empty", EMPTY)
        prompt = [{"role": "user", "content": text}]
    if prompt[0]["role"] != "system":
        prompt = _system(row, mapping) + prompt
    return prompt


def _messages(value: Any, column: str) -> list[dict]:
    messages = _as_list(value)
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise BadRow(f"{quoted(column)} must be text or a non-empty list of messages", "wrong_type")
    if isinstance(messages[0], dict) and "from" in messages[0]:
        return [sharegpt_message(message, f"message {number} in {quoted(column)}")
                for number, message in enumerate(messages, 1)]
    return _role_content_messages(messages, column)


def _messages_or_text(value: Any) -> Any:
    """A table cell's JSON list of messages parsed (``_as_list``); text that only looks like a JSON
    list, as a code answer may ('[0, 1, 3]', '[{"name": "Jo"}]'), stays the text it is."""
    parsed = _as_list(value)
    if isinstance(value, str) and not (isinstance(parsed, list) and parsed and all(
            isinstance(item, dict) and ("role" in item or "from" in item) for item in parsed)):
        return value
    return parsed


def _answer(value: Any, column: str) -> list[dict]:
    """An answer: text (one assistant message) or a list of messages (a dict: one)."""
    value = _messages_or_text(value)
    if isinstance(value, (list, dict)):
        return _messages(value, column)
    return [{"role": "assistant", "content": _text(value, quoted(column))}]


def _sharegpt_answer(value: Any, column: str) -> list[dict]:
    """LLaMA-Factory's answer: one turn {"from": "gpt", "value": ...}, a list of them, or text."""
    value = _messages_or_text(value)
    if isinstance(value, dict):
        return [sharegpt_message(value, quoted(column))]
    if isinstance(value, list):
        return [sharegpt_message(turn, f"turn {number} of {quoted(column)}") for number, turn in enumerate(value, 1)]
    return [{"role": "assistant", "content": _text(value, quoted(column))}]


def _whole_conversations(value: Any) -> bool:
    """Whether an answer is a whole conversation (it starts with something other than the reply)."""
    value = _as_list(value)
    if not isinstance(value, list) or not value or not isinstance(value[0], dict):
        return False
    first = value[0].get("role", _SHAREGPT_ROLES.get(str(value[0].get("from"))))
    return first != "assistant"


def _transcript(value: Any, column: str) -> list[dict]:
    """A whole conversation: a list of messages, or HH-RLHF's "Human: / Assistant:" text."""
    value = _as_list(value)
    if isinstance(value, list):
        return _messages(value, column)
    text = _text(value, quoted(column))
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRow(f"{quoted(column)} is text that is not a \"Human: ... Assistant: ...\" transcript", "wrong_type")
    return [{"role": _HH_ROLES[speaker], "content": content.strip()}
            for speaker, content in zip(parts[1::2], parts[2::2])]


def _split_shared_start(chosen: list[dict], rejected: list[dict], system: list[dict]) -> dict:
    """Two whole conversations as a pair: their shared start (up to the last user message before
    they part) is the prompt, as TRL's ``extract_prompt`` splits them."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) == len(rejected):
        # The same conversation twice: the answers are its last reply (engine.data.preference counts them).
        shared -= 1
    while shared and chosen[shared - 1]["role"] == "assistant":
        shared -= 1  # the answers start with the assistant's reply, never after it
    if not shared:
        raise BadRow("the chosen and rejected conversations share no prompt: they must start with the same "
                     "user message", ROLE_ORDER)
    prompt = chosen[:shared]
    if system and prompt[0]["role"] != "system":
        prompt = system + prompt
    return _pair(prompt, chosen[shared:], rejected[shared:])


def _pair(prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> dict:
    if prompt[-1]["role"] != "user":
        raise BadRow(f"the prompt ends with a {prompt[-1]['role']} message: it must end with the user's message "
                     "the answers reply to", ROLE_ORDER)
    for answer in (chosen, rejected):
        if not answer or answer[0]["role"] != "assistant":
            raise BadRow("an answer must start with the assistant's reply", ROLE_ORDER)
        if not answer[0]["content"].strip():
            raise BadRow("an answer is empty", EMPTY_ANSWER)
        _check_conversation(prompt + answer)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


_CONVERTERS: dict[str, Callable[[dict, dict[str, str]], dict]] = {
    "preference": _preference_row,
    "preference_conversations": _conversations_row,
    "sharegpt_preference": _sharegpt_row,
    "unpaired_preference": _unpaired_row,
}
