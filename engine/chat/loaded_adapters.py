"""Adapters as a chat session holds them: what one loaded adapter is, the chat template read
from its folder beside the weights, and how a failed load is undone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.models.tokenizer import folder_chat_template


@dataclass
class LoadedAdapter:
    """An adapter (or a combination) inside the session's PeftModel."""

    peft_name: str  # its key inside the PeftModel (module keys cannot hold a path's dots)
    chat_template: Optional[str]
    uses_dora: bool
    template_of: str = "the adapter"  # whose chat template it is, for a refusal ("adapter 'x'")
    # A plain LoRA adapter shares a batch with other adapters and the base (PEFT's mixed batches);
    # DoRA and prompt-learning adapters answer in batches of their own.
    mixes: bool = False


def saved_chat_template(path: Path, meta: dict[str, Any]) -> Optional[str]:
    """The template an adapter was trained with: recorded in ``studio.json``, or, for a
    training checkpoint, in the tokenizer files the trainer saved beside it."""
    if isinstance(meta.get("chat_template"), str) and meta["chat_template"]:
        return meta["chat_template"]
    return folder_chat_template(path)


def strip_adapter_layers(model: Any) -> None:
    """Put back the original layers that a failed ``PeftModel.from_pretrained`` wrapped."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
