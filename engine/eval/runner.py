"""Running an evaluation: every candidate answers every prompt of the set, and the answers are
scored; the results document (the brief's schema: ``engine.eval.results`` stores it, the report
and the Evaluate page read it) is what comes out.

One base model is loaded once and each adapter is swapped in place over it
(``engine.chat.session``); replies come in batches (``ChatSession.generate_batch``). A candidate
that is another model (a merged adapter, a full fine-tune) answers from a session of its own,
loaded after the base's is closed, so that two models never need the memory at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from engine.chat.session import ChatSession
from engine.errors import StudioError
from engine.eval.candidates import Candidate
from engine.eval.evalset import EvalSet
from engine.eval.scoring import ScorePlan, example_scores, plan_scores, set_scores

VERSION = 1
# Replies per batch on a CPU: past 8 the starter model gains little and holds more memory (bench/eval_speed.py).
DEFAULT_BATCH_SIZE = 8
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
    measure_speed: bool = True  # chat tokens/s with each adapter and without (as merged)
    device: str = "auto"
    threads: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
                "answer_regex": self.answer_regex, "label_column": self.label_column, **self.extra}


class _Tracker:
    """Counts work done against the whole evaluation's, for a progress bar with an ETA."""

    def __init__(self, total: int, progress: Optional[ProgressFn], stop_event: Optional[threading.Event]) -> None:
        self.total, self.done = total, 0
        self._progress, self._stop = progress, stop_event
        self._base = 0

    def begin(self, message: str) -> Callable[[int], None]:
        """A callback for a step that reports how many of its units are done."""
        base = self.done
        self.report(message)

        def step_done(units: int) -> None:
            self.done = base + units
            self.report(message)
        return step_done

    def report(self, message: str) -> None:
        if self._progress is not None:
            self._progress(self.done, self.total, message)

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise EvalStopped("evaluation stopped: nothing was saved")


def evaluate(model: str, candidates: list[Candidate], evalset: EvalSet, settings: Optional[EvalSettings] = None,
             *, progress: Optional[ProgressFn] = None, stop_event: Optional[threading.Event] = None) -> dict[str, Any]:
    """The results document of ``candidates`` on ``evalset`` over base ``model``.

    ``progress(done, total, message)`` reports as it goes; setting ``stop_event`` ends it with
    ``EvalStopped`` after the current batch.
    """
    settings = settings or EvalSettings()
    plan = plan_scores(evalset, settings.metrics, settings.answer_regex)
    tracker = _Tracker(len(candidates) * len(evalset.examples), progress, stop_event)
    prompts = [example.prompt for example in evalset.examples]
    answers: dict[str, list[Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    on_base = [candidate for candidate in candidates if candidate.model is None]
    session = _session(model, settings)
    try:
        tokenizer = session.tokenizer
        fingerprint = _fingerprint(session)
        for candidate in on_base:
            session.set_adapter(candidate.choice)
            answers[candidate.label], results[candidate.label] = _answer(session, candidate, prompts, settings,
                                                                         tracker)
        if settings.measure_speed:
            _measure_speed(session, on_base, results)
    finally:
        session.close()
    for candidate in candidates:
        if candidate.model is None:
            continue
        other = _session(candidate.model, settings)
        try:
            answers[candidate.label], results[candidate.label] = _answer(other, candidate, prompts, settings, tracker)
        finally:
            other.close()
    document = {
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model, "model_fingerprint": fingerprint,
        "set": evalset.describe(), "metrics": plan.metrics, "notes": plan.notes,
        "settings": settings.describe(),
        "candidates": [], "examples": [],
        "seconds": round(time.perf_counter() - started, 2),
    }
    _score(document, plan, evalset, candidates, answers, results, tokenizer)
    return document


def _session(model: str, settings: EvalSettings) -> ChatSession:
    session = ChatSession(model, device=settings.device, threads=settings.threads)
    session.load()
    return session


def _fingerprint(session: ChatSession) -> Optional[str]:
    from engine.models.store import model_fingerprint

    return model_fingerprint(session.model_path) if session.model_path else None


def _answer(session: ChatSession, candidate: Candidate, prompts: list[list[dict]], settings: EvalSettings,
            tracker: _Tracker) -> tuple[list[Any], dict[str, Any]]:
    """The candidate's replies to every prompt, and how long they took."""
    tracker.check_stop()
    began = time.perf_counter()
    replies = session.generate_batch(prompts, max_new_tokens=settings.max_new_tokens,
                                     batch_size=settings.batch_size, stop_event=tracker._stop,
                                     on_done=tracker.begin(f"{candidate.label}: answering"))
    tracker.check_stop()
    seconds = time.perf_counter() - began
    result = {**candidate.describe(), "generation": {
        "seconds": round(seconds, 2), "answer_tokens": sum(reply.tokens for reply in replies),
        "examples_per_s": round(len(replies) / seconds, 3) if seconds > 0 else None}}
    return replies, result


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


def _score(document: dict[str, Any], plan: ScorePlan, evalset: EvalSet, candidates: list[Candidate],
           answers: dict[str, list[Any]], results: dict[str, dict[str, Any]], tokenizer: Any) -> None:
    """Fill the document's candidates (their set scores) and examples (each answer and its scores)."""
    examples = [{"index": example.index, "where": example.where, "prompt": example.prompt,
                 "reference": example.reference, "label": example.label, "answers": {}}
                for example in evalset.examples]
    for candidate in candidates:
        texts = [reply.reply for reply in answers[candidate.label]]
        per_example = [example_scores(plan, example, text, tokenizer)
                       for example, text in zip(evalset.examples, texts)]
        for entry, text, scores in zip(examples, texts, per_example):
            entry["answers"][candidate.label] = {"text": text, "scores": scores}
        scores, signatures = set_scores(plan, evalset.examples, texts, per_example) if texts else ({}, {})
        document["candidates"].append({**results[candidate.label], "scores": scores, "signatures": signatures,
                                       "judge": None, "forgetting": None})
    document["examples"] = examples
