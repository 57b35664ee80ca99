"""What the comparison report shows, before it is written as HTML or Markdown (``engine.eval.report``):
for each evaluation set, one table of the candidates with their quality (the scores, the judge against
the base, the forgetting check) and what each cost to train and to deploy (``engine.eval.costs``); the
plot of quality against peak training memory; the examples where each candidate beat the base and
where it fell behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from engine.core.checks import is_number
from engine.core.fields import text_field
from engine.core.units import human_bytes
from engine.errors import StudioError
from engine.eval.costs import CandidateCost, candidate_costs
from engine.eval.metrics import METRICS, metric_label
from engine.eval.results import (
    JUDGE_WIN_RATE,
    base_candidate,
    check_results,
    headline_label,
    headline_metric,
    score,
)
from engine.eval.svg_plot import PlotPoint, scatter_svg
from engine.jobs.history import format_duration

MISSING = "—"  # not measured
# Scores on a 0-100 scale, and the ones counted in words or tokens, read best with one decimal.
_ONE_DECIMAL = ("bleu", "chrf", "answer_length")


# the tables ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One candidate of a table, with the document it was evaluated in (its examples' answers)."""
    candidate: dict[str, Any]
    results: dict[str, Any]
    costs: CandidateCost

    @property
    def label(self) -> str:
        return self.candidate["label"]

    @property
    def is_base(self) -> bool:
        return self.candidate.get("ref") is None and self.candidate.get("path") is None


@dataclass
class Table:
    """The candidates evaluated on one set (one set hash), from one or more results documents."""
    evalset: dict[str, Any]
    model: str
    created: str
    metrics: list[str]
    headline: Optional[str]
    rows: list[Row]


def build_tables(results_docs: Sequence[dict[str, Any]]) -> list[Table]:
    """One table per evaluation set, in the order the sets first appear. Documents on the same set are
    merged: a candidate evaluated twice keeps its newest scores. Results of different base models on
    one set are refused: a table compares candidates of one base."""
    if not results_docs:
        raise StudioError("there are no evaluation results to report: evaluate some candidates first")
    docs = [check_results(doc, f"results document {n}") for n, doc in enumerate(results_docs, 1)]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_set.setdefault(doc["set"]["hash"], []).append(doc)
    return [_table(sorted(group, key=lambda d: str(d.get("created") or ""))) for group in by_set.values()]


def _table(docs: list[dict[str, Any]]) -> Table:
    newest = docs[-1]
    models = {str(d.get("model_fingerprint") or d.get("model")): str(d.get("model")) for d in docs}
    if len(models) > 1:
        raise StudioError(f"the results on {newest['set']['name']} come from different base models "
                          f"({', '.join(sorted(set(models.values())))}): a table compares candidates of one base "
                          "model, so report them separately")
    latest: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for doc in docs:  # oldest first: a newer evaluation of the same candidate replaces it
        for candidate in doc["candidates"]:
            path = text_field(candidate, "path")
            key = str(Path(path).resolve()) if path else "" if candidate.get("ref") is None else candidate["label"]
            latest[key] = (candidate, doc)
    rows = [Row(candidate, doc, candidate_costs(candidate)) for candidate, doc in latest.values()]
    ordered = sorted(rows, key=lambda row: not row.is_base)  # the base first, the rest as they came
    candidates = [row.candidate for row in ordered]
    asked = [m for d in docs for m in d.get("metrics") or []] + list(METRICS)
    metrics = [m for m in dict.fromkeys(asked) if m in METRICS and any(score(c, m) is not None for c in candidates)]
    return Table(evalset=newest["set"], model=str(newest.get("model") or "?"), created=str(newest.get("created") or ""),
                 metrics=metrics, headline=headline_metric(metrics, candidates), rows=ordered)


@dataclass(frozen=True)
class Cell:
    text: str
    tip: str = ""
    best: bool = False


@dataclass(frozen=True)
class Column:
    group: str
    title: str
    cells: list[Cell]


def _arrow(higher_is_better: Optional[bool]) -> str:
    return "" if higher_is_better is None else " ↑" if higher_is_better else " ↓"


def _score_text(metric: str, value: float) -> str:
    if metric in _ONE_DECIMAL:
        return f"{value:.1f}"
    return f"{value:.2f}" if metric == "perplexity" else f"{value:.3f}"


def _column(group: str, title: str, values: list[Optional[float]], text: Callable[[float], str],
            higher_is_better: Optional[bool]) -> Column:
    """A column of numbers; the best is marked when the column has a better direction and its values differ."""
    known = [v for v in values if v is not None]
    best = None
    if higher_is_better is not None and len(set(known)) > 1:
        best = max(known) if higher_is_better else min(known)
    cells = [Cell(MISSING if v is None else text(v), best=v is not None and v == best) for v in values]
    return Column(group, title + _arrow(higher_is_better), cells)


def _field(data: Any, key: str) -> Optional[float]:
    value = data.get(key) if isinstance(data, dict) else None
    return float(value) if is_number(value) else None


def table_columns(table: Table) -> list[Column]:
    """The table's columns, each with one cell per row: what both the HTML and the Markdown show."""
    rows = table.rows
    columns = [Column("", "candidate", [Cell(row.label, row.candidate.get("path") or "the base model alone")
                                        for row in rows]),
               Column("", "method", [Cell(row.costs.training.method or ("base" if row.is_base else MISSING))
                                     for row in rows])]
    for metric in table.metrics:
        columns.append(_column("Quality", metric_label(metric), [score(row.candidate, metric) for row in rows],
                               lambda v, m=metric: _score_text(m, v), METRICS[metric].higher_is_better))
    judges = [row.candidate.get("judge") if isinstance(row.candidate.get("judge"), dict) else {} for row in rows]
    columns.append(Column("Judge vs base", "win rate ↑ (95% interval)", [_judge_cell(j) for j in judges]))
    forgetting = [row.candidate.get("forgetting") for row in rows]
    columns.append(_column("Forgetting", "KL", [_field(f, "kl") for f in forgetting], lambda v: f"{v:.4f}", False))
    columns.append(_column("Forgetting", "answers changed", [_field(f, "changed") for f in forgetting],
                           lambda v: f"{v:.0%}", False))
    training = [row.costs.training for row in rows]
    columns.append(_column("Training", "wall time", [t.wall_s for t in training], format_duration, False))
    columns.append(_column("Training", "tokens/s", [t.tokens_per_s for t in training], lambda v: f"{v:,.0f}", True))
    columns.append(_column("Training", "peak memory", [t.peak_memory_bytes for t in training], human_bytes, False))
    columns.append(_column("Training", "trainable parameters", [t.trainable_params for t in training],
                           lambda v: f"{v:,.0f}", False))
    deployment = [row.costs.deployment for row in rows]
    columns.append(_column("Deployment", "size on disk", [d.size_bytes for d in deployment], human_bytes, False))
    columns.append(_column("Deployment", "chat tokens/s, adapter", [d.adapter_tokens_per_s for d in deployment],
                           lambda v: f"{v:.1f}", True))
    columns.append(_column("Deployment", "chat tokens/s, merged", [d.merged_tokens_per_s for d in deployment],
                           lambda v: f"{v:.1f}", True))
    return columns


def _judge_cell(judge: dict[str, Any]) -> Cell:
    rate, low, high = _field(judge, "win_rate"), _field(judge, "low"), _field(judge, "high")
    if rate is None:
        return Cell(MISSING)
    interval = f" ({low:.2f}–{high:.2f})" if low is not None and high is not None else ""
    counts = [judge.get(k) for k in ("wins", "ties", "losses", "comparisons")]
    tip = (f"{counts[0]} won, {counts[1]} tied, {counts[2]} lost of {counts[3]} comparisons (a tie counts half)"
           if all(isinstance(c, int) for c in counts) else "")
    if isinstance(judge.get("judge"), str):
        tip += f"; judged by {judge['judge']}"
    return Cell(f"{rate:.2f}{interval}", tip.lstrip("; "))


# the plot ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plot:
    svg: str
    left_out: list[str]  # candidates with no quality or no training memory to place

    @property
    def caption(self) -> str:
        text = "Each point is a trained candidate; the dashed line is the base model."
        if self.left_out:
            text += f" Not placed (no score or no training record): {', '.join(self.left_out)}."
        return text


def quality_plot(table: Table, standalone: bool = False) -> Optional[Plot]:
    """Quality (the headline metric) against peak training memory, one point per trained candidate and
    a dashed line for the base; None when no candidate has both."""
    if table.headline is None:
        return None
    peaks = [row.costs.training.peak_memory_bytes for row in table.rows if not row.is_base]
    known = [p for p in peaks if p is not None]
    if not known:
        return None
    unit, scale = ("GiB", 1024 ** 3) if max(known) >= 1024 ** 3 else ("MiB", 1024 ** 2)
    points, left_out = [], []
    for row in table.rows:
        if row.is_base:
            continue
        quality, peak = score(row.candidate, table.headline), row.costs.training.peak_memory_bytes
        if quality is None or peak is None:
            left_out.append(row.label)
        else:
            points.append(PlotPoint(row.label, peak / scale, quality))
    base = next((row for row in table.rows if row.is_base), None)
    base_quality = score(base.candidate, table.headline) if base is not None else None
    label = headline_label(table.headline)
    svg = scatter_svg(points, x_label=f"peak training memory ({unit})", y_label=label,
                      title=f"{label} against peak training memory on {table.evalset['name']}",
                      baseline=(f"base {base_quality:g}", base_quality) if base_quality is not None else None,
                      standalone=standalone)
    return Plot(svg, left_out)


# the examples -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """An example where a candidate won or lost against the base, with what decided it."""
    example: dict[str, Any]
    candidate: str
    base: str
    verdict: str  # "won" or "lost"
    why: str  # "judge: win", or "ROUGE-L 0.210 → 0.580"


def _per_example_metric(results: dict[str, Any], label: str, base: str, preferred: Optional[str]) -> Optional[str]:
    """The metric that tells a won example from a lost one when no judge compared them: the table's
    headline when each example has it (BLEU and chrF are scored on the whole set only), else the
    first of ROUGE-L, token F1, exact match, loss that the examples have."""
    for metric in (preferred, "rouge_l", "token_f1", "exact_match", "loss"):
        if metric is None or metric not in METRICS or METRICS[metric].higher_is_better is None:
            continue
        if any(_answer_score(e, label, metric) is not None and _answer_score(e, base, metric) is not None
               for e in results.get("examples") or []):
            return metric
    return None


def _answer(example: dict[str, Any], label: str) -> dict[str, Any]:
    answers = example.get("answers")
    answer = answers.get(label) if isinstance(answers, dict) else None
    return answer if isinstance(answer, dict) else {}


def _answer_score(example: dict[str, Any], label: str, metric: str) -> Optional[float]:
    return _field(_answer(example, label).get("scores"), metric)


def won_and_lost(row: Row, headline: Optional[str], count: int) -> tuple[list[Shown], list[Shown]]:
    """Up to ``count`` examples where the candidate beat the base and up to ``count`` where it fell
    behind: by the judge's verdicts when it judged, else by the per-example metric, widest gaps first.
    Each says what decided it, with the metric's before -> after where the examples have one."""
    base = base_candidate(row.results)
    examples = [e for e in row.results.get("examples") or [] if isinstance(e, dict)]
    if row.is_base or base is None or count < 1:
        return [], []
    label, base_label = row.label, base["label"]
    metric = _per_example_metric(row.results, label, base_label, headline if headline != JUDGE_WIN_RATE else None)

    def change(example: dict[str, Any]) -> tuple[float, str]:
        """How much better than the base the candidate scored (0 when unknown), and the scores in words."""
        mine, theirs = ((_answer_score(example, label, metric), _answer_score(example, base_label, metric))
                        if metric is not None else (None, None))
        if mine is None or theirs is None:
            return 0.0, ""
        sign = 1 if METRICS[metric].higher_is_better else -1
        words = f"{metric_label(metric)} {_score_text(metric, theirs)} → {_score_text(metric, mine)}"
        return sign * (mine - theirs), words

    verdicts = [_answer(e, label).get("judge") for e in examples]
    if any(verdict in ("win", "loss") for verdict in verdicts):
        def shown(example: dict[str, Any], verdict: str) -> Shown:
            said = "the judge preferred it" if verdict == "won" else "the judge preferred the base"
            return Shown(example, label, base_label, verdict, "; ".join(filter(None, (said, change(example)[1]))))

        won = [shown(e, "won") for e, v in zip(examples, verdicts) if v == "win"]
        lost = [shown(e, "lost") for e, v in zip(examples, verdicts) if v == "loss"]
        return won[:count], lost[:count]
    gaps = sorted(((*change(e), e) for e in examples), key=lambda gap: gap[0], reverse=True)
    won = [Shown(e, label, base_label, "won", why) for gap, why, e in gaps if gap > 0]
    lost = [Shown(e, label, base_label, "lost", why) for gap, why, e in reversed(gaps) if gap < 0]
    return won[:count], lost[:count]


def prompt_text(example: dict[str, Any]) -> str:
    """The conversation the candidates answered, one ``role: content`` line per message."""
    messages = example.get("prompt")
    if not isinstance(messages, list):
        return ""
    return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in messages if isinstance(m, dict))


def answer_text(example: dict[str, Any], label: str) -> str:
    text = _answer(example, label).get("text")
    return text if isinstance(text, str) else MISSING


def example_place(example: dict[str, Any]) -> str:
    """Which example, and where in its file it came from: "example 3 (line 12)"."""
    where = example.get("where")
    return f"example {example.get('index', '?')}" + (f" ({where})" if isinstance(where, str) and where else "")


def set_line(table: Table) -> str:
    """The set under its name: how many examples, from where, its hash, the base model, when evaluated."""
    evalset = table.evalset
    kind = "held-out rows of its run" if evalset.get("kind") == "heldout" else "a dataset file"
    examples = evalset.get("examples")
    counted = f"{examples} examples" if isinstance(examples, int) else "examples"
    return (f"{counted} ({kind}), set {evalset['hash'][:12]}, base model {table.model}, "
            f"evaluated {table.created.replace('T', ' ')[:16]}")
