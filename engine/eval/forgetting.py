"""The forgetting check: what a candidate costs away from its training data.

On general prompts that have nothing to do with what was trained (facts, arithmetic, short
writing, advice, code, definitions: ``resources/eval/general_prompts.jsonl``), the base model
answers greedily once. Each candidate is then measured against those answers two ways:

- drift: the mean per-token KL divergence KL(base ‖ candidate) between the two models'
  next-token distributions, both reading the prompt and the base's answer (teacher forcing),
  over the answer's positions and the one after it (where the base ends its turn). 0 means the
  candidate predicts exactly as the base does there; it is in nats per token.
- changed: the share of prompts whose greedy answer from the candidate differs from the base's.

Each model reads the prompt through its own chat template (an adapter's saved one, if any), as
it would in a chat: the drift is what a user chatting with the candidate would meet.

The base's answers are generated once (``ForgettingBaseline.compute``) and reused for every
candidate; the base's distributions are recomputed batch by batch beside the candidate's, so no
more than one batch of full-vocabulary distributions is ever held.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from engine.chat.batches import length_batches
from engine.chat.blends import AdapterChoice
from engine.chat.session import ChatSession
from engine.errors import StudioError
from engine.eval.forward import last_logits
from engine.paths import RESOURCES

GENERAL_PROMPTS = RESOURCES / "eval" / "general_prompts.jsonl"
# Long enough for the answer's first sentence or two, where a drift shows first; short enough
# that checking a candidate on 100 prompts takes a minute on a CPU with the starter model.
DEFAULT_MAX_NEW_TOKENS = 48


def load_general_prompts(path: Path = GENERAL_PROMPTS) -> list[list[dict]]:
    """The conversations of a JSON-lines file of ``{"messages": [...]}`` objects, in order."""
    prompts = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
        except (ValueError, KeyError, TypeError):
            raise StudioError(f"{path} line {number} is not a JSON object with \"messages\"") from None
        if not (isinstance(messages, list) and messages and all(
                isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str) for message in messages)):
            raise StudioError(f"{path} line {number}: every message needs a text 'role' and 'content'")
        prompts.append(messages)
    if not prompts:
        raise StudioError(f"{path} has no prompts")
    return prompts


@dataclass(frozen=True)
class ForgettingScore:
    """How far a candidate drifted from the base on the general prompts."""

    kl: float  # mean KL(base ‖ candidate) per answer position, in nats
    changed: float  # share of prompts whose greedy answer changed
    prompts: int
    tokens: int  # the answer positions the KL is the mean of

    def describe(self) -> dict:
        """The candidate's "forgetting" entry in the results document."""
        return {"kl": self.kl, "changed": self.changed, "prompts": self.prompts}


@dataclass
class ForgettingBaseline:
    """The base's greedy answers to the general prompts, computed once, that candidates are
    checked against (``check``), one after another, on the same loaded base."""

    session: ChatSession  # the base model's session; it answers with the adapters off
    prompts: list[list[dict]]
    answers: list[str]  # the base's greedy answers
    prompt_ids: list[list[int]]  # each prompt as the base reads it, up to where its answer starts
    answer_ids: list[list[int]]  # each answer's tokens
    max_new_tokens: int
    batch_size: int

    @classmethod
    def compute(cls, session: ChatSession, prompts: Optional[Sequence[list[dict]]] = None, *,
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 8,
                stop_event: Optional[threading.Event] = None,
                on_done: Optional[Callable[[int], None]] = None) -> Optional["ForgettingBaseline"]:
        """The base's answers to ``prompts`` (the general prompts unless given); None when
        ``stop_event`` was set before they were all answered. ``on_done(n)``: n prompts answered."""
        prompts = list(load_general_prompts() if prompts is None else prompts)
        if not prompts:
            raise StudioError("the forgetting check needs at least one prompt")
        before = session.adapter
        session.set_adapter(None)
        try:
            replies = session.generate_batch(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                             stop_event=stop_event, on_done=on_done)
            if any(reply is None for reply in replies):
                return None
            tokenizer = session.tokenizer
            prompt_ids = [_ids(tokenizer, session.render_prompt(messages)) for messages in prompts]
        finally:
            session.set_adapter(before)
        answers = [reply.reply for reply in replies]
        # The answer's text read back into tokens: what the candidate is made to read, whoever wrote it.
        answer_ids = [_ids(tokenizer, answer) for answer in answers]
        return cls(session, prompts, answers, prompt_ids, answer_ids, max_new_tokens, batch_size)

    def check(self, candidate: AdapterChoice, *, session: Optional[ChatSession] = None,
              stop_event: Optional[threading.Event] = None,
              on_done: Optional[Callable[[int], None]] = None) -> Optional[ForgettingScore]:
        """The drift and the changed answers of ``candidate``, the adapter choice that answers: on
        the base's own session (an adapter, a combination), or, given ``session`` (another model's
        session), that session's choice, None for that model itself.

        ``on_done(n)`` counts steps out of twice the prompts (each is answered, then compared);
        None when ``stop_event`` was set before the end. The adapters active before are active again.
        """
        other = session if session is not None and session is not self.session else None
        if other is not None:
            _check_same_vocabulary(self.session, other)
        candidate_session = other or self.session
        base_before, candidate_before = self.session.adapter, candidate_session.adapter
        try:
            candidate_session.set_adapter(candidate)
            replies = candidate_session.generate_batch(self.prompts, max_new_tokens=self.max_new_tokens,
                                                       batch_size=self.batch_size, stop_event=stop_event,
                                                       on_done=on_done)
            if any(reply is None for reply in replies):
                return None
            changed = sum(reply.reply != answer for reply, answer in zip(replies, self.answers))
            tokenizer = candidate_session.tokenizer
            candidate_prompt_ids = [_ids(tokenizer, candidate_session.render_prompt(messages))
                                    for messages in self.prompts]
            total, positions, compared = 0.0, 0, 0
            lengths = [len(prompt) + len(answer) for prompt, answer in zip(self.prompt_ids, self.answer_ids)]
            for batch in length_batches(lengths, self.batch_size):
                if stop_event is not None and stop_event.is_set():
                    return None
                answers = [self.answer_ids[i] for i in batch]
                keep = max(len(answer) for answer in answers) + 1
                self.session.set_adapter(None)
                base = last_logits(self.session, [self.prompt_ids[i] + self.answer_ids[i] for i in batch], keep)
                candidate_session.set_adapter(candidate)
                tuned = last_logits(candidate_session, [candidate_prompt_ids[i] + self.answer_ids[i] for i in batch],
                                    keep)
                if base.shape[-1] != tuned.shape[-1]:
                    raise StudioError(f"the candidate's vocabulary has {tuned.shape[-1]} tokens, the base's "
                                      f"{base.shape[-1]}: their next-token distributions cannot be compared")
                for row, answer in enumerate(answers):
                    # The positions that read the whole prompt: each predicts an answer token, the last
                    # one what follows the answer.
                    span = len(answer) + 1
                    total += float(kl_divergence(base[row, -span:], tuned[row, -span:]).sum())
                    positions += span
                compared += len(batch)
                if on_done is not None:
                    on_done(len(self.prompts) + compared)
        finally:
            self.session.set_adapter(base_before)
            candidate_session.set_adapter(candidate_before)
        return ForgettingScore(total / positions, changed / len(self.prompts), len(self.prompts), positions)


def kl_divergence(base_logits, candidate_logits):
    """KL(base ‖ candidate) at each position, from the two models' logits [positions, vocabulary],
    in float64: the log-softmax of a 50,000-token vocabulary loses the small differences in float32."""
    base = base_logits.double().log_softmax(-1)
    candidate = candidate_logits.double().log_softmax(-1)
    return (base.exp() * (base - candidate)).sum(-1)


def forgetting_check(base_session: ChatSession, candidate: AdapterChoice,
                     prompts: Optional[Sequence[list[dict]]] = None, *,
                     candidate_session: Optional[ChatSession] = None,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 8,
                     stop_event: Optional[threading.Event] = None) -> Optional[ForgettingScore]:
    """One candidate's forgetting check; for several, compute the baseline once and ``check`` each."""
    baseline = ForgettingBaseline.compute(base_session, prompts, max_new_tokens=max_new_tokens,
                                          batch_size=batch_size, stop_event=stop_event)
    if baseline is None:
        return None
    return baseline.check(candidate, session=candidate_session, stop_event=stop_event)


def _ids(tokenizer, text: str) -> list[int]:
    # The chat template writes its own special tokens (BOS included), as in training and chat.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _check_same_vocabulary(base: ChatSession, other: ChatSession) -> None:
    base.load()
    other.load()
    if base.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        raise StudioError(f"{other.model} has another vocabulary than {base.model}: the forgetting check compares "
                          "next-token distributions over one vocabulary")
