"""A model's tokenizer, loaded the one way every part of the engine and the studio loads it:
with the model's own Python code only when the user trusted it (``engine.models.trust``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_tokenizer(model_path: Path) -> Any:
    """The tokenizer in the model folder ``model_path`` (transformers' ``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    from engine.models import trust

    return AutoTokenizer.from_pretrained(model_path, **trust.load_options(Path(model_path)))
