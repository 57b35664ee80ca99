"""A model's tokenizer, loaded the one way every part of the engine and the studio loads it:
with the model's own Python code only when the user trusted it (``engine.models.trust``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def load_tokenizer(model_path: Path) -> Any:
    """The tokenizer in the model folder ``model_path`` (transformers' ``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    from engine.models import trust

    return AutoTokenizer.from_pretrained(model_path, **trust.load_options(Path(model_path)))


def folder_chat_template(folder: Path) -> Optional[str]:
    """The chat template saved in a model or checkpoint folder: ``chat_template.jinja``, else the
    one inside ``tokenizer_config.json`` (where older transformers kept it); None without one."""
    jinja = Path(folder) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        tokenizer_config = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = tokenizer_config.get("chat_template") if isinstance(tokenizer_config, dict) else None
    return template if isinstance(template, str) and template else None
