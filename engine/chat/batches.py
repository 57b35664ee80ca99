"""Replies generated in batches: which prompts share a batch, and one row of a batch's output
read back as a reply. ``ChatSession.generate_batch`` runs the batches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from engine.chat.streaming import TurnEndFilter, literal_turn_end


# Rows per batch when the caller names none. On a CPU each row more shares every weight's trip
# through the cache: on the starter (one thread, 48 prompts, up to 128 new tokens, the same replies)
# batches of 8 rows took 97.6 s, of 16 77.1 s, of 32 64.1 s; 4 rows were slower still. A GPU keeps 8.
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 8
# No more rows than keep a batch's key/value cache under this, so that a larger model's batch
# (SmolLM2-1.7B in float32: 0.4 MB a token, 4 GB for 32 rows of 320 tokens) leaves its memory alone.
KV_CACHE_BUDGET = 1 << 30


def default_batch_size(device: str, kv_bytes_per_token: int, tokens_per_row: int) -> int:
    """Rows per batch on ``device`` for rows of up to ``tokens_per_row`` tokens (prompt and reply)."""
    rows = CPU_BATCH_SIZE if device == "cpu" else GPU_BATCH_SIZE
    return max(1, min(rows, KV_CACHE_BUDGET // max(1, kv_bytes_per_token * tokens_per_row)))


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
