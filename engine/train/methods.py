"""What trains: the PEFT method attached to the loaded base model, or the whole model.

LoRA, DoRA and QLoRA wrap the chosen linear layers (a preset or the model's own module
names); prompt tuning, prefix tuning and P-tuning learn virtual tokens; full fine-tuning
trains every weight. Everything is stock peft, so the saved folder is a stock PEFT
adapter that ``PeftModel.from_pretrained`` loads anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.run.config import RunConfig
from engine.errors import StudioError

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
# Architectures that fuse projections name them differently (Phi-3: qkv_proj, gate_up_proj).
_PRESETS = {"q,v": (("q_proj", "v_proj"), ("qkv_proj",)), "attention": (ATTENTION_PROJECTIONS, ("qkv_proj", "o_proj"))}
# Never adapted: the output head (its size is the vocabulary) and vision towers' projections.
_NEVER_TARGETS = ("lm_head", "embed_out", "output_layer")


def linear_module_names(model: Any) -> list[str]:
    """The distinct short names of the model's adaptable linear layers, in model order
    (q_proj, k_proj, ..., down_proj): what a LoRA target list is written in."""
    import torch

    names: list[str] = []
    for full_name, module in model.named_modules():
        short = full_name.rsplit(".", 1)[-1]
        if _is_linear(module, torch) and short not in _NEVER_TARGETS and short not in names:
            names.append(short)
    return names


def model_module_names(model_path: Path) -> list[str]:
    """The linear layer names of the model in ``model_path``, read from a weightless copy built
    on the meta device: seconds and no memory, whatever the model's size."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models import trust

    options = trust.load_options(model_path)
    with init_empty_weights():
        return linear_module_names(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_path, **options),
                                                                    **options))


def _is_linear(module: Any, torch: Any) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    # bitsandbytes' 4- and 8-bit layers subclass nn.Linear; Conv1D-style GPT-2 layers do not, but
    # those architectures have no chat models in the catalog and are adapted through all-linear.
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt")


def lora_target_modules(model: Any, targets: str) -> Any:
    """The target list for peft: ``all-linear``, a preset resolved against the model's own
    module names, or the names given, each checked to exist."""
    if targets == "all-linear":
        return "all-linear"
    present = linear_module_names(model)
    if targets in _PRESETS:
        for wanted in _PRESETS[targets]:
            found = [name for name in wanted if name in present]
            if found:
                return found
        raise StudioError(f"this architecture has no {', '.join(_PRESETS[targets][0])} modules; "
                          f"use targets all-linear or pick from {', '.join(present)}")
    wanted = [name.strip() for name in targets.split(",") if name.strip()]
    missing = [name for name in wanted if name not in present]
    if missing:
        raise StudioError(f"the model has no module named {', '.join(missing)}; its linear layers are "
                          f"{', '.join(present)}")
    return wanted


def attach(model: Any, config: RunConfig, tokenizer: Any) -> Any:
    """The model ready to train with ``config.method``: a PeftModel, or the model itself for full."""
    if config.method == "full":
        return _full(model)
    if config.uses_lora:
        return _lora(model, config)
    return _prompt_learning(model, config, tokenizer)


def _full(model: Any) -> Any:
    for parameter in model.parameters():
        parameter.requires_grad = True
    return model


def _lora(model: Any, config: RunConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=lora_target_modules(model, config.targets),
        use_dora=config.method == "dora",
        use_rslora=config.use_rslora,
        task_type="CAUSAL_LM",
    )
    # autocast_adapter_dtype (the default) keeps the adapters in fp32 over a 16-bit or 4-bit base:
    # the optimizer then updates full-precision weights, and fp16 loss scaling can unscale them.
    return get_peft_model(model, lora)


def _prompt_learning(model: Any, config: RunConfig, tokenizer: Any) -> Any:
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model

    if config.method == "prompt":
        peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)
    elif config.method == "prefix":
        peft_config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens,
                                         prefix_projection=config.prefix_projection)
    else:
        peft_config = PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=config.num_virtual_tokens)
    peft_model = get_peft_model(model, peft_config)
    if config.method == "prompt" and config.prompt_init == "text":
        _init_prompt_from_text(peft_model, tokenizer, config.prompt_init_text or "")
    # Virtual tokens train in fp32 whatever the base's dtype, as LoRA adapters do.
    for parameter in peft_model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return peft_model


def _init_prompt_from_text(peft_model: Any, tokenizer: Any, text: str) -> None:
    """Start the virtual tokens from the embeddings of ``text``'s tokens, repeated to fill them.

    This is what peft's TEXT init does, done here so that the saved config says RANDOM and
    names no tokenizer path: the adapter then loads on any machine, where a TEXT config
    would look for the tokenizer it was made with.
    """
    import torch

    count = peft_model.peft_config["default"].num_virtual_tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise StudioError("the prompt tuning init text has no tokens: give a few words, or init random")
    ids = (ids * (count // len(ids) + 1))[:count]
    embeddings = peft_model.get_input_embeddings()
    with torch.no_grad():
        initial = embeddings(torch.tensor(ids, device=embeddings.weight.device)).detach().clone()
        encoder = peft_model.prompt_encoder["default"].embedding
        encoder.weight.copy_(initial.to(encoder.weight.dtype))
