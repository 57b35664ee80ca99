"""A scatter plot as SVG text, drawn by hand: axes with round-numbered ticks, one labelled point per
candidate and, where given, a dashed line for the base model to read the points against.

Small on purpose: the report needs this one plot, and a plotting library would be a large
dependency for it. Every label is escaped, so a candidate's name never becomes markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Optional, Sequence

WIDTH, HEIGHT = 560, 340
# Room around the plotting area for the tick labels and the axis titles.
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 52
POINT_COLOUR = "#2e6bd1"
BASE_COLOUR = "#888888"


@dataclass(frozen=True)
class PlotPoint:
    label: str
    x: float
    y: float


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` evenly spaced round numbers (steps of 1, 2, 2.5 or 5 times a power of ten) that
    cover ``low`` to ``high``; the first and last are the axis's ends."""
    if high < low:
        low, high = high, low
    if high == low:  # one value: a small range around it
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start, end = math.floor(low / step) * step, math.ceil(high / step) * step
    return [round(start + i * step, 12) for i in range(int(round((end - start) / step)) + 1)]


def _tick_text(value: float) -> str:
    return f"{value:g}"


def scatter_svg(points: Sequence[PlotPoint], *, x_label: str, y_label: str, title: str,
                baseline: Optional[tuple[str, float]] = None, x_from_zero: bool = True,
                standalone: bool = False) -> str:
    """The plot as one ``<svg>`` element. ``baseline`` (a label and a y value) is drawn as a dashed
    line across the plot. ``standalone`` adds the XML namespace a ``.svg`` file needs (an ``<svg>``
    inside HTML needs none, and so names no URL)."""
    xs = [p.x for p in points]
    ys = [p.y for p in points] + ([baseline[1]] if baseline else [])
    x_ticks = nice_ticks(min([0.0] + xs) if x_from_zero else min(xs, default=0.0), max(xs, default=1.0))
    y_ticks = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * plot_h

    namespace = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    parts = [f'<svg{namespace} width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>",
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>']
    for tick in x_ticks:
        x = px(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 15}" text-anchor="middle">{_tick_text(tick)}</text>')
    for tick in y_ticks:
        y = py(tick)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_text(tick)}</text>')
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(f'<text transform="translate(14 {TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f"{escape(y_label)}</text>")
    if baseline is not None:
        label, value = baseline
        y = py(value)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" stroke="{BASE_COLOUR}" '
                     'stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{LEFT + plot_w - 4}" y="{y - 5:.1f}" text-anchor="end" fill="{BASE_COLOUR}">'
                     f"{escape(label)}</text>")
    for point in points:
        x, y = px(point.x), py(point.y)
        # The name goes left of a point in the right third, so it stays inside the plot.
        anchor, dx = ("end", -8) if x > LEFT + plot_w * 2 / 3 else ("start", 8)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{POINT_COLOUR}">'
                     f"<title>{escape(point.label)}: {point.y:g} at {point.x:g}</title></circle>")
        parts.append(f'<text x="{x + dx:.1f}" y="{y - 7:.1f}" text-anchor="{anchor}">{escape(point.label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
