"""Scoring candidates' answers against the set's references: each example's scores, and the
set's scores for a candidate (the mean of each example's, except BLEU and chrF, which are
defined on the whole corpus, and loss, which is token-weighted: ``engine.eval.heldout_loss``).

Which metrics apply depends on the set: those that compare with a reference need every example to
have one, and accuracy needs a label for every example, from the label column or taken out of the
reference by the answer regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Optional, Sequence

from engine.eval.evalset import EvalExample, EvalSet
from engine.eval.metrics import (METRICS, answer_correct, answer_length, answer_pattern, check_metrics, corpus_bleu,
                                 corpus_chrf, exact_match, extract_answer, rouge_l, token_f1)
from engine.errors import StudioError

# What an evaluation scores when the user names no metrics (accuracy joins them when it can apply).
DEFAULT_METRICS = ("loss", "perplexity", "rouge_l", "token_f1", "exact_match", "bleu", "chrf", "answer_length")
_PER_EXAMPLE = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}
_CORPUS = {"bleu": corpus_bleu, "chrf": corpus_chrf}
MODEL_METRICS = ("loss", "perplexity")  # computed from the model's logits, not from its answers


@dataclass
class ScorePlan:
    """The metrics an evaluation computes on a set, and what it cannot compute, in words."""

    metrics: list[str]
    labels: Optional[list[str]] = None  # accuracy's label per example
    pattern: Optional[re.Pattern] = None
    notes: list[str] = field(default_factory=list)

    @property
    def answer_metrics(self) -> list[str]:
        return [name for name in self.metrics if name not in MODEL_METRICS]


def plan_scores(evalset: EvalSet, metrics: Optional[Sequence[str]] = None,
                answer_regex: Optional[str] = None) -> ScorePlan:
    """The metrics to compute on ``evalset``: those named (checked), or the defaults, less those the
    set cannot give; refuses a regex that does not compile, and accuracy asked for without labels."""
    asked = check_metrics(metrics) if metrics else list(DEFAULT_METRICS)
    pattern = answer_pattern(answer_regex) if answer_regex else None
    labels = _labels(evalset.examples, pattern)
    if labels is not None and "accuracy" not in asked and not metrics:
        asked.append("accuracy")
    if "accuracy" in asked and labels is None:
        raise StudioError("accuracy needs a label for every example: name the label column, or give an answer "
                          "regex that finds the answer in each reference")
    plan = ScorePlan([], labels, pattern)
    if not evalset.has_references:
        skipped = [name for name in asked if METRICS[name].needs_reference and name != "accuracy"]
        if skipped:
            plan.notes.append(f"{evalset.name} has no reference answer for every example: {', '.join(skipped)} "
                              "not computed; the judge and the forgetting check still run")
        asked = [name for name in asked if name not in skipped]
    plan.metrics = asked
    return plan


def _labels(examples: list[EvalExample], pattern: Optional[re.Pattern]) -> Optional[list[str]]:
    """Each example's label: the label column's, else the regex's find in its reference; None
    unless every example has one."""
    labels = []
    for example in examples:
        label = example.label
        if label is None and pattern is not None and example.reference is not None:
            label = extract_answer(example.reference, pattern)
        if label is None:
            return None
        labels.append(label)
    return labels


def example_scores(plan: ScorePlan, example: EvalExample, answer: str, tokenizer: Any = None) -> dict[str, float]:
    """One answer's scores by the plan's per-example metrics (BLEU and chrF are corpus-only)."""
    scores: dict[str, float] = {}
    for name in plan.answer_metrics:
        if name in _PER_EXAMPLE:
            scores[name] = _PER_EXAMPLE[name](answer, example.reference)
        elif name == "accuracy":
            scores[name] = float(answer_correct(answer, plan.labels[example.index], plan.pattern))
        elif name == "answer_length":
            length = answer_length(answer, tokenizer)
            scores[name] = float(length.words)
            if length.tokens is not None:
                scores["answer_tokens"] = float(length.tokens)
    return scores


def set_scores(plan: ScorePlan, examples: list[EvalExample], answers: list[str],
               per_example: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, str]]:
    """A candidate's scores on the set, and the signatures of the corpus scores (sacrebleu's)."""
    scores: dict[str, float] = {}
    signatures: dict[str, str] = {}
    for name in plan.answer_metrics:
        if name in _CORPUS:
            result = _CORPUS[name](answers, [example.reference for example in examples])
            scores[name], signatures[name] = result.score, result.signature
        else:
            scores[name] = fmean(scores_of[name] for scores_of in per_example)
    if "answer_tokens" in (per_example[0] if per_example else {}):
        scores["answer_tokens"] = fmean(scores_of["answer_tokens"] for scores_of in per_example)
    return scores, signatures
