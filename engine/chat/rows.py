"""Many replies in one ``generate``, each row with its own sampling settings, length, stop and
token stream: what a server needs to answer several clients at once.

``generate`` takes one ``GenerationConfig`` for the whole batch. So the batch is decoded
greedily, and ``RowSampler`` (a logits processor) does each row's own choice: its repetition
penalty, temperature, top-k and top-p through transformers' own processors, in the order
``generate`` applies them, then a draw from the row's own seeded generator. One row sampled
this way draws exactly what ``generate(do_sample=True)`` draws after ``torch.manual_seed(seed)``,
so a reply does not depend on which other requests shared its batch.
``ChatSession.generate_rows`` runs a batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from engine.chat.sampling import check_sampling
from engine.core.checks import in_range, whole

# How a row ended, as the OpenAI API names it: its end-of-sequence token, its token limit, or
# the caller (a client that went away).
FINISH_STOP, FINISH_LENGTH, FINISH_CANCELLED = "stop", "length", "cancelled"


@dataclass
class RowRequest:
    """One reply wanted: the prompt's token ids and how to sample the answer."""

    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None  # None: greedy rows need none; sampled rows draw one
    # Added to these tokens' logits before anything else (OpenAI's logit_bias): -100 bans a token.
    logit_bias: dict[int, float] = field(default_factory=dict)
    cancel: threading.Event = field(default_factory=threading.Event)

    def check(self) -> None:
        check_sampling(self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.repetition_penalty,
                       self.seed)
        for token, bias in self.logit_bias.items():
            whole("a logit bias's token id", token, 0, None)
            in_range(f"the logit bias of token {token}", bias, -100, 100)


@dataclass
class RowResult:
    """How a row's reply ended: its token count (an end-of-sequence token included) and why."""

    tokens: int
    finish_reason: str


class RowSampler:
    """A logits processor that picks each row's next token by that row's settings.

    It returns scores that are minus infinity except at the chosen token, so the batch's
    greedy step takes it. Rows padded on the left pass only their own tokens to the
    repetition penalty: padding is often the end-of-sequence token, and penalising it would
    make a batched reply run longer than the same reply alone.
    """

    def __init__(self, rows: list[RowRequest], pad_widths: list[int], device: Any) -> None:
        import torch

        self.rows = rows
        self.pad_widths = pad_widths
        self.processors = [_row_processors(row) for row in rows]
        self.generators = []
        for row in rows:
            generator = None
            if row.temperature > 0:
                generator = torch.Generator(device=device)
                generator.manual_seed(row.seed)
            self.generators.append(generator)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        chosen = torch.full_like(scores, float("-inf"))
        for index, row in enumerate(self.rows):
            row_scores = scores[index:index + 1]
            own_ids = input_ids[index:index + 1, self.pad_widths[index]:]
            if row.logit_bias:
                row_scores = row_scores.clone()
                for token, bias in row.logit_bias.items():
                    row_scores[0, token] += bias
            for processor in self.processors[index]:
                row_scores = processor(own_ids, row_scores)
            if self.generators[index] is None:
                token = int(row_scores.argmax(dim=-1))
            else:
                probs = torch.nn.functional.softmax(row_scores, dim=-1)
                token = int(torch.multinomial(probs, num_samples=1, generator=self.generators[index]))
            chosen[index, token] = 0.0
        return chosen


def _row_processors(row: RowRequest) -> list[Any]:
    """The processors ``generate`` would apply for this row's settings, in its order."""
    from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    processors: list[Any] = []
    if row.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(penalty=row.repetition_penalty))
    if row.temperature > 0:
        if row.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(row.temperature))
        if row.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=row.top_k, min_tokens_to_keep=1))
        if row.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=row.top_p, min_tokens_to_keep=1))
    return processors


class RowTracker:
    """Follows each row through decoding: hands its new tokens to ``on_tokens``, and ends it at
    its own end-of-sequence token, token limit or cancellation.

    It is both the batch's streamer (``put`` gets every row's next token, once per step) and
    its stopping criterion (a row it reports as done gets only padding from then on).
    """

    def __init__(self, rows: list[RowRequest], width: int, limits: list[int], ends: set[int],
                 on_tokens: Callable[[int, list[int]], None],
                 on_finished: Optional[Callable[[int, RowResult], None]] = None) -> None:
        self.rows = rows
        self.width = width  # the padded prompts' width: what input_ids holds beyond it was generated
        self.limits = limits
        self.ends = ends
        self.on_tokens = on_tokens
        self.on_finished = on_finished
        self.counts = [0] * len(rows)
        self.finish: list[Optional[str]] = [None] * len(rows)
        self._prompt_seen = False

    # the streamer: generate calls put with the prompts first, then once per step
    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for index, token in enumerate(value.reshape(-1).tolist()):
            if self.finish[index] is not None:
                continue
            self.counts[index] += 1
            self.on_tokens(index, [token])
            if token in self.ends:
                self._finished(index, FINISH_STOP)
            elif self.counts[index] >= self.limits[index]:
                self._finished(index, FINISH_LENGTH)

    def _finished(self, index: int, reason: str) -> None:
        # Told at once, while the batch's longer rows go on: its client need not wait for them.
        self.finish[index] = reason
        if self.on_finished is not None:
            self.on_finished(index, RowResult(tokens=self.counts[index], finish_reason=reason))

    def end(self) -> None:
        for index, row in enumerate(self.rows):
            if self.finish[index] is None:
                self.finish[index] = FINISH_CANCELLED if row.cancel.is_set() else FINISH_LENGTH

    # the stopping criterion: called after each step, before that step's tokens reach put
    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids.shape[1] - self.width
        for index, row in enumerate(self.rows):
            if self.finish[index] is None and row.cancel.is_set():
                self.finish[index] = FINISH_CANCELLED  # put drops this step's token: nobody waits for it
        done = [finish is not None or generated >= limit for finish, limit in zip(self.finish, self.limits)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def results(self) -> list[RowResult]:
        return [RowResult(tokens=count, finish_reason=finish or FINISH_LENGTH)
                for count, finish in zip(self.counts, self.finish)]
