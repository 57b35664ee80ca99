"""What a finished run leaves behind: the adapter in the library (or, for full fine-tuning,
a model in the model store) with its ``studio.json`` and model card, and the check that
a checkpoint is whole before a run resumes from it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from engine.run.config import RunConfig

# Settings worth keeping with the result, by method family (the rest are in the run's config.json).
_COMMON = ("method", "targets", "learning_rate", "batch_size", "grad_accum", "max_length", "max_steps", "epochs",
           "seed", "optimizer", "lr_scheduler", "warmup_steps", "weight_decay", "max_grad_norm", "grad_checkpointing",
           "batching", "train_on", "val_fraction")


def run_meta(config: RunConfig, model_path: Path, tokenizer: Any, device: str, precision: str, dataset_hash: str,
             loss_history: list[tuple[int, float]], step: int, final_loss: Optional[float], duration_s: float,
             run_dir: Path, state: Any) -> dict[str, Any]:
    """``studio.json``: how the result was made, from what, on what, and how the loss went."""
    from engine.hardware import detect_devices, versions
    from engine.models.store import model_fingerprint

    device_info = next((d for d in detect_devices() if d.torch_device == device), None)
    settings = {name: getattr(config, name) for name in _COMMON if hasattr(config, name)}
    settings["learning_rate"] = config.lr
    meta: dict[str, Any] = {
        "base_model": config.model,
        "base_model_path": str(model_path),
        "base_model_fingerprint": model_fingerprint(model_path),
        **settings,
        **_method_settings(config),
        **objective_settings(config),
        "precision": precision,
        "dataset": str(Path(config.dataset).resolve()) if Path(config.dataset).exists() else config.dataset,
        "dataset_sha256": dataset_hash,
        "steps": step,
        "final_loss": final_loss,
        "loss_history": [[s, loss] for s, loss in loss_history],
        "duration_s": round(duration_s, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": device_info.name if device_info else device,
        "chat_template": tokenizer.chat_template,
        "run_dir": str(run_dir),
        "versions": versions(),
    }
    eval_history = [[entry["step"], entry["eval_loss"]] for entry in state.log_history if "eval_loss" in entry]
    if eval_history:
        meta.update(eval_history=eval_history, final_eval_loss=eval_history[-1][1])
    if state.best_global_step and state.best_metric is not None and config.early_stopping_patience:
        meta.update(best_step=state.best_global_step, best_eval_loss=state.best_metric)
    return meta


def objective_settings(config: RunConfig) -> dict[str, Any]:
    """What the result learned from, with the settings of its objective (only those that apply)."""
    settings: dict[str, Any] = {"objective": config.objective}
    if config.from_adapter:
        settings["from_adapter"] = config.from_adapter
    if not config.is_preference:
        return settings
    settings["beta"] = config.beta
    if config.objective == "dpo":
        settings.update(dpo_loss=config.dpo_loss, reference_free=config.reference_free, sft_weight=config.sft_weight)
        if config.dpo_loss == "robust":
            settings["label_smoothing"] = config.label_smoothing
    elif config.objective == "simpo":
        settings["simpo_gamma"] = config.simpo_gamma
    elif config.objective == "kto":
        settings.update(desirable_weight=config.desirable_weight, undesirable_weight=config.undesirable_weight)
    return settings


def _method_settings(config: RunConfig) -> dict[str, Any]:
    if config.uses_lora:
        settings = {"rank": config.rank, "alpha": config.alpha, "dropout": config.dropout,
                    "use_rslora": config.use_rslora}
        if config.method == "qlora":
            settings.update(quant=config.quant, double_quant=config.double_quant, compute_dtype=config.compute_dtype)
        return settings
    if config.uses_prompt:
        settings = {"num_virtual_tokens": config.num_virtual_tokens}
        if config.method == "prompt":
            settings.update(prompt_init=config.prompt_init, prompt_init_text=config.prompt_init_text)
        if config.method == "prefix":
            settings["prefix_projection"] = config.prefix_projection
        return settings
    return {}


def model_card(name: str, meta: dict[str, Any]) -> str:
    loss = f"{meta['final_loss']:.4f}" if meta.get("final_loss") is not None else "n/a"
    method = meta["method"]
    rows = []
    if "rank" in meta:
        rows.append(f"| rank / alpha | {meta['rank']} / {meta['alpha']}{' (rsLoRA)' if meta.get('use_rslora') else ''} |")
        rows.append(f"| targets | {meta['targets']} |")
    if "quant" in meta:
        rows.append(f"| base quantisation | {meta['quant']}{', double' if meta.get('double_quant') else ''} |")
    if "num_virtual_tokens" in meta:
        rows.append(f"| virtual tokens | {meta['num_virtual_tokens']} |")
    if meta.get("objective", "sft") != "sft":
        start = f", from `{meta['from_adapter']}`" if meta.get("from_adapter") else ""
        rows.append(f"| objective | {meta['objective'].upper()} (beta {meta['beta']:g}){start} |")
    rows += [f"| learning rate | {meta['learning_rate']:g} ({meta['lr_scheduler']}) |",
             f"| steps | {meta['steps']} |",
             f"| final training loss | {loss} |",
             f"| dataset | `{Path(meta['dataset']).name}` (sha256 {meta['dataset_sha256'][:12]}) |",
             f"| hardware | {meta['hardware']} ({meta['precision']}) |"]
    table = "| setting | value |\n| --- | --- |\n" + "\n".join(rows) + "\n\n"
    if method == "full":
        return (f"# {name}\n\nA full fine-tune of `{meta['base_model']}`, trained with LoRA Studio.\n\n{table}"
                "Load it with stock transformers:\n\n```python\nfrom transformers import AutoModelForCausalLM\n"
                "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n```\n")
    return (f"# {name}\n\nA {method.upper()} adapter for `{meta['base_model']}`, trained with LoRA Studio.\n\n{table}"
            "Load it with stock PEFT:\n\n```python\nfrom peft import PeftModel\n"
            "model = PeftModel.from_pretrained(base_model, \"path/to/this/folder\")\n```\n")


def save_adapter(config: RunConfig, run_dir: Path, model: Any, meta: dict[str, Any]) -> Path:
    from engine.adapters.library import save_adapter as save_into_library

    name = config.name or run_dir.name
    # Only the adapter that trained: a preference run started from an adapter also holds TRL's frozen
    # copy of it (engine.train.preference), which is not part of the result.
    return save_into_library(name, lambda folder: model.save_pretrained(folder, selected_adapters=["default"]), meta,
                             lambda final: model_card(final, meta))


def save_model(config: RunConfig, run_dir: Path, model: Any, tokenizer: Any, meta: dict[str, Any]) -> Path:
    """A full fine-tune as a Hugging Face folder in the model store, with tokenizer and chat template."""
    from engine.core.atomic import write_json
    from engine.models.store import save_trained_model

    name = config.name or run_dir.name

    def write(folder: Path, final_name: str) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        write_json(folder / "studio.json", meta)
        (folder / "README.md").write_text(model_card(final_name, meta), encoding="utf-8")

    return save_trained_model(name, write, {"base_model": config.model, "run_dir": str(run_dir)})
