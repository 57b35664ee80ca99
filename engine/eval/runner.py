"""Running an evaluation: every candidate answers every prompt of the set, and is scored on its
answers (``engine.eval.scoring``), on the reference answers' held-out loss
(``engine.eval.heldout_loss``), on how far it drifted from the base on general prompts
(``engine.eval.forgetting``) and by a judge against the base (``engine.eval.judge``). What comes
out is the results document (``engine.eval.results`` stores it, the report and the Evaluate page
read it).

One base model is loaded once and each adapter is swapped in place over it
(``engine.chat.session``); replies come in batches (``ChatSession.generate_batch``). A candidate
that is another model (a merged adapter, a full fine-tune) answers from a session of its own,
loaded beside the base when the memory estimate says both fit, else once the base is closed (its
forgetting check, which needs both at once, is then not measured, and a note says so).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from engine.chat.room import room_to_load
from engine.chat.session import ChatSession
from engine.errors import StudioError
from engine.eval.candidates import Candidate
from engine.eval.evalset import EvalSet
from engine.eval.forgetting import DEFAULT_MAX_NEW_TOKENS as FORGETTING_NEW_TOKENS
from engine.eval.forgetting import ForgettingBaseline, load_general_prompts
from engine.eval.heldout_loss import heldout_loss
from engine.eval.judge import judge_answers, judge_score, judge_session
from engine.eval.scoring import MODEL_METRICS, ScorePlan, example_scores, plan_scores, set_scores

VERSION = 1
# Replies per batch. On the starter on two CPU cores (bench/eval_speed.py), 8 rows gave 3.5 times the
# examples/s of one reply at a time, 16 rows 4.4 and 32 rows 4.8, each batch holding more memory.
DEFAULT_BATCH_SIZE = 8
# Held-out loss of a dataset's rows (a run's own held-out rows use the run's max length).
DEFAULT_MAX_LENGTH = 2048
SPEED_PROMPT = [{"role": "user", "content": "Tell me about the history of the printing press."}]
SPEED_TOKENS = 32

ProgressFn = Callable[[int, int, str], None]


class EvalStopped(StudioError):
    """The user stopped the evaluation; nothing it computed is kept."""


@dataclass
class EvalSettings:
    metrics: Optional[list[str]] = None  # None: scoring.DEFAULT_METRICS (and accuracy where labels exist)
    max_new_tokens: int = 128
    batch_size: int = DEFAULT_BATCH_SIZE
    answer_regex: Optional[str] = None
    label_column: Optional[str] = None  # recorded with the results; the set carries the labels
    judge: bool = True  # compare each candidate's answers with the base's
    judge_model: Optional[str] = None  # the judge; None: the evaluated base model itself
    forgetting: bool = True  # the drift on general prompts (engine/resources/eval/general_prompts.jsonl)
    forgetting_prompts: Optional[int] = None  # the first N general prompts; None: all
    max_length: int = DEFAULT_MAX_LENGTH
    measure_speed: bool = True  # chat tokens/s with each adapter and without (as merged)
    device: str = "auto"
    threads: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self, model: str) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
                "answer_regex": self.answer_regex, "label_column": self.label_column,
                "judge": (self.judge_model or model) if self.judge else None, "forgetting": self.forgetting,
                **self.extra}


class _Tracker:
    """Counts work done against the whole evaluation's, for a progress bar with an ETA, and ends
    the evaluation once the stop event is set."""

    def __init__(self, progress: Optional[ProgressFn], stop_event: Optional[threading.Event]) -> None:
        self.total, self.done = 0, 0
        self.stop_event = stop_event
        self._progress = progress

    def begin(self, message: str) -> Callable[[int], None]:
        """A callback for a step that reports how many of its units are done."""
        self.check_stop()
        base = self.done

        def step_done(units: int) -> None:
            self.done = base + units
            self.report(message)
        self.report(message)
        return step_done

    def report(self, message: str) -> None:
        if self._progress is not None:
            self._progress(self.done, self.total, message)

    def check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            raise EvalStopped("evaluation stopped: nothing was saved")


@dataclass
class _Run:
    """One evaluation in progress: what it asked for and what it has found so far."""

    model: str
    candidates: list[Candidate]
    evalset: EvalSet
    settings: EvalSettings
    plan: ScorePlan
    tracker: _Tracker
    answers: dict[str, list[Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[str, list[Optional[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    forgetting: Optional[ForgettingBaseline] = None

    @property
    def prompts(self) -> list[list[dict]]:
        return [example.prompt for example in self.evalset.examples]

    @property
    def scores_loss(self) -> bool:
        return any(name in MODEL_METRICS for name in self.plan.metrics)

    @property
    def judged(self) -> list[Candidate]:
        """The candidates the judge compares with the base: all but the base, when the base is one."""
        if not self.settings.judge or not any(candidate.is_base for candidate in self.candidates):
            return []
        return [candidate for candidate in self.candidates if not candidate.is_base]


def evaluate(model: str, candidates: list[Candidate], evalset: EvalSet, settings: Optional[EvalSettings] = None,
             *, progress: Optional[ProgressFn] = None, stop_event: Optional[threading.Event] = None) -> dict[str, Any]:
    """The results document of ``candidates`` on ``evalset`` over base ``model``.

    ``progress(done, total, message)`` reports as it goes; setting ``stop_event`` ends it with
    ``EvalStopped`` within a batch.
    """
    settings = settings or EvalSettings()
    run = _Run(model, candidates, evalset, settings, plan_scores(evalset, settings.metrics, settings.answer_regex),
               _Tracker(progress, stop_event))
    run.notes.extend(run.plan.notes)
    if settings.judge and not any(candidate.is_base for candidate in candidates):
        run.notes.append("the judge compares each candidate with the base model: include the base to judge")
    general = _general_prompts(settings) if settings.forgetting else []
    run.tracker.total = _work(run, len(general))
    started = time.perf_counter()
    session = _session(model, settings)
    try:
        fingerprint = _fingerprint(session)
        tokenizer = session.tokenizer
        _on_base(run, session, general)
        _other_models(run, session)
        _judge(run, session)
    finally:
        session.close()
    document = {
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model, "model_fingerprint": fingerprint,
        "set": evalset.describe(), "metrics": run.plan.metrics, "notes": run.notes,
        "settings": settings.describe(model),
        "candidates": [], "examples": [],
        "seconds": round(time.perf_counter() - started, 2),
    }
    _score(document, run, tokenizer)
    return document


def _work(run: _Run, general_prompts: int) -> int:
    """The units of work of the whole evaluation: answers, loss rows, forgetting steps, judgements."""
    examples = len(run.evalset.examples)
    per_candidate = examples * (2 if run.scores_loss else 1)
    drifting = [candidate for candidate in run.candidates if not candidate.is_base]
    forgetting = general_prompts * (1 + 2 * len(drifting)) if general_prompts and drifting else 0
    return len(run.candidates) * per_candidate + forgetting + 2 * examples * len(run.judged)


def _general_prompts(settings: EvalSettings) -> list[list[dict]]:
    prompts = load_general_prompts()
    return prompts[:settings.forgetting_prompts] if settings.forgetting_prompts else prompts


def _session(model: str, settings: EvalSettings) -> ChatSession:
    session = ChatSession(model, device=settings.device, threads=settings.threads)
    session.load()
    return session


def _fingerprint(session: ChatSession) -> Optional[str]:
    from engine.models.store import model_fingerprint

    return model_fingerprint(session.model_path) if session.model_path else None


def _on_base(run: _Run, session: ChatSession, general: list[list[dict]]) -> None:
    """The base and every adapter on it: answers, loss, forgetting; then chat speed."""
    on_base = [candidate for candidate in run.candidates if candidate.model is None]
    if general and any(not candidate.is_base for candidate in run.candidates):
        run.forgetting = ForgettingBaseline.compute(
            session, general, max_new_tokens=FORGETTING_NEW_TOKENS, batch_size=run.settings.batch_size,
            stop_event=run.tracker.stop_event, on_done=run.tracker.begin("base: answering the general prompts"))
        run.tracker.check_stop()
    for candidate in on_base:
        session.set_adapter(candidate.choice)
        _answer(run, session, candidate)
        if run.forgetting is not None and not candidate.is_base:
            _drift(run, candidate, candidate.choice, None)
    if run.settings.measure_speed:
        _measure_speed(session, on_base, run.results)


def _other_models(run: _Run, base: ChatSession) -> None:
    """Each candidate that is a model of its own: beside the base when both fit, else in turn."""
    for candidate in run.candidates:
        if candidate.model is None:
            continue
        other = ChatSession(candidate.model, device=run.settings.device, threads=run.settings.threads)
        beside = base.loaded and _fits_beside(other, base)
        if not beside:
            base.close()
        try:
            other.load()
            _answer(run, other, candidate)
            if run.forgetting is not None:
                if beside:
                    _drift(run, candidate, None, other)
                else:
                    run.notes.append(f"{candidate.label}: no forgetting check, which needs it and the base in "
                                     "memory at once, and they do not fit together")
        finally:
            other.close()


def _fits_beside(other: ChatSession, base: ChatSession) -> bool:
    from engine.models.store import resolve_model

    try:
        return room_to_load(resolve_model(other.model), base.device).fits
    except StudioError:
        return False  # a size that cannot be read: loading in turn is what cannot run out


def _answer(run: _Run, session: ChatSession, candidate: Candidate) -> None:
    """The candidate's replies to every prompt, how long they took, and its held-out loss."""
    began = time.perf_counter()
    replies = session.generate_batch(run.prompts, max_new_tokens=run.settings.max_new_tokens,
                                     batch_size=run.settings.batch_size, stop_event=run.tracker.stop_event,
                                     on_done=run.tracker.begin(f"{candidate.label}: answering"))
    run.tracker.check_stop()
    seconds = time.perf_counter() - began
    run.answers[candidate.label] = replies
    result = run.results[candidate.label] = {**candidate.describe(), "generation": {
        "seconds": round(seconds, 2), "answer_tokens": sum(reply.tokens for reply in replies),
        "examples_per_s": round(len(replies) / seconds, 3) if seconds > 0 else None}}
    if run.scores_loss:
        loss = heldout_loss(session, run.evalset.examples,
                            max_length=run.evalset.max_length or run.settings.max_length,
                            train_on=run.evalset.train_on or "assistant", batch_size=run.settings.batch_size,
                            stop_event=run.tracker.stop_event,
                            on_done=run.tracker.begin(f"{candidate.label}: held-out loss"))
        run.tracker.check_stop()
        result["loss"] = loss


def _drift(run: _Run, candidate: Candidate, choice: Any, other: Optional[ChatSession]) -> None:
    score = run.forgetting.check(choice, session=other, stop_event=run.tracker.stop_event,
                                 on_done=run.tracker.begin(f"{candidate.label}: forgetting check"))
    run.tracker.check_stop()
    run.results[candidate.label]["forgetting"] = score.describe()


def _judge(run: _Run, session: ChatSession) -> None:
    """The judge's verdicts on each candidate's answers against the base's, in both orders."""
    if not run.judged:
        return
    seat = judge_session(run.settings.judge_model or run.model, session)
    try:
        base = next(candidate for candidate in run.candidates if candidate.is_base)
        base_answers = [reply.reply for reply in run.answers[base.label]]
        for candidate in run.judged:
            judgements = judge_answers(seat.session, run.evalset.examples, base_answers,
                                       [reply.reply for reply in run.answers[candidate.label]],
                                       batch_size=run.settings.batch_size, stop_event=run.tracker.stop_event,
                                       on_done=run.tracker.begin(f"{candidate.label}: judging against the base"))
            run.tracker.check_stop()
            run.verdicts[candidate.label] = [None if j is None else j.verdict for j in judgements]
            run.results[candidate.label]["judge"] = judge_score(judgements).describe(seat.session.model)
    finally:
        seat.release()


def _measure_speed(session: ChatSession, candidates: list[Candidate], results: dict[str, dict[str, Any]]) -> None:
    """Chat tokens/s on one prompt with each adapter applied on the fly, and without it.

    Merging an adapter gives a model of the base's shape, so it decodes at the base's speed: the
    base's rate is the merged rate, measured without merging in place (undoing a merge leaves float
    rounding in the base's weights, which would change every later answer).
    """
    session.set_adapter(None)
    session.generate(SPEED_PROMPT, max_new_tokens=4)  # the first call pays one-off costs
    merged = session.generate(SPEED_PROMPT, max_new_tokens=SPEED_TOKENS).tokens_per_second
    for candidate in candidates:
        if candidate.is_base:
            results[candidate.label]["speed"] = {"tokens_per_s": round(merged, 2)}
            continue
        session.set_adapter(candidate.choice)
        rate = session.generate(SPEED_PROMPT, max_new_tokens=SPEED_TOKENS).tokens_per_second
        results[candidate.label]["speed"] = {"adapter_tokens_per_s": round(rate, 2),
                                             "merged_tokens_per_s": round(merged, 2)}


def _score(document: dict[str, Any], run: _Run, tokenizer: Any) -> None:
    """Fill the document's candidates (their set scores) and examples (each answer and its scores)."""
    examples = [{"index": example.index, "where": example.where, "prompt": example.prompt,
                 "reference": example.reference, "label": example.label, "answers": {}}
                for example in run.evalset.examples]
    for candidate in run.candidates:
        result = dict(run.results[candidate.label])
        loss = result.pop("loss", None)
        texts = [reply.reply for reply in run.answers[candidate.label]]
        per_example = [example_scores(run.plan, example, text, tokenizer)
                       for example, text in zip(run.evalset.examples, texts)]
        verdicts = run.verdicts.get(candidate.label)
        for position, (entry, text, scores) in enumerate(zip(examples, texts, per_example)):
            if loss is not None and loss.losses[position] is not None:
                scores["loss"] = loss.losses[position]
            entry["answers"][candidate.label] = {"text": text, "scores": scores,
                                                 "judge": verdicts[position] if verdicts else None}
        scores, signatures = set_scores(run.plan, run.evalset.examples, texts, per_example)
        if loss is not None and loss.loss is not None:
            scores.update({name: value for name, value in (("loss", loss.loss), ("perplexity", loss.perplexity))
                           if name in run.plan.metrics})
        document["candidates"].append({"judge": None, "forgetting": None, **result, "scores": scores,
                                       "signatures": signatures})
    document["examples"] = examples
