"""Sampling settings: their names, their allowed ranges, and the ``GenerationConfig`` they make."""

from __future__ import annotations

from typing import Any

from engine.errors import StudioError

SETTINGS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


def check_sampling(
    max_new_tokens: int, temperature: float, top_p: float, top_k: int, repetition_penalty: float
) -> None:
    if max_new_tokens < 1:
        raise StudioError(f"max new tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0:
        raise StudioError(f"temperature must be 0 (greedy) or more, got {temperature}")
    if not 0 < top_p <= 1:
        raise StudioError(f"top-p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise StudioError(f"top-k must be 0 (off) or more, got {top_k}")
    if repetition_penalty <= 0:
        raise StudioError(f"repetition penalty must be positive, got {repetition_penalty}")


def generation_config(
    defaults: Any, tokenizer: Any, max_new_tokens: int, temperature: float, top_p: float, top_k: int,
    repetition_penalty: float,
) -> Any:
    """The ``GenerationConfig`` for these settings over the model's own ``defaults``; temperature 0 is greedy."""
    from transformers import GenerationConfig

    # Stop at the model's end-of-sequence tokens and at the tokenizer's: chat templates
    # end a turn with the tokenizer's EOS, which base checkpoints often do not list.
    eos = _as_list(defaults.eos_token_id) + _as_list(tokenizer.eos_token_id)
    eos = list(dict.fromkeys(eos))
    pad = next(t for t in (defaults.pad_token_id, tokenizer.pad_token_id, *eos, 0) if t is not None)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
        if temperature > 0
        else {"do_sample": False}
    )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        eos_token_id=eos or None,
        pad_token_id=pad,
        bos_token_id=defaults.bos_token_id,
        repetition_penalty=repetition_penalty,
        **sampling,
    )


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
