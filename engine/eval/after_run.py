"""A run's evaluation of itself: when a run with a validation split ends with an adapter, its
adapter and the base answer the rows it held out, and the finished-run notice gives the change
in one line ("ROUGE-L 0.21 → 0.58 on 30 held-out rows") instead of only a loss.

It scores answers and held-out loss only: the judge and the forgetting check take minutes more on
a CPU, and the Evaluate page runs them on request.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from engine.core.choices import RunStatus
from engine.data.heldout import heldout_record
from engine.errors import StudioError
from engine.eval.request import EvalRequest, run_request
from engine.eval.results import base_candidate, headline_label, headline_metric, score
from engine.eval.runner import ProgressFn
from engine.run.config import RunConfig
from engine.run.events import RunFinished

# The held-out rows of a large dataset can be thousands; the notice needs a measure, not all of them.
AFTER_RUN_LIMIT = 100
AFTER_RUN_NEW_TOKENS = 128


def evaluates_itself(config: RunConfig, finished: RunFinished) -> bool:
    """Whether a run that ended so goes on to evaluate itself: it completed (a stopped run is
    half-trained, a failed one has nothing to score), saved an adapter, was asked to, and held
    rows out. The studio's Train page and ``lora-studio train`` both ask here. A preference run
    scores its held-out pairs itself as it trains (EvalMetrics' reward accuracy): its rows hold two
    answers, not one reference reply to score a generation against."""
    return (finished.status == RunStatus.COMPLETED and bool(finished.adapter) and config.evaluate_at_end
            and config.val_fraction > 0 and not config.is_preference)


def rows_to_evaluate(run_dir: Path) -> int:
    """How many held-out rows the run's evaluation of itself answers: those it held out, up to
    ``AFTER_RUN_LIMIT``. StudioError when the run records none."""
    return min(len(heldout_record(run_dir)["rows"]), AFTER_RUN_LIMIT)


def evaluate_run(run_dir: Path, *, progress: Optional[ProgressFn] = None,
                 stop_event: Optional[threading.Event] = None, device: str = "auto") -> dict[str, Any]:
    """The results document of the run's adapter against its base on the run's held-out rows, kept
    with the adapter as any evaluation's results are (``engine.eval.request``)."""
    from engine.jobs.summary import summarize_run

    summary = summarize_run(Path(run_dir))
    if summary is None:
        raise StudioError(f"{run_dir} is not a run folder")
    if not summary.adapter:
        raise StudioError(f"run {summary.name} saved no adapter to evaluate")
    request = EvalRequest(model=summary.model, adapters=[summary.adapter], include_base=True, run_dir=str(run_dir),
                          limit=AFTER_RUN_LIMIT, max_new_tokens=AFTER_RUN_NEW_TOKENS, device=device,
                          judge=False, forgetting=False, measure_speed=False)
    document, _stored = run_request(request, progress=progress, stop_event=stop_event)
    return document


def headline(document: dict[str, Any]) -> Optional[str]:
    """The change from the base to the (first) adapter in one line, by the metric that heads the
    results (``engine.eval.results.headline_metric``): "ROUGE-L 0.21 → 0.58 on 30 held-out rows"."""
    base = base_candidate(document)
    tuned = next((c for c in document["candidates"] if c is not base), None)
    if base is None or tuned is None:
        return None
    name = headline_metric(document["metrics"], [base, tuned])
    before, after = (score(base, name), score(tuned, name)) if name else (None, None)
    if before is None or after is None:
        return None
    rows = document["set"]["examples"]
    where = "held-out rows" if document["set"]["kind"] == "heldout" else f"rows of {document['set']['name']}"
    digits = 1 if name in ("bleu", "chrf") else 2
    return f"{headline_label(name)} {before:.{digits}f} → {after:.{digits}f} on {rows} {where}"
