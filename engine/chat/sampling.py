"""Sampling settings: their names and allowed ranges (engine.core.sampling_checks), and the
``GenerationConfig`` they make."""

from __future__ import annotations

from typing import Any

# The names and ranges live in engine.core, where the adapter library checks an adapter's
# chat settings by them too; imported here so that every chat caller finds them where it did.
from engine.core.sampling_checks import SETTINGS, check_sampling

__all__ = ["SETTINGS", "check_sampling", "generation_config"]


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
