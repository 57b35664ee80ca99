"""Keeping an evaluation's results: the whole document in the studio's home, a summary with each
evaluated library adapter, and reading them back for a report.

The results document (what ``engine.eval.runner.evaluate`` returns: every candidate's scores and
every example's answers) is written whole, atomically, to ``<home>/evaluations/<time>-<set hash>.json``.
Each candidate that is an adapter of the library gets a summary of its own scores in its
``studio.json``, keyed by the set's hash (the shape is ``engine.adapters.evaluations``'s), with the
base model's scores on the same rows beside them (before -> after) and the path of the whole document.
A candidate that is not a library adapter (the base, a run's checkpoint, a PEFT folder elsewhere) is
scored like the others but nothing is written into its folder: the library is all the studio changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from engine.adapters.evaluations import read_evaluations
from engine.adapters.library import (
    editable_meta,
    now,
    read_adapter_meta,
    record_evaluation,
    resolve_adapter,
)
from engine.core.atomic import read_json_object, write_json
from engine.core.checks import is_number
from engine.core.fields import text_field
from engine.errors import StudioError
from engine.eval.metrics import METRICS, metric_label
from engine.paths import adapters_dir, evaluations_dir, writable_home

# The judge's win rate against the base heads an evaluation that has no reference answers to score.
JUDGE_WIN_RATE = "judge_win_rate"


# reading a results document ------------------------------------------------------------------


def check_results(results: Any, where: str = "the results") -> dict[str, Any]:
    """``results`` when it is an evaluation's results document (its set named and hashed, its
    candidates labelled); one line saying what is wrong otherwise. Only what the summaries and the
    report rely on is checked; a field they can do without may be missing."""
    if not isinstance(results, dict):
        raise StudioError(f"{where} is not an evaluation's results (not a JSON object)")
    evalset = results.get("set")
    if not isinstance(evalset, dict) or not text_field(evalset, "hash") or not text_field(evalset, "name"):
        raise StudioError(f"{where} is not an evaluation's results: it names no evaluation set with its hash")
    candidates = results.get("candidates")
    if (not isinstance(candidates, list) or not candidates
            or not all(isinstance(c, dict) and text_field(c, "label") for c in candidates)):
        raise StudioError(f"{where} is not an evaluation's results: it has no labelled candidates")
    return results


def load_results(path: Path) -> dict[str, Any]:
    """The results document in the JSON file ``path``, or one line saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"the evaluation results {path} are missing: the file was moved or deleted")
    data = read_json_object(path)
    if data is None:
        raise StudioError(f"{path} cannot be read as evaluation results (not a JSON object)")
    return check_results(data, str(path))


def base_candidate(results: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The base model's entry among the candidates, when the base was evaluated."""
    return next((c for c in results["candidates"] if c.get("ref") is None and c.get("path") is None), None)


def score(candidate: dict[str, Any], metric: str) -> Optional[float]:
    """A candidate's score for ``metric`` (or its judge win rate for ``JUDGE_WIN_RATE``), when it has one."""
    if metric == JUDGE_WIN_RATE:
        judge = candidate.get("judge")
        value = judge.get("win_rate") if isinstance(judge, dict) else None
    else:
        scores = candidate.get("scores")
        value = scores.get(metric) if isinstance(scores, dict) else None
    return float(value) if is_number(value) else None


def headline_metric(metrics: Sequence[str], candidates: Sequence[dict[str, Any]]) -> Optional[str]:
    """The one metric that heads a list of these candidates: ROUGE-L when it was scored, else the first
    of ``metrics`` that was scored and is better higher; the judge's win rate when no reference was
    scored; None when there is neither (a lower-is-better loss would sort the list upside down)."""
    for name in ("rouge_l", *metrics):
        info = METRICS.get(name)
        if info is not None and info.higher_is_better and any(score(c, name) is not None for c in candidates):
            return name
    if any(score(c, JUDGE_WIN_RATE) is not None for c in candidates):
        return JUDGE_WIN_RATE
    return None


def headline_label(metric: str) -> str:
    return "judge win rate" if metric == JUDGE_WIN_RATE else metric_label(metric)


# storing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResults:
    results_file: Path  # the whole document
    adapters: list[str]  # the library adapters whose studio.json now holds a summary


def library_folder(path: Optional[str | Path]) -> Optional[Path]:
    """The library entry a candidate's folder is; None for the base (no folder), a run's checkpoint or
    a PEFT folder elsewhere, which are never written to."""
    if path is None:
        return None
    folder = Path(path).resolve()
    return folder if folder.parent == adapters_dir().resolve() and folder.is_dir() else None


def check_storable(paths: Iterable[Optional[str | Path]]) -> list[Path]:
    """The library entries among the candidates' ``paths`` that an evaluation will record its summary
    in, once the home is writable and each entry's studio.json can be changed (one that is damaged is
    refused, in one line, and left as it is). Call it before evaluating, so that minutes of work never
    end in a refusal; ``store_results`` calls it again before it writes anything."""
    writable_home()
    folders = [folder for folder in map(library_folder, paths) if folder is not None]
    for folder in folders:
        editable_meta(folder)
    return folders


def candidate_summary(results: dict[str, Any], candidate: dict[str, Any], results_file: Path) -> dict[str, Any]:
    """What an adapter's studio.json keeps of one evaluation of it (engine.adapters.evaluations)."""
    evalset = results["set"]
    base = base_candidate(results)
    metric = headline_metric(results.get("metrics") or [], results["candidates"])
    value = score(candidate, metric) if metric else None
    headline = None
    if metric and value is not None:
        before = score(base, metric) if base is not None and metric != JUDGE_WIN_RATE else None
        headline = {"metric": metric, "label": headline_label(metric), "score": value, "base": before}
    return {
        "label": candidate["label"],
        "set": {"name": evalset["name"], "examples": evalset.get("examples"), "kind": evalset.get("kind"),
                "hash": evalset["hash"]},
        "model": results.get("model"),
        "created": text_field(results, "created") or now(),
        "results_file": str(results_file),
        "scores": candidate.get("scores") or {},
        "base_scores": base.get("scores") if base is not None else None,
        "judge": candidate.get("judge"),
        "forgetting": candidate.get("forgetting"),
        "headline": headline,
    }


def results_file_for(results: dict[str, Any]) -> Path:
    """Where a document's results go: named by its time and its set's hash, so a listing sorts them by
    time and shows which share a set; a second evaluation within the same second gets ``-2``."""
    try:
        stamp = datetime.fromisoformat(results.get("created") or now()).strftime("%Y%m%d-%H%M%S")
    except (TypeError, ValueError):
        stamp = datetime.fromisoformat(now()).strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{results['set']['hash'][:12]}"
    path, n = evaluations_dir() / f"{name}.json", 1
    while path.exists():
        n += 1
        path = evaluations_dir() / f"{name}-{n}.json"
    return path


def store_results(results: dict[str, Any]) -> StoredResults:
    """Write the whole results document into ``<home>/evaluations/`` and a summary into the studio.json
    of each candidate that is a library adapter. Every write is atomic, and every adapter's studio.json
    is checked first (``check_storable``): a damaged one refuses the lot before anything is written."""
    check_results(results)
    labelled = {c["label"]: library_folder(c.get("path")) for c in results["candidates"]}
    check_storable(folder for folder in labelled.values())
    results_file = results_file_for(results)
    write_json(results_file, results)
    key = results["set"]["hash"]
    stored = []
    for candidate in results["candidates"]:
        folder = labelled[candidate["label"]]
        if folder is not None:
            record_evaluation(folder.name, key, candidate_summary(results, candidate, results_file))
            stored.append(folder.name)
    return StoredResults(results_file, stored)


# gathering for a report ------------------------------------------------------------------------


def gather_results(refs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The results documents that ``refs`` name, each once: a ``.json`` file is a results document; an
    adapter (a library name or a folder) stands for the newest evaluation stored with it on each set.
    One line for an adapter that was never evaluated or whose results file is gone."""
    paths: list[Path] = []
    for ref in refs:
        if str(ref).endswith(".json"):
            found = [Path(ref)]
        else:
            folder = resolve_adapter(ref)
            found = [_results_path(s["results_file"]) for s in read_evaluations(read_adapter_meta(folder))
                     if text_field(s, "results_file")]
            if not found:
                raise StudioError(f"adapter {str(ref)!r} has no stored evaluation: evaluate it first")
        paths += [path for path in found if path.resolve() not in {p.resolve() for p in paths}]
    return [load_results(path) for path in paths]


def _results_path(recorded: str) -> Path:
    """A results file where studio.json says it is, or by its name in this home's evaluations folder
    (a home moved whole keeps its files' names)."""
    path = Path(recorded)
    moved = evaluations_dir() / path.name
    return moved if not path.is_file() and moved.is_file() else path
