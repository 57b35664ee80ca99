"""The evaluations an adapter's ``studio.json`` records: what each evaluation of the adapter scored,
keyed by the evaluation set's hash, so that the Adapters page shows and sorts by the newest one and a
report finds the full results again.

    "evaluations": {
      "<set hash>": {
        "set": {"name": "pirate.jsonl", "examples": 30, "kind": "heldout", "hash": "<set hash>"},
        "model": "starter", "created": "2026-12-06T22:30:00+00:00", "label": "pirate",
        "results_file": "<home>/evaluations/20261206-223000-1a2b3c4d5e6f.json",
        "scores": {"rouge_l": 0.58, "loss": 1.9, ...}, "base_scores": {"rouge_l": 0.21, ...} or null,
        "judge": {"win_rate": 0.675, "low": 0.46, "high": 0.84, ...} or null,
        "forgetting": {"kl": 0.123, "changed": 0.31, "prompts": 100} or null,
        "headline": {"metric": "rouge_l", "label": "ROUGE-L", "score": 0.58, "base": 0.21} or null
      }
    }

One entry per set: evaluating on the same set again replaces it, another set adds one. The
summaries are written by ``engine.eval.results``, which knows which metrics are better higher and
so picks the headline; this module only reads them. studio.json is a file anyone can edit: an entry
not of this shape is skipped, never trusted half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from engine.core.fields import number_field, text_field, whole_field

EVALUATIONS = "evaluations"  # the key in studio.json


@dataclass(frozen=True)
class EvalHeadline:
    """An evaluation's one number for a list: ``score`` of ``metric`` (higher is better) on the set
    ``set_name`` of ``examples`` rows, and the base model's ``base_score`` on the same rows when the
    base was evaluated beside it (before -> after)."""
    metric: str  # its key: "rouge_l"
    label: str  # as a reader knows it: "ROUGE-L"
    score: float
    base_score: Optional[float]
    set_name: str
    examples: Optional[int]
    created: str


def read_evaluations(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The evaluation summaries a ``studio.json`` holds, newest first; entries that are not an object
    with a creation time and a set are skipped."""
    stored = meta.get(EVALUATIONS)
    if not isinstance(stored, dict):
        return []
    summaries = [summary for summary in stored.values() if isinstance(summary, dict)
                 and text_field(summary, "created") and isinstance(summary.get("set"), dict)]
    return sorted(summaries, key=lambda summary: summary["created"], reverse=True)


def headline(summary: dict[str, Any]) -> Optional[EvalHeadline]:
    """The headline of one summary; None when it has none, or one of the wrong shape."""
    stored = summary.get("headline")
    if not isinstance(stored, dict):
        return None
    metric, score = text_field(stored, "metric"), number_field(stored, "score")
    if metric is None or score is None:
        return None
    return EvalHeadline(metric=metric, label=text_field(stored, "label") or metric, score=score,
                        base_score=number_field(stored, "base"), set_name=text_field(summary["set"], "name") or "",
                        examples=whole_field(summary["set"], "examples"), created=summary["created"])


def newest_headline(meta: dict[str, Any]) -> Optional[EvalHeadline]:
    """The headline of the newest evaluation that has one (an evaluation with no reference answers
    and no judge has no number to head a list with)."""
    return next((found for found in map(headline, read_evaluations(meta)) if found is not None), None)
