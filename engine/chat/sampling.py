"""Sampling settings: their names, their allowed ranges, and the ``GenerationConfig`` they make."""

from __future__ import annotations

from typing import Any, Optional

from engine.core.checks import MAX_LENGTH, MAX_SEED, in_range, positive, whole
from engine.errors import StudioError

SETTINGS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")


# Past these no model answers differently (temperature and penalty are exponents on the
# logits; no vocabulary has a million tokens): a value beyond one is a typo, or an overflow.
_MAX_TEMPERATURE = 100.0
_MAX_PENALTY = 100.0
_MAX_TOP_K = 1_000_000


def check_sampling(
    max_new_tokens: int, temperature: float, top_p: float, top_k: int, repetition_penalty: float,
    seed: Optional[int] = None,
) -> None:
    """Refuse settings no generation can use, whoever gives them (the chat page, the CLI, a saved
    transcript): each a finite number of the right kind in its range; nan and inf never pass."""
    whole("max new tokens", max_new_tokens, 1, MAX_LENGTH)
    in_range("temperature (0 is greedy)", temperature, 0, _MAX_TEMPERATURE)
    in_range("top-p", top_p, 0, 1)
    if top_p == 0:
        raise StudioError("top-p must be more than 0 (1 keeps every token), got 0")
    whole("top-k (0 is off)", top_k, 0, _MAX_TOP_K)
    positive("repetition penalty", repetition_penalty, float)
    in_range("repetition penalty", repetition_penalty, high=_MAX_PENALTY)
    if seed is not None:
        whole("seed", seed, 0, MAX_SEED)


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
