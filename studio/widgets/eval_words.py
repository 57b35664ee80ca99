"""What the Evaluate page calls the metrics: a title a user reads (never the engine's key, such as
``rouge_l``), the metric's description and which way is better (``engine.eval.metrics``)."""

from __future__ import annotations

from typing import Optional

from engine.eval.metrics import METRICS, metric_label


def title(name: str) -> str:
    """The metric's label (``engine.eval.metrics.metric_label``) as a heading: "Token F1", "chrF"; a
    metric the engine has no label for reads as words."""
    label = metric_label(name).replace("_", " ")
    return label[:1].upper() + label[1:] if label.split()[0].islower() else label


def higher_is_better(name: str) -> Optional[bool]:
    info = METRICS.get(name)
    return info.higher_is_better if info is not None else None


def heading(name: str) -> str:
    """The metric's column heading: its title and an arrow pointing the better way."""
    better = higher_is_better(name)
    return title(name) if better is None else f"{title(name)} {'↑' if better else '↓'}"


def direction(name: str) -> str:
    better = higher_is_better(name)
    return "no better direction" if better is None else "higher is better" if better else "lower is better"


def explanation(name: str) -> str:
    """The metric's description and its direction, for a tooltip."""
    info = METRICS.get(name)
    described = info.description if info is not None else title(name)
    return f"{title(name)}: {described}. {direction(name).capitalize()}."
