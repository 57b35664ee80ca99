"""The judge: a model that compares the base's answer and a candidate's answer to the same prompt
with a fixed rubric, in both orders, and the candidate's wins, ties and losses with a 95% interval.

Small judges (the default judge is the evaluated base itself, the 135M starter on a first run)
seldom write a verdict that can be parsed, so the judge writes none: its prompt ends with the
verdict cue and the verdict is read from its next-token distribution, one forward pass per
comparison, in batches. Each comparison is made twice, each answer once in first place, because
language models favour a position; a preference that follows the position is not counted.

Where the judge runs is decided before it loads (``judge_session``): the evaluated base's own
session with its adapters off, another model beside it when the memory estimate says it fits,
or else in turn, once the evaluated model is closed.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from engine.chat.batches import length_batches
from engine.chat.room import room_to_load
from engine.chat.session import ChatSession
from engine.errors import StudioError
from engine.eval.evalset import EvalExample
from engine.eval.forward import last_logits

# The rubric the judge is given, word for word (the README quotes it).
RUBRIC = (
    "You are judging two answers, A and B, to the same question. Decide which answer is better.\n"
    "Judge them on:\n"
    "1. Correctness: facts, numbers, code and reasoning are right.\n"
    "2. Following the instruction: the answer does what was asked, in the form and length asked.\n"
    "3. Helpfulness: the answer is clear, relevant and complete, without padding.\n"
    "4. When a reference answer is given: the better answer agrees with its content and matches its style.\n"
    "Do not let the order of the answers or their length decide. If neither answer is better, the verdict is tie."
)
# The judge's prompt ends with this, in the judge's own reply; its next token is the verdict.
VERDICT_CUE = "Verdict:"
# The verdicts as the judge would write them after the cue (each read up to its first token of its
# own, ``VerdictReader``).
VERDICT_OPTIONS = {"A": " A", "B": " B", "tie": " tie"}
# Log-probabilities of A and B (in nats) closer than this are a tie: a judge whose preference
# is a coin flip (A at 52% against B at 48% is 0.08 nats apart) has not preferred either.
TIE_MARGIN = 0.1
# z for a two-sided 95% interval.
Z_95 = 1.959963984540054

WIN, TIE, LOSS = "win", "tie", "loss"


@dataclass(frozen=True)
class Judgement:
    """One comparison of the candidate's answer with the base's, as the candidate's result
    (win, tie or loss) in each order and combined."""

    base_first: str  # the candidate's result when the base's answer was shown first (as A)
    candidate_first: str  # and when the candidate's answer was shown first

    @property
    def verdict(self) -> str:
        return combine_orders(self.base_first, self.candidate_first)


def combine_orders(base_first: str, candidate_first: str) -> str:
    """The candidate's result over both orders: a win when it wins both, or wins one and ties the
    other; a loss the same way round; anything else is a tie.

    A win in one order and a loss in the other means the judge preferred whichever answer stood
    in one place, not either answer: that is position bias, and it counts for neither side.
    """
    results = {base_first, candidate_first}
    if results <= {WIN, TIE} and WIN in results:
        return WIN
    if results <= {LOSS, TIE} and LOSS in results:
        return LOSS
    return TIE


def verdict_from_logprobs(a: float, b: float, tie: float, margin: float = TIE_MARGIN) -> str:
    """"A", "B" or "tie" from the log-probabilities of the verdict options' first tokens: the tie
    when the tie option is the likeliest, or when A and B are within ``margin`` of each other."""
    if tie >= max(a, b) or abs(a - b) <= margin:
        return "tie"
    return "A" if a > b else "B"


@dataclass(frozen=True)
class VerdictReader:
    """Reads the verdict options' log-probabilities from one forward pass over the judge's prompt.

    Each option is read as the tokenizer encodes it after the cue, in context: " A" is one token
    in most vocabularies ("ĠA", or SentencePiece's "▁A"), but some split off the space ("Ġ",
    "A"). The prompt is extended by the tokens the options share (``lead_in``: the split-off
    space), and each option's log-probability is that of its tokens up to its first own one
    (``paths``), all read from the one pass: the distributions at the prompt's last positions.
    """

    lead_in: tuple[int, ...]  # appended to the prompt after the cue
    paths: dict[str, tuple[int, ...]]  # each option's tokens after the cue, up to its first own token

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "VerdictReader":
        """StudioError when the tokenizer merges an option into the cue or cannot tell two apart."""
        cue = tokenizer(VERDICT_CUE, add_special_tokens=False)["input_ids"]
        encoded = {option: tokenizer(VERDICT_CUE + text, add_special_tokens=False)["input_ids"]
                   for option, text in VERDICT_OPTIONS.items()}
        if any(ids[:len(cue)] != cue or len(ids) == len(cue) for ids in encoded.values()):
            raise StudioError("the judge's tokenizer merges a verdict into the words before it: choose another judge")
        after = {option: ids[len(cue):] for option, ids in encoded.items()}
        lead_in = max((_shared_start(first, second) for first in after.values() for second in after.values()
                       if first is not second), key=len)
        paths = {option: tuple(ids[:_shared_length(ids, lead_in) + 1]) for option, ids in after.items()}
        # Options whose paths begin one another (" A" and " AB") would share probability.
        if any(first is not second and second[:len(first)] == first
               for first in paths.values() for second in paths.values()):
            raise StudioError("the judge's tokenizer cannot tell the verdicts A, B and tie apart: choose another judge")
        return cls(tuple(lead_in), paths)

    @property
    def positions(self) -> int:
        """How many of the prompt's last positions the reading needs."""
        return len(self.lead_in) + 1

    def read(self, logprobs) -> dict[str, float]:
        """Each option's log-probability from the log-softmax of the last ``positions`` positions."""
        return {option: sum(float(logprobs[position, token]) for position, token in enumerate(path))
                for option, path in self.paths.items()}


def _shared_start(first: list[int], second: list[int]) -> list[int]:
    """The tokens two encodings begin with, short of the last token of either (an option's own)."""
    return first[:min(_shared_length(first, second), len(first) - 1, len(second) - 1)]


def _shared_length(ids: list[int], prefix: list[int]) -> int:
    length = 0
    while length < min(len(ids), len(prefix)) and ids[length] == prefix[length]:
        length += 1
    return length


def judge_prompt(example: EvalExample, first: str, second: str) -> list[dict]:
    """The judge's conversation for one order: the rubric, the question, the reference answer
    when there is one, and the two answers as A and B."""
    parts = [RUBRIC, "", "[Question]", _question_text(example.prompt)]
    if example.reference is not None:
        parts += ["", "[Reference answer]", example.reference]
    parts += ["", "[Answer A]", first, "", "[Answer B]", second, "",
              "Which answer is better? Reply with one word: A, B or tie."]
    return [{"role": "user", "content": "\n".join(parts)}]


def _question_text(prompt: list[dict]) -> str:
    """A one-message prompt as its text; a longer conversation with each turn's role named."""
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{message['role'].capitalize()}: {message['content']}" for message in prompt)


def judge_answers(
    judge: ChatSession,
    examples: Sequence[EvalExample],
    base_answers: Sequence[str],
    candidate_answers: Sequence[str],
    *,
    batch_size: int = 8,
    stop_event: Optional[threading.Event] = None,
    on_done: Optional[Callable[[int], None]] = None,
) -> list[Optional[Judgement]]:
    """The judge's comparison of each candidate answer with the base's answer to the same example.

    The judge answers as its base model (no adapter: an adapter under evaluation must not judge
    itself); the adapter active before is active again afterwards. ``on_done(n)`` is called with
    how many comparisons (two per example) are done; once ``stop_event`` is set no further batch
    starts, and the examples not judged in both orders get None.
    """
    if not len(examples) == len(base_answers) == len(candidate_answers):
        raise StudioError("the judge needs one base answer and one candidate answer per example")
    before = judge.adapter
    judge.set_adapter(None)
    try:
        tokenizer = judge.tokenizer
        reader = VerdictReader.for_tokenizer(tokenizer)
        context = getattr(judge.base_model.config, "max_position_embeddings", None)
        # Row 2i shows the base's answer first, row 2i+1 the candidate's.
        rows = []
        for example, base, candidate in zip(examples, base_answers, candidate_answers):
            for first, second in ((base, candidate), (candidate, base)):
                text = judge.render_prompt(judge_prompt(example, first, second)) + VERDICT_CUE
                ids = tokenizer(text, add_special_tokens=False)["input_ids"] + list(reader.lead_in)
                if context and len(ids) > context:
                    raise StudioError(f"example {example.index + 1} ({example.where}) makes a judge's prompt of "
                                      f"{len(ids)} tokens; the judge reads at most {context}: lower the max new "
                                      "tokens or judge with a model of a longer context")
                rows.append(ids)
        verdicts: list[Optional[str]] = [None] * len(rows)
        done = 0
        for batch in length_batches([len(row) for row in rows], batch_size):
            if stop_event is not None and stop_event.is_set():
                break
            logprobs = last_logits(judge, [rows[i] for i in batch], reader.positions).double().log_softmax(-1)
            for index, row in zip(batch, logprobs):
                read = reader.read(row)
                verdicts[index] = verdict_from_logprobs(read["A"], read["B"], read["tie"])
            done += len(batch)
            if on_done is not None:
                on_done(done)
    finally:
        judge.set_adapter(before)
    base_as_a = {"A": LOSS, "B": WIN, "tie": TIE}  # the base's answer is A: an A verdict is the candidate's loss
    candidate_as_a = {"A": WIN, "B": LOSS, "tie": TIE}
    return [Judgement(base_as_a[verdicts[2 * i]], candidate_as_a[verdicts[2 * i + 1]])
            if verdicts[2 * i] is not None and verdicts[2 * i + 1] is not None else None
            for i in range(len(examples))]


# the score ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgeScore:
    """A candidate's results against the base over the examples judged in both orders."""

    wins: int
    ties: int
    losses: int

    @property
    def comparisons(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> Optional[float]:
        """The share of comparisons won, a tie counting as half a win; None with none judged."""
        if not self.comparisons:
            return None
        return (self.wins + self.ties / 2) / self.comparisons

    def interval(self) -> tuple[Optional[float], Optional[float]]:
        """The 95% Wilson score interval of the win rate (ties as half a win).

        Wilson's rather than a bootstrap over the examples: evaluation sets are often small,
        and a candidate that won all 12 comparisons gets a bootstrap interval of [1, 1], which
        claims a certainty 12 examples cannot give; Wilson's stays honest there and needs no
        random draws. Counting a tie as half a success makes it a little wide (a tie varies less
        than a coin flip), the safe side for a claim that an adapter is better.
        """
        if not self.comparisons:
            return None, None
        return wilson_interval(self.wins + self.ties / 2, self.comparisons)

    def describe(self, judge: str) -> dict:
        """The candidate's "judge" entry in the results document."""
        low, high = self.interval()
        return {"wins": self.wins, "ties": self.ties, "losses": self.losses, "comparisons": self.comparisons,
                "win_rate": self.win_rate, "low": low, "high": high, "judge": judge}


def judge_score(judgements: Sequence[Optional[Judgement]]) -> JudgeScore:
    """Wins, ties and losses over the judged examples (None, not judged, is left out)."""
    verdicts = [judgement.verdict for judgement in judgements if judgement is not None]
    return JudgeScore(verdicts.count(WIN), verdicts.count(TIE), verdicts.count(LOSS))


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / trials``."""
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


# where the judge runs ----------------------------------------------------------------------------
REUSE, BESIDE, IN_TURN = "reuse", "beside", "in turn"


@dataclass
class JudgeSeat:
    """The session the judge answers on, and how it got there."""

    session: ChatSession
    placement: str  # REUSE, BESIDE or IN_TURN
    reason: str  # one line for the progress log

    def release(self) -> None:
        """Close the judge's own model (a reused session stays open for its owner)."""
        if self.placement != REUSE:
            self.session.close()


def check_judge(judge_ref: str) -> Path:
    """The judge model's folder; StudioError (one line) when it is not in the store, before anything
    loads (an evaluation checks its judge first, not after an hour of generating)."""
    from engine.models.store import resolve_model

    return resolve_model(judge_ref)


def judge_placement(judge_path: Path, current: ChatSession, free_bytes: Optional[int] = None) -> tuple[str, str]:
    """Where the judge runs, and why: on ``current`` (loaded) when it is the same model, beside it
    when the memory estimate says the judge fits in what is free with ``current`` loaded (measured
    unless ``free_bytes`` is given), else in turn."""
    from engine.models.store import model_fingerprint

    current.load()
    # The same weights in another folder (a copy, a store entry of the same download) are the same judge.
    if Path(judge_path).resolve() == current.model_path.resolve() or \
            model_fingerprint(judge_path) == model_fingerprint(current.model_path):
        return REUSE, f"the judge is {current.model} itself: it judges with the adapters off"
    try:
        room = room_to_load(judge_path, current.device, free_bytes)
    except StudioError:
        # A config the size cannot be read from: loading in turn is the choice that cannot run out.
        return IN_TURN, f"the size of {Path(judge_path).name} is unknown: it is loaded once {current.model} is closed"
    if room.fits:
        return BESIDE, f"{room.describe()}: the judge is loaded beside {current.model}"
    return IN_TURN, f"{room.describe()}: the judge is loaded once {current.model} is closed"


def judge_session(judge_ref: str, current: ChatSession, *, free_bytes: Optional[int] = None) -> JudgeSeat:
    """The session to judge on, loaded: ``current`` itself for the same model, else a new session of
    the judge model on ``current``'s device, beside it or (closing ``current`` first) in turn.

    Call it once every candidate has answered; after an in-turn judge, ``current.load()`` brings the
    evaluated model back. StudioError for a judge that is not in the store, before anything loads.
    """
    path = check_judge(judge_ref)
    placement, reason = judge_placement(path, current, free_bytes)
    if placement == REUSE:
        return JudgeSeat(current, placement, reason)
    device, threads = current.device, current.threads
    if placement == IN_TURN:
        current.close()
    judge = ChatSession(judge_ref, device=device, threads=threads)
    judge.load()
    return JudgeSeat(judge, placement, reason)
