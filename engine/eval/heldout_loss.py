"""Held-out loss and perplexity: how surprised a candidate is by the reference answers, teacher-forced.

Each example's conversation (its prompt with the reference as the assistant's turn) is tokenised
exactly as training tokenises a row (``engine.data.examples.tokenize_conversation``: the same
template, the same masking of what is not learnt, the same truncation at max length), so the loss
here is the loss training would report on that row, and a run's last eval loss and this number
agree on its held-out rows.

A row that max length leaves nothing to learn is excluded, as training drops it, and counted. A row
with no reference answer has nothing to score: it is skipped and counted apart (a set without
references gets no loss at all; the runner does not ask for one).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from engine.core.checks import whole
from engine.core.choices import TRAIN_ON
from engine.data.examples import IGNORE_INDEX, TokenizedExample, tokenize_conversation
from engine.errors import StudioError

# A batch's logits are rows x tokens x vocabulary floats: on the starter (49,152 tokens) 8 rows of
# 2,048 tokens would be 3 GB. Long rows go in smaller batches so that a batch stays near this many
# tokens (8 rows of 512; a row longer than this runs alone).
TOKENS_PER_BATCH = 4096


@dataclass
class HeldoutLoss:
    """The loss of a set's reference answers under one candidate."""

    # Per example, aligned with the examples given: the mean loss of its answer's tokens (nats);
    # None for a row excluded, without a reference, or not reached before a stop.
    losses: list[Optional[float]] = field(default_factory=list)
    token_counts: list[int] = field(default_factory=list)  # tokens scored per example (0 where None)
    loss: Optional[float] = None  # the set's: token-weighted mean; None when no token was scored
    perplexity: Optional[float] = None  # exp(loss)
    tokens: int = 0  # answer tokens scored in all
    excluded: int = 0  # rows max length leaves nothing to learn (dropped, as training drops them)
    no_reference: int = 0  # rows with no reference answer to score
    stopped: bool = False  # the stop event ended it before every row was scored


def heldout_loss(session: Any, examples: list[Any], *, max_length: int, batch_size: int = 8,
                 train_on: str = "assistant", stop_event: Optional[threading.Event] = None,
                 on_done: Optional[Callable[[int], None]] = None) -> HeldoutLoss:
    """The teacher-forced loss of ``examples``' reference answers under the session's active choice.

    ``examples`` are ``engine.eval.evalset.EvalExample``s. Rows are run up to ``batch_size`` at a
    time (fewer when they are long: ``loss_batches``), padded on the right (the padding is masked
    and never attended to, so a row's loss does not depend on its batch). ``on_done(n)`` is called
    after each batch with how many examples are done (skipped ones included); once ``stop_event``
    is set, no further batch starts.
    """
    whole("max length", max_length, 1, 10**7)
    whole("batch size", batch_size, 1, 4096)
    if train_on not in TRAIN_ON:
        raise StudioError(f"train on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    result = HeldoutLoss(losses=[None] * len(examples), token_counts=[0] * len(examples))
    with session.forward_context() as model:
        # The active choice's template, as training rendered its rows (an adapter's saved one).
        template, _owner = session.chat_template()
        tokenized: dict[int, TokenizedExample] = {}
        for position, example in enumerate(examples):
            if example.reference is None:
                result.no_reference += 1
                continue
            row = tokenize_conversation(example.conversation, session.tokenizer, max_length,
                                        chat_template=template, train_on=train_on)
            if row is None or _scored(row.labels) == 0:
                result.excluded += 1  # nothing left to learn at this max length
                continue
            tokenized[position] = row
        done = len(examples) - len(tokenized)
        positions = list(tokenized)
        summed = 0.0
        for batch in loss_batches([len(tokenized[p].input_ids) for p in positions], batch_size):
            if stop_event is not None and stop_event.is_set():
                result.stopped = True
                break
            rows = [positions[index] for index in batch]
            for position, (loss_sum, tokens) in zip(rows, _batch_losses(model, [tokenized[p] for p in rows],
                                                                        session.device, _pad_id(session.tokenizer))):
                result.losses[position] = loss_sum / tokens
                result.token_counts[position] = tokens
                summed += loss_sum
                result.tokens += tokens
            done += len(rows)
            if on_done is not None:
                on_done(done)
        if not positions and on_done is not None:
            on_done(done)
    if result.tokens:
        # Token-weighted, as the Trainer's eval loss of one batch is (the sum of the token losses
        # over the tokens): the whole set as one batch. A mean of per-row means would weigh a
        # three-token answer like a three-hundred-token one.
        result.loss = summed / result.tokens
        result.perplexity = _exp(result.loss)
    return result


def loss_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """The indices of ``lengths`` in batches, longest first (like lengths together, little padding;
    a row too long for the device fails at once), of at most ``batch_size`` rows and, past one
    row, ``TOKENS_PER_BATCH`` tokens of padded width."""
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda index: (-lengths[index], index)):
        # Longest first: a batch's first row sets its width.
        if batches and len(batches[-1]) < batch_size and \
                (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= TOKENS_PER_BATCH:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def _batch_losses(model: Any, rows: list[TokenizedExample], device: Optional[str],
                  pad_id: int) -> list[tuple[float, int]]:
    """Each row's summed token loss and how many tokens it scored, from one forward pass."""
    import torch
    import torch.nn.functional as F

    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        # Right padding: each row keeps the positions it had alone, and a causal model's tokens
        # never look right, so the padding changes no row's logits.
        input_ids[index, :len(row.input_ids)] = torch.tensor(row.input_ids)
        labels[index, :len(row.labels)] = torch.tensor(row.labels)
        attention_mask[index, :len(row.input_ids)] = 1
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        # Prompt and P-tuning put their virtual tokens' logits first: the text's are the last ``width``.
        logits = logits[:, -width:]
        results = []
        for index in range(len(rows)):
            # As transformers' causal LM loss: position t predicts token t + 1, in float32.
            token_losses = F.cross_entropy(logits[index, :-1].float(), labels[index, 1:].to(logits.device),
                                           ignore_index=IGNORE_INDEX, reduction="sum")
            results.append((float(token_losses), _scored(rows[index].labels)))
    return results


def _scored(labels: list[int]) -> int:
    """How many tokens a row's loss counts: its learnt labels after the first position (the first
    token has nothing before it to be predicted from)."""
    return sum(label != IGNORE_INDEX for label in labels[1:])


def _pad_id(tokenizer: Any) -> int:
    """Any real token id serves (the padding is masked and its labels ignored): the pad token, else EOS."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


def _exp(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:  # a loss past ~709 nats: a model that is only wrong
        return math.inf
