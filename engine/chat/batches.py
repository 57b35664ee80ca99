"""Replies generated in batches: which prompts share a batch, and one row of a batch's output
read back as a reply. ``ChatSession.generate_batch`` runs the batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from engine.chat.streaming import TurnEndFilter, literal_turn_end


@dataclass
class BatchReply:
    """One greedy reply from a batch: its text and how many tokens it took (its end-of-turn
    token included, as a streamed reply counts it)."""

    reply: str
    tokens: int


def length_batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """The indices of ``lengths`` in batches of up to ``batch_size``, longest prompts first.

    Sorting by length keeps the padding in each batch small (a batch costs as much as its
    longest prompt), and running the longest first means a prompt too long for the device
    fails in the first seconds, not at the end.
    """
    order = sorted(range(len(lengths)), key=lambda index: (-lengths[index], index))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def left_padded(rows: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Token rows as one batch, padded on the left: ``input_ids`` and ``attention_mask`` (torch
    tensors on the CPU). Every row ends in the last column, so generation adds one column for all
    and the positions a caller reads (a verdict, an answer's tokens) line up at the right."""
    import torch

    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row):] = torch.tensor(row, dtype=torch.long)
        attention_mask[index, width - len(row):] = 1
    return input_ids, attention_mask


def reply_from_ids(tokenizer: Any, ids: list[int], ends: set[int]) -> BatchReply:
    """The reply in one row of generated ids: up to and including its first end-of-sequence token
    (the rest is padding, added while the batch's other rows went on), decoded as a streamed
    reply is, a literal ChatML end-of-turn marker cut off with what follows it."""
    length = next((position + 1 for position, token in enumerate(ids) if token in ends), len(ids))
    text = tokenizer.decode(ids[:length], skip_special_tokens=True)
    turn_end = TurnEndFilter(literal_turn_end(tokenizer))
    return BatchReply(turn_end.push(text) + turn_end.flush(), length)
