"""The memory a run will take, as one stacked bar against the device's free memory.

Each item of ``engine.memory.estimate.estimate_memory`` (weights, gradients, optimizer states,
activations, logits...) is one coloured segment; an upright line marks the device's free memory
and a badge says whether the run fits, is tight, or does not fit. The legend names every
segment and the line; hovering an entry or a segment says what the item is, why it grows and
which setting lowers it (``ITEM_HELP``). The widget only draws: ``TrainPage`` computes the
estimate (a millisecond of arithmetic) and hands it over.
"""

from __future__ import annotations

import html
from typing import Optional

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QHelpEvent, QPainter, QPalette, QPen, QTextDocumentFragment
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QToolTip, QVBoxLayout, QWidget

from engine.core.units import human_bytes
from engine.memory.estimate import ALLOCATOR_RESERVE_FRACTION, CUDA_CONTEXT_BYTES, DEFAULT_MARGIN, MemoryEstimate

ITEM_LABELS = {
    "weights": "weights",
    "reference_model": "reference model",
    "autocast_weight_copies": "16-bit weight copies",
    "trainable_params": "trainable parameters",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "activations": "activations",
    "logits_and_loss": "logits and loss",
    "reference_pass": "reference pass",
    "cuda_context": "CUDA context",
    "allocator_reserve": "allocator reserve",
}
# What each item is, why it grows and which setting lowers it: the legend's and the bar's tooltips.
# The settings are named as the Train page labels them.
ITEM_HELP = {
    "weights": "The base model itself, loaded once for the whole run. It grows with the model's size; QLoRA "
               "(Method) keeps it in 4 bits, about a quarter of the 16-bit size.",
    "reference_model": "DPO and KTO measure the model against where it started. Full fine-tuning keeps a frozen "
                       "copy of the model for that; LoRA, DoRA and QLoRA use the base with the adapter off (a "
                       "copy of the adapter only, when starting from one). Reference-free DPO, ORPO or SimPO "
                       "(Objective) need none.",
    "autocast_weight_copies": "Full fine-tuning keeps 32-bit weights and computes with 16-bit copies of them, "
                              "kept until the backward pass. LoRA or QLoRA (Method) have none.",
    "trainable_params": "The weights that learn: the adapter (or every weight, in full fine-tuning). They grow "
                        "with the LoRA rank and the target layers; lower either for less.",
    "gradients": "How each trainable weight should change, found in the backward pass: as large as the "
                 "trainable parameters, so a lower LoRA rank lowers it too.",
    "optimizer_states": "What the optimizer remembers for each trainable weight between steps (AdamW: two "
                        "numbers). 8-bit AdamW (Optimizer) keeps it in a quarter; a lower LoRA rank lowers it too.",
    "activations": "What each layer keeps from the forward pass for the backward pass, for every token of a "
                   "batch: it grows with batch size × max length. Lower either, or turn on gradient "
                   "checkpointing (Advanced mode, under Activations).",
    "logits_and_loss": "The model's score for every word of its vocabulary at every token of a batch, and the "
                       "loss computed from them: it grows with batch size × max length. Lower either.",
    "reference_pass": "DPO and KTO run each batch through the reference too, without keeping anything for the "
                      "backward pass: one layer's working memory and the answers' scores. Reference-free DPO, "
                      "ORPO or SimPO (Objective) skip it.",
    "cuda_context": f"What the GPU driver and its libraries take before training starts, about "
                    f"{human_bytes(CUDA_CONTEXT_BYTES)}. No setting changes it.",
    "allocator_reserve": f"Memory PyTorch keeps aside to reuse, about {ALLOCATOR_RESERVE_FRACTION:.0%} of the rest at "
                         "the peak. It shrinks with everything else.",
}
FREE_HELP = ("The upright line on the bar: the memory free on this device now. The run fits when the bar ends "
             f"before it with {DEFAULT_MARGIN:.0%} of it to spare.")
# Distinct hues that read on light and dark backgrounds alike.
ITEM_COLOURS = {
    "weights": "#4e79a7", "autocast_weight_copies": "#a0cbe8", "trainable_params": "#f28e2b",
    "gradients": "#ffbe7d", "optimizer_states": "#59a14f", "activations": "#e15759",
    "logits_and_loss": "#b07aa1", "reference_model": "#76b7b2", "reference_pass": "#edc948", "cuda_context": "#9c755f", "allocator_reserve": "#bab0ac",
}
FITS, TIGHT, TOO_BIG = "fits", "tight", "does not fit"
BADGE_HELP = (f"Fits: the run takes at most {1 - DEFAULT_MARGIN:.0%} of the free memory. Tight: it fits only without "
              f"that {DEFAULT_MARGIN:.0%} to spare, and may run out when another program takes memory. Does not "
              "fit: lower the batch size or the max length, or press the Fit button.")
SUMMARY_HELP = ("The estimate at the busiest moment of a training step, against the memory free on this device "
                "now. The forward/backward pass peaks with the activations, the optimizer step with the "
                "optimizer states.")
_BADGE_COLOURS = {FITS: "#2e7d32", TIGHT: "#b26a00", TOO_BIG: "#c62828"}


def verdict(device_bytes: int, free_bytes: int, margin: float = DEFAULT_MARGIN) -> str:
    """Fits with the safety margin to spare, fits only without it (tight), or does not fit."""
    if device_bytes <= free_bytes * (1 - margin):
        return FITS
    return TIGHT if device_bytes <= free_bytes else TOO_BIG


class StackedBar(QWidget):
    """The bar itself: segments in estimate order, the free-memory mark, hover names."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._items: list[tuple[str, int]] = []
        self._free = 0
        self.setMinimumHeight(26)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMouseTracking(True)

    def sizeHint(self) -> QSize:
        return QSize(360, 28)

    def set_values(self, items: dict[str, int], free_bytes: int) -> None:
        self._items = [(name, value) for name, value in items.items() if value > 0]
        self._free = free_bytes
        self.update()

    def _scale(self) -> float:
        total = sum(value for _, value in self._items)
        span = max(total, self._free, 1) * 1.04  # room to show the mark past the end
        return (self.width() - 2) / span

    def _segments(self) -> list[tuple[str, int, QRectF]]:
        scale, x, found = self._scale(), 1.0, []
        for name, value in self._items:
            width = value * scale
            found.append((name, value, QRectF(x, 3, width, self.height() - 6)))
            x += width
        return found

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        frame = self.palette().color(QPalette.ColorRole.Mid)
        painter.fillRect(self.rect().adjusted(0, 2, 0, -2), self.palette().color(QPalette.ColorRole.Base))
        for name, _value, rect in self._segments():
            painter.fillRect(rect, QColor(ITEM_COLOURS.get(name, "#888888")))
        if self._free:
            x = 1 + self._free * self._scale()
            painter.setPen(QPen(self.palette().color(QPalette.ColorRole.WindowText), 2))
            painter.drawLine(int(x), 0, int(x), self.height())
        painter.setPen(QPen(frame, 1))
        painter.drawRect(self.rect().adjusted(0, 2, -1, -3))
        painter.end()

    def event(self, event) -> bool:
        if event.type() == QHelpEvent.Type.ToolTip:
            x = event.pos().x()
            hit = next(((name, value) for name, value, rect in self._segments() if rect.left() <= x <= rect.right()),
                       None)
            if hit is not None:
                QToolTip.showText(event.globalPos(), f"{ITEM_LABELS.get(hit[0], hit[0])}: {human_bytes(hit[1])}. "
                                  f"{ITEM_HELP.get(hit[0], '')}", self)
            elif self._free:
                QToolTip.showText(event.globalPos(), f"free memory: {human_bytes(self._free)}. {FREE_HELP}", self)
            return True
        return super().event(event)


class MemoryLegend(QWidget):
    """A name, a colour and a size per item of the estimate, two to a row, and the free-memory line;
    each entry's tooltip says what it is (``ITEM_HELP``, ``FREE_HELP``)."""

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.entries: dict[str, QLabel] = {}
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(12)
        grid.setVerticalSpacing(0)
        for index, name in enumerate((*ITEM_LABELS, "free")):
            entry = QLabel(self)
            entry.setTextFormat(Qt.TextFormat.RichText)
            entry.setWordWrap(True)  # a narrow window wraps an entry rather than widening the page
            entry.setToolTip(ITEM_HELP.get(name, FREE_HELP))
            entry.hide()
            grid.addWidget(entry, index // 2, index % 2)
            self.entries[name] = entry
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)

    def set_values(self, items: dict[str, int], free_bytes: int) -> None:
        """Show the items that take memory, in the estimate's order, and the free memory last."""
        shown = [(name, value) for name, value in items.items() if value > 0 and name in ITEM_LABELS]
        grid = self.layout()
        for entry in self.entries.values():
            grid.removeWidget(entry)
            entry.hide()
        mark = self.palette().color(QPalette.ColorRole.WindowText).name()
        rows = [(name, ITEM_COLOURS[name], "■", ITEM_LABELS[name], value) for name, value in shown]
        if free_bytes:
            rows.append(("free", mark, "┃", "free memory (the line)", free_bytes))
        for index, (name, colour, symbol, label, value) in enumerate(rows):
            entry = self.entries[name]
            size = human_bytes(value).replace(" ", "&nbsp;")
            entry.setText(f'<span style="color:{colour}">{symbol}</span>&nbsp;{html.escape(label)} {size}')
            grid.addWidget(entry, index // 2, index % 2)
            entry.show()

    def visible_text(self) -> str:
        """The entries shown, in order, as plain text."""
        return " ".join(QTextDocumentFragment.fromHtml(entry.text()).toPlainText()
                        for entry in self.entries.values() if not entry.isHidden())


class MemoryBar(QWidget):
    """The bar, its legend, the fits / tight / does-not-fit badge and the "Fit to my GPU" button."""

    fitRequested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.bar = StackedBar()
        self.bar.setAccessibleName("Memory estimate")
        self.badge = QLabel()
        self.badge.setAccessibleName("Fits the device")
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setMinimumWidth(96)
        self.badge.setToolTip(BADGE_HELP)
        self.summary = QLabel("Estimating memory…")
        self.summary.setWordWrap(True)
        self.summary.setToolTip(SUMMARY_HELP)
        self.legend = MemoryLegend()
        self.fit_button = QPushButton("Fit to my GPU")
        self.fit_button.setToolTip("Find the settings that fit this device's free memory: the longest max length "
                                   "your data needs, then the largest batch, then the highest rank; memory savers "
                                   "(gradient checkpointing, an 8-bit optimizer, a 4-bit base) only when needed")
        self.fit_button.clicked.connect(self.fitRequested)
        self.explanations = QLabel()
        self.explanations.setWordWrap(True)
        self.explanations.setTextFormat(Qt.TextFormat.RichText)
        self.explanations.hide()

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.bar, 1)
        top.addWidget(self.badge)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(self.fit_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.legend)
        layout.addLayout(bottom)
        layout.addWidget(self.explanations)
        self._verdict: Optional[str] = None

    @property
    def verdict(self) -> Optional[str]:
        return self._verdict

    def set_device_kind(self, kind: str) -> None:
        self.fit_button.setText("Fit to my GPU" if kind == "cuda" else "Fit to my memory")

    def show_estimate(self, estimate: MemoryEstimate, free_bytes: int, device_name: str) -> None:
        self.bar.set_values(estimate.items, free_bytes)
        self._verdict = verdict(estimate.device_bytes, free_bytes)
        colour = _BADGE_COLOURS[self._verdict]
        self.badge.setText(self._verdict)
        self.badge.setStyleSheet(f"QLabel {{ background: {colour}; color: white; border-radius: 4px; "
                                 "padding: 2px 8px; font-weight: 600; }")
        phase = "optimizer step" if estimate.peak_phase == "optimizer_step" else "forward/backward pass"
        self.summary.setText(f"{human_bytes(estimate.device_bytes)} of {human_bytes(free_bytes)} free on "
                             f"{device_name} (the peak comes in the {phase})")
        self.legend.set_values(estimate.items, free_bytes)
        breakdown = "\n".join(f"{ITEM_LABELS[name]}: {human_bytes(value)}" for name, value in estimate.items.items()
                              if value > 0)
        self.bar.setToolTip(f"{breakdown}\nfree: {human_bytes(free_bytes)}")

    def show_problem(self, message: str) -> None:
        """No estimate (an unknown architecture, a setting out of range): say why instead."""
        self._verdict = None
        self.bar.set_values({}, 0)
        self.badge.setText("")
        self.badge.setStyleSheet("")
        self.legend.set_values({}, 0)
        self.summary.setText(f"No memory estimate: {message}")

    def show_explanations(self, lines: list[str], suggestion: Optional[str] = None) -> None:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        extra = f"<p><b>What would fit:</b> {html.escape(suggestion)}</p>" if suggestion else ""
        self.explanations.setText(f"<ul style='margin-left:12px'>{items}</ul>{extra}")
        self.explanations.setVisible(bool(lines or suggestion))

    def clear_explanations(self) -> None:
        self.explanations.clear()
        self.explanations.hide()
