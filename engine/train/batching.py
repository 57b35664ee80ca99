"""How rows become batches: padded to the longest row, or padding-free.

Padding-free batching (transformers' ``DataCollatorWithFlattening``) lays a batch's rows
end to end in one row, with position ids restarting at each row and the boundaries in
``cu_seq_lens``; no padding token is ever computed. Attention must then stay inside each
row: flash-attention's variable-length kernels do that on CUDA, and elsewhere
``varlen_sdpa_attention`` runs sdpa once per row with a causal mask, so each row costs
what it would cost alone (a single block-diagonal mask would cost the square of the
whole batch's length).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable, Optional

VARLEN_ATTENTION = "studio_varlen_sdpa"
LENGTH_COLUMN = "length"


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def register_varlen_attention() -> str:
    """Register the per-row sdpa with transformers (once per process) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(VARLEN_ATTENTION, varlen_sdpa_attention)
    # Like flash-attention it needs no dense mask: the row boundaries come with the batch.
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, flash_attention_mask)
    return VARLEN_ATTENTION


def varlen_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Optional[Any],
                          dropout: float = 0.0, scaling: Optional[float] = None, sliding_window: Optional[int] = None,
                          cu_seq_lens_q: Optional[Any] = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention over a flattened batch, one row at a time (query/key/value: [1, heads, tokens, dim])."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for unused in ("cu_seq_lens_k", "max_length_q", "max_length_k", "is_causal"):
        kwargs.pop(unused, None)
    if cu_seq_lens_q is None or query.shape[0] != 1:
        # Not a flattened batch (generation, a padded evaluation): plain sdpa.
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    outputs = []
    bounds = _row_bounds(cu_seq_lens_q)
    for start, end in zip(bounds[:-1], bounds[1:]):
        mask = _sliding_window_mask(end - start, sliding_window, query.device)
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                        mask, dropout=dropout, scaling=scaling, is_causal=mask is None, **kwargs)
        outputs.append(out)  # [1, tokens, heads, dim]
    return torch.cat(outputs, dim=1), None


# One host read of the boundaries per batch, not one per layer: each read of a GPU tensor is a sync.
_bounds_cache: dict[str, Any] = {"tensor": None, "bounds": []}


def _row_bounds(cu_seq_lens: Any) -> list[int]:
    if _bounds_cache["tensor"] is not cu_seq_lens:
        _bounds_cache["tensor"], _bounds_cache["bounds"] = cu_seq_lens, [int(b) for b in cu_seq_lens.tolist()]
    return _bounds_cache["bounds"]


def _sliding_window_mask(length: int, window: Optional[int], device: Any) -> Optional[Any]:
    """A boolean causal mask that also forgets keys older than ``window``; None when the row fits the window."""
    if not window or length <= window:
        return None
    import torch

    positions = torch.arange(length, device=device)
    distance = positions[:, None] - positions[None, :]
    return ((distance >= 0) & (distance < window))[None, None]


def make_collator(tokenizer: Any, batching: str) -> Callable[[list[dict]], dict]:
    """The collator for ``batching``; both drop the length column that length-grouping reads."""
    if batching == "padding_free":
        from transformers import DataCollatorWithFlattening

        collate = DataCollatorWithFlattening(return_flash_attn_kwargs=True, return_position_ids=True)
    else:
        from transformers import DataCollatorForSeq2Seq

        collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)

    def collate_rows(rows: list[dict]) -> dict:
        return collate([{k: v for k, v in row.items() if k != LENGTH_COLUMN} for row in rows])

    return collate_rows


def with_lengths(examples: Any) -> Any:
    """The examples with a ``length`` column (tokens per row), read by length-grouped sampling,
    computed from the Arrow offsets rather than by reading every row."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(examples.data.column("input_ids")).to_pylist()
    return examples.add_column(LENGTH_COLUMN, lengths)
