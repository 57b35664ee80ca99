"""The first-run guide: the demo in five steps, each opening the page it talks about.

It is a small window beside the main one, not in front of it (not modal), so the page
it opens can be used while the guide explains it. "Don't show again" is remembered in
the settings (``guide.dismissed``); Help ▸ First-run guide opens it at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from studio.settings import app_settings

DISMISSED_KEY = "guide.dismissed"


@dataclass(frozen=True)
class GuideStep:
    title: str
    page: str  # the sidebar title of the page the step opens
    text: str


STEPS = (
    GuideStep("Welcome", "Home",
              "LoRA Studio teaches a language model a new style or task with a small add-on, an adapter. "
              "This guide walks through the demo: a starter model, a sample dataset, a short training run "
              "and a chat with the result. Each step opens the page it talks about."),
    GuideStep("The starter model", "Models",
              "SmolLM2-135M-Instruct comes with the studio, small enough to train on a CPU in minutes. It is "
              "prepared the first time it is used. Your own models (a Hugging Face folder or a GGUF file) are "
              "added on this page."),
    GuideStep("The sample data", "Data",
              "pirate_persona is about three hundred questions answered by a pirate. The Data page shows how "
              "each row is read, which rows cannot be used, and which tokens the model will learn to write."),
    GuideStep("Train", "Train",
              "The starter model and the pirate sample are already chosen. Press Start (Ctrl+Enter) and watch "
              "the loss fall. The run goes on if you switch pages; the studio tells you when it ends."),
    GuideStep("Chat", "Chat",
              "Load the starter model and ask a question with \u201cNo adapter\u201d. Then pick the adapter the run "
              "made and ask again: the answer now comes from a pirate. Home lists every run with its curves."),
)


class FirstRunGuide(QDialog):
    stepShown = Signal(int)

    def __init__(self, show_page: Callable[[str], None], parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._show_page = show_page
        self._step = 0
        self.setWindowTitle("First steps with LoRA Studio")
        self.setModal(False)
        self.resize(460, 260)
        self.step_label = QLabel(self)
        self.title_label = QLabel(self)
        self.title_label.setTextFormat(Qt.TextFormat.RichText)
        self.text_label = QLabel(self)
        self.text_label.setWordWrap(True)
        self.text_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.dismiss_check = QCheckBox("Don't show this guide again", self)
        self.dismiss_check.setChecked(bool(app_settings().get(DISMISSED_KEY, False)))
        self.dismiss_check.toggled.connect(lambda checked: app_settings().set(DISMISSED_KEY, checked))
        self.back_button = QPushButton("Back", self)
        self.back_button.clicked.connect(lambda: self.show_step(self._step - 1))
        self.next_button = QPushButton("Next", self)
        self.next_button.setDefault(True)
        self.next_button.clicked.connect(self._next)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.close)
        buttons = QHBoxLayout()
        buttons.addWidget(self.dismiss_check, 1)
        buttons.addWidget(self.close_button)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.step_label)
        layout.addWidget(self.title_label)
        layout.addWidget(self.text_label, 1)
        layout.addLayout(buttons)
        self.show_step(0)

    @property
    def step(self) -> int:
        return self._step

    def show_step(self, step: int) -> None:
        """Explain step ``step`` and open its page."""
        self._step = max(0, min(step, len(STEPS) - 1))
        current = STEPS[self._step]
        self.step_label.setText(f"Step {self._step + 1} of {len(STEPS)}")
        self.title_label.setText(f"<h3>{current.title}</h3>")
        self.text_label.setText(current.text)
        self.back_button.setEnabled(self._step > 0)
        self.next_button.setText("Finish" if self._step == len(STEPS) - 1 else "Next")
        self._show_page(current.page)
        self.stepShown.emit(self._step)

    def _next(self) -> None:
        if self._step == len(STEPS) - 1:
            self.close()
        else:
            self.show_step(self._step + 1)
