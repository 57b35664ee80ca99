"""What chat can be asked to answer with: one adapter, a ``Blend`` of several, the base model,
or a ``GgufFile`` (an exported model, answered by llama.cpp: ``engine.chat.gguf_session``).

An ``AdapterChoice`` names one of them; ``choice_label`` says it the way people read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

from engine.adapters.combine import check_weight
from engine.errors import StudioError
from engine.run.rundir import RunDir


@dataclass(frozen=True)
class Blend:
    """Several adapters at once, each one's change to the weights scaled: ΔW = Σ wᵢ·ΔWᵢ.

    Built in memory with PEFT's ``cat`` combination, which is exact (no SVD truncation,
    no rank limit); nothing is written to the library.
    """

    parts: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise StudioError("a combination needs at least one adapter")
        for ref, weight in self.parts:
            check_weight(ref, weight)
        if all(weight == 0 for _ref, weight in self.parts):
            raise StudioError("a combination with every weight 0 is the base model: pick the base model instead")

    @property
    def label(self) -> str:
        return " + ".join(_short_ref(ref) if weight == 1 else f"{weight:g}×{_short_ref(ref)}"
                          for ref, weight in self.parts)


@dataclass(frozen=True)
class GgufFile:
    """A GGUF file (an export, usually), answered by llama.cpp instead of the loaded model."""

    path: str

    @property
    def label(self) -> str:
        return f"{Path(self.path).name} (llama.cpp)"


AdapterChoice = Union[str, Blend, None]  # a library name or PEFT folder, a combination, or the base
ColumnChoice = Union[AdapterChoice, GgufFile]  # what a chat or a comparison's column answers with


def choice_label(choice: ColumnChoice) -> str:
    """How an adapter choice is named to people: ``base model``, a name, ``a + 0.5×b``, or a file."""
    if choice is None:
        return "base model"
    return choice.label if isinstance(choice, (Blend, GgufFile)) else _short_ref(choice)


def _short_ref(ref: str) -> str:
    """A library name as it is; a folder by its name (with its run for a training checkpoint)."""
    path = Path(ref)
    if len(path.parts) == 1:
        return ref
    if path.parent.name == RunDir(path.parent.parent).checkpoints.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name
