"""An evaluation as a user asks for one (the CLI's flags, the Evaluate page's controls): every
refusal made before a model loads, then the run, then the results kept. The CLI and the window
both go through ``run_request``, so they refuse the same things in the same words.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from engine.chat.blends import Blend
from engine.data.dataset import DataOptions
from engine.errors import StudioError
from engine.eval.candidates import Candidate, resolve_candidates
from engine.eval.evalset import DEFAULT_LIMIT, EvalSet, load_evalset
from engine.eval.judge import check_judge
from engine.eval.runner import DEFAULT_BATCH_SIZE, EvalSettings, ProgressFn, evaluate
from engine.eval.scoring import plan_scores


@dataclass
class EvalRequest:
    model: str
    adapters: list[str] = field(default_factory=list)  # library names, PEFT folders, run checkpoints
    include_base: bool = True
    other_models: list[str] = field(default_factory=list)  # models that answer on their own (merged, full)
    combinations: list[list[str]] = field(default_factory=list)  # adapters applied together, weight 1 each
    run_dir: Optional[str] = None  # evaluate on this run's held-out rows...
    dataset: Optional[str] = None  # ...or on this dataset
    data_options: DataOptions = field(default_factory=DataOptions)
    limit: Optional[int] = DEFAULT_LIMIT
    max_new_tokens: int = 128
    batch_size: int = DEFAULT_BATCH_SIZE
    metrics: Optional[list[str]] = None  # None: every metric that applies
    answer_regex: Optional[str] = None
    label_column: Optional[str] = None
    judge: bool = True
    judge_model: Optional[str] = None  # None: the base model judges
    forgetting: bool = True
    forgetting_prompts: Optional[int] = None  # the first N general prompts; None: all of them
    device: str = "auto"
    measure_speed: bool = True


@dataclass
class PreparedEval:
    evalset: EvalSet
    candidates: list[Candidate]
    settings: EvalSettings


def prepare(request: EvalRequest) -> PreparedEval:
    """The set, the candidates and the settings, or StudioError (one line) for anything that would
    fail later: a set that cannot be read, a metric or regex that cannot apply, an unknown
    candidate or one for another base, a damaged studio.json the results could not be kept in."""
    from engine.eval.results import check_storable

    evalset = load_evalset(dataset=request.dataset, run_dir=request.run_dir, options=request.data_options,
                           label_column=request.label_column, limit=request.limit)
    settings = EvalSettings(metrics=request.metrics, max_new_tokens=request.max_new_tokens,
                            batch_size=request.batch_size, answer_regex=request.answer_regex,
                            label_column=request.label_column, judge=request.judge,
                            judge_model=request.judge_model, forgetting=request.forgetting,
                            forgetting_prompts=request.forgetting_prompts, device=request.device,
                            measure_speed=request.measure_speed)
    plan_scores(evalset, settings.metrics, settings.answer_regex)
    if request.judge and request.judge_model:
        check_judge(request.judge_model)
    blends = [Blend(tuple((ref, 1.0) for ref in refs)) for refs in request.combinations]
    candidates = resolve_candidates(request.model, request.adapters, include_base=request.include_base,
                                    blends=blends, models=request.other_models)
    if request.forgetting_prompts is not None and request.forgetting_prompts < 1:
        raise StudioError(f"the forgetting check needs at least one prompt, got {request.forgetting_prompts}")
    check_storable(candidate.path for candidate in candidates)
    return PreparedEval(evalset, candidates, settings)


def run_request(request: EvalRequest, *, prepared: Optional[PreparedEval] = None,
                progress: Optional[ProgressFn] = None,
                stop_event: Optional[threading.Event] = None) -> tuple[dict[str, Any], Any]:
    """Evaluate as ``request`` asks (``prepared``: what ``prepare`` made of it, if it was called) and
    keep the results (``engine.eval.results.store_results``): the results document and where it
    was stored. ``EvalStopped`` when stopped: nothing is kept."""
    from engine.eval.results import store_results

    prepared = prepared or prepare(request)
    document = evaluate(request.model, prepared.candidates, prepared.evalset, prepared.settings,
                        progress=progress, stop_event=stop_event)
    return document, store_results(document)
