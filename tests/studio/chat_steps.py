"""Steps the studio tests take in the Chat page, as a user does them, and the adapters they chat with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_chat_model(qtbot: Any, chat_page: Any, model_dir: Path, timeout_ms: int) -> None:
    """Pick ``model_dir`` in the Chat page, press Load and wait until its session is there."""
    chat_page.model_picker.set_ref(str(model_dir))
    with qtbot.waitSignal(chat_page.sessionChanged, timeout=timeout_ms):
        chat_page.load_button.click()


def make_adapter(model_dir: Path, folder: Path, seed: int = 1) -> Path:
    """A real PEFT LoRA adapter on the tiny model, with B randomised so that it changes replies."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from engine.models.store import model_fingerprint

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:  # zero at creation: the adapter would change nothing
                parameter.normal_(0.0, 1.0)
    peft_model.save_pretrained(folder)
    meta = {"base_model": str(model_dir), "base_model_fingerprint": model_fingerprint(model_dir), "method": "lora"}
    (folder / "studio.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder
