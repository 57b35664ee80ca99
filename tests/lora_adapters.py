"""Real PEFT adapters on the tiny model, made without training: lora_B is randomised
(PEFT starts it at zero) so that each adapter visibly changes the model's output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tiny_model import CHATML_TEMPLATE

PIRATE_TEMPLATE = CHATML_TEMPLATE.replace("message['content']", "message['content'] + ' arr'")


def write_peft_adapter(base: Path, folder: Path, *, rank: int = 4, alpha: Optional[float] = None, seed: int = 1,
                       targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj"), scale: float = 0.5,
                       **lora_options: Any) -> Path:
    """A stock PEFT folder (adapter_config.json + adapter_model.safetensors), nothing else."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha or 2 * rank, target_modules=list(targets), task_type="CAUSAL_LM",
                        **lora_options)
    # lora_A is drawn by PEFT from torch's global generator: seeded here (and the caller's state
    # kept), so that an adapter is the same whatever tests ran before it in the process.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * scale
    peft_model.save_pretrained(folder)
    return Path(folder)


def library_adapter(base: Path, name: str, *, meta: Optional[dict[str, Any]] = None, **options: Any) -> Path:
    """A library entry as training writes one: PEFT files, studio.json with the base fingerprint, card."""
    from engine.adapters.library import save_adapter
    from engine.models.store import model_fingerprint

    rank = options.get("rank", 4)
    studio = {
        "base_model": str(base),
        "base_model_path": str(base),
        "base_model_fingerprint": model_fingerprint(base),
        "method": "lora",
        "rank": rank,
        "alpha": options.get("alpha") or 2 * rank,
        "dataset": "/data/pirate.jsonl",
        "final_loss": 1.25,
        "loss_history": [[1, 2.0], [2, 1.5], [3, 1.25]],
        "created": "2026-01-02T03:04:05+00:00",
        "hardware": "CPU",
        "chat_template": PIRATE_TEMPLATE,
        **(meta or {}),
    }
    return save_adapter(name, lambda folder: write_peft_adapter(base, folder, **options), studio,
                        lambda final: f"# {final}\n\nA test adapter.\n")


def empty_safetensors(path: Path) -> Path:
    """A valid safetensors file with no tensors: a header and nothing else."""
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    return path


def merge_in_dialog(qtbot: Any, adapters_page: Any, dialog: Any, timeout_ms: int) -> None:
    """Press Merge in the Adapters page's merge dialog and wait until the merged model is in
    the store and the dialog's check has ended."""
    with qtbot.waitSignal(adapters_page.modelsChanged, timeout=timeout_ms):
        task = dialog.merge()
    if task.running:
        with qtbot.waitSignal(task.finished, timeout=timeout_ms):
            pass
    assert "Merged and checked" in dialog.result_view.toPlainText()
