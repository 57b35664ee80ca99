"""The chat's sampling settings: their names and the ranges a generation can use.

Here in engine.core, below every package that meets them: the chat generates with them
(engine.chat.sampling), and the adapter library keeps an adapter's own chat settings in its
studio.json (engine.adapters.library). Both check them by these rules.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from engine.core.checks import MAX_LENGTH, MAX_SEED, in_range, positive, whole
from engine.errors import StudioError

SETTINGS = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed")

# Past these no model answers differently (temperature and penalty are exponents on the
# logits; no vocabulary has a million tokens): a value beyond one is a typo, or an overflow.
_MAX_TEMPERATURE = 100.0
_MAX_PENALTY = 100.0
_MAX_TOP_K = 1_000_000


def _check_top_p(value: Any) -> None:
    in_range("top-p", value, 0, 1)
    if value == 0:
        raise StudioError("top-p must be more than 0 (1 keeps every token), got 0")


def _check_penalty(value: Any) -> None:
    positive("repetition penalty", value, float)
    in_range("repetition penalty", value, high=_MAX_PENALTY)


def _check_seed(value: Any) -> None:
    if value is not None:  # None draws a new seed for each reply
        whole("seed", value, 0, MAX_SEED)


# One check per setting, in the order check_sampling applies them.
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "max_new_tokens": lambda value: whole("max new tokens", value, 1, MAX_LENGTH),
    "temperature": lambda value: in_range("temperature (0 is greedy)", value, 0, _MAX_TEMPERATURE),
    "top_p": _check_top_p,
    "top_k": lambda value: whole("top-k (0 is off)", value, 0, _MAX_TOP_K),
    "repetition_penalty": _check_penalty,
    "seed": _check_seed,
}


def check_setting(name: str, value: Any) -> None:
    """Refuse one setting no generation can use: a finite number of the right kind in its range
    (nan and inf never pass); a seed may also be None (random). An unknown name is refused too."""
    if name not in _CHECKS:
        raise StudioError(f"unknown sampling setting {name!r}: the settings are {', '.join(SETTINGS)}")
    _CHECKS[name](value)


def check_sampling(
    max_new_tokens: int, temperature: float, top_p: float, top_k: int, repetition_penalty: float,
    seed: Optional[int] = None,
) -> None:
    """Refuse settings no generation can use, whoever gives them (the chat page, the CLI, a saved
    transcript, an adapter's chat settings)."""
    given = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                 repetition_penalty=repetition_penalty, seed=seed)
    for name, check in _CHECKS.items():
        check(given[name])
