"""Evaluation results documents written by hand, in the shape ``engine.eval.runner.evaluate`` returns
them (the shared brief of issue 17 gives it), for the code that only stores or renders them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

SET_HASH = "a" * 64


def candidate(label: str, path: Optional[Path], scores: dict[str, float], *, judge: Optional[dict] = None,
              forgetting: Optional[dict] = None, **extra: Any) -> dict[str, Any]:
    """A candidate's entry; ``path`` None is the base model."""
    return {"label": label, "ref": None if path is None else label, "path": None if path is None else str(path),
            "scores": scores, "signatures": {}, "judge": judge, "forgetting": forgetting,
            "generation": {"seconds": 1.0, "answer_tokens": 100, "examples_per_s": 30.0}, **extra}


def judged(win_rate: float, low: float, high: float) -> dict[str, Any]:
    return {"wins": 12, "ties": 3, "losses": 5, "comparisons": 20, "win_rate": win_rate, "low": low, "high": high,
            "judge": "tiny-judge"}


def results_document(candidates: list[dict[str, Any]], *, set_name: str = "pirate_persona.jsonl",
                     set_hash: str = SET_HASH, created: str = "2026-12-06T22:30:00+00:00", model: str = "tiny",
                     fingerprint: str = "fp-tiny", examples: Optional[list[dict]] = None,
                     metrics: tuple[str, ...] = ("loss", "rouge_l", "bleu")) -> dict[str, Any]:
    return {
        "version": 1, "created": created, "model": model, "model_fingerprint": fingerprint,
        "set": {"name": set_name, "source": f"/data/{set_name}", "kind": "dataset", "hash": set_hash,
                "examples": 30, "has_references": True},
        "metrics": list(metrics),
        "settings": {"max_new_tokens": 64, "judge": None, "answer_regex": None, "label_column": None},
        "candidates": candidates,
        "examples": examples or [],
    }


def example(index: int, prompt: str, reference: str, answers: dict[str, tuple[str, float, Optional[str]]]
            ) -> dict[str, Any]:
    """An example whose ``answers`` map a label to (text, ROUGE-L, judge verdict or None)."""
    return {"index": index, "where": f"line {index + 1}", "prompt": [{"role": "user", "content": prompt}],
            "reference": reference, "label": None,
            "answers": {label: {"text": text, "scores": {"rouge_l": rouge}, "judge": verdict}
                        for label, (text, rouge, verdict) in answers.items()}}
