"""What an evaluation compares: candidates that answer the same prompts. The base model alone,
an adapter (a library name, a PEFT folder, a run's checkpoint), a combination of adapters, all
on one loaded base, or another model (a merged adapter, a full fine-tune) that answers on its own.

Each is refused before any model loads when it cannot be used: an unknown name, or an adapter
trained on another base model (named with both bases).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from engine.adapters.library import read_adapter_meta, resolve_adapter
from engine.chat.blends import AdapterChoice, Blend
from engine.errors import StudioError

BASE_LABEL = "base"


@dataclass(frozen=True)
class Candidate:
    """One candidate: the label results call it by, and what answers for it."""

    label: str
    choice: AdapterChoice = None  # on the evaluated base: None (the base), an adapter folder, or a Blend
    model: Optional[str] = None  # another model that answers on its own, instead of the base
    path: Optional[Path] = None  # the adapter's folder (None for the base, a combination, a model)

    @property
    def is_base(self) -> bool:
        return self.model is None and self.choice is None

    def describe(self) -> dict:
        """The candidate as the results document names it."""
        ref = self.model or (self.choice.label if isinstance(self.choice, Blend) else self.choice)
        return {"label": self.label, "ref": ref, "path": str(self.path) if self.path else None,
                "kind": _kind(self)}


def _kind(candidate: Candidate) -> str:
    if candidate.model is not None:
        return "model"
    if candidate.choice is None:
        return "base"
    return "combination" if isinstance(candidate.choice, Blend) else "adapter"


def resolve_candidates(model: str, adapters: Iterable[str] = (), *, include_base: bool = True,
                       blends: Iterable[Blend] = (), models: Iterable[str] = ()) -> list[Candidate]:
    """The candidates, base first, each with a label no other has; StudioError (one line) for an
    adapter that is not in the library or not a PEFT folder, or one trained on another base."""
    from engine.models.store import model_fingerprint, resolve_model

    candidates = [Candidate(BASE_LABEL)] if include_base else []
    fingerprint: Optional[str] = None
    for ref in adapters:
        path = resolve_adapter(ref)
        recorded = read_adapter_meta(path).get("base_model_fingerprint")
        if recorded:
            fingerprint = fingerprint or model_fingerprint(resolve_model(model))
            if recorded != fingerprint:
                made_for = read_adapter_meta(path).get("base_model") or "another base model"
                raise StudioError(f"adapter {ref!r} was trained on {made_for}, not on {model}: evaluate it with "
                                  f"--model {made_for}")
        candidates.append(Candidate(_unique(_adapter_label(path), candidates), str(path), path=path))
    for blend in blends:
        for ref, _weight in blend.parts:
            resolve_adapter(ref)
        candidates.append(Candidate(_unique(blend.label, candidates), blend))
    for other in models:
        resolve_model(other)
        candidates.append(Candidate(_unique(Path(str(other)).name or str(other), candidates), model=str(other)))
    if not candidates:
        raise StudioError("nothing to evaluate: name an adapter, a model, or include the base")
    return candidates


def _adapter_label(path: Path) -> str:
    """A library adapter's name; a run's checkpoint as ``run/checkpoint-N``; else the folder's name."""
    if path.name.startswith("checkpoint-") and path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


def _unique(label: str, taken: list[Candidate]) -> str:
    labels = {candidate.label for candidate in taken}
    if label not in labels:
        return label
    number = 2
    while f"{label} ({number})" in labels:
        number += 1
    return f"{label} ({number})"
