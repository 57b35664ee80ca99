"""Checks that refuse a run before it starts, with a sentence that says why and what to pick.

``engine.run.config.RunConfig.validate`` refuses what is wrong anywhere; this module refuses
what is wrong *here*: a precision the device cannot compute in, 4-bit layers or 8-bit
optimizers that bitsandbytes cannot run on the device, a method the architecture cannot
take, module names the model does not have. Device capabilities are probed with a few
tiny real operations, not guessed from names, so a new bitsandbytes or a new device is
judged by what it does.

It imports torch; callers on a UI thread run it in the background.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from engine.core import choices
from engine.run.config import RunConfig
from engine.errors import StudioError, first_line

_LIMIT = 240  # characters of a library's error kept in a preflight message


@dataclass(frozen=True)
class Resolved:
    """What ``auto`` settings become on this machine."""

    device: str  # a torch device: cuda:0, mps, cpu
    precision: str  # fp32 | bf16 | fp16


def resolve_device(config: RunConfig) -> str:
    from engine.hardware import best_device, detect_devices
    from engine.train import distributed

    if config.device == "auto":
        device = best_device().torch_device
    else:
        available = [info.torch_device for info in detect_devices()]
        wanted = "cuda:0" if config.device == "cuda" else config.device
        if wanted not in available:
            raise StudioError(f"device {config.device!r} is not available here; choose auto or one of "
                              f"{', '.join(available)}")
        device = wanted
    if device.startswith("cuda") and distributed.world_size() > 1:
        device = f"cuda:{distributed.local_rank()}"  # under torchrun each rank trains on its own GPU
    return device


def resolve_precision(config: RunConfig, device: str) -> str:
    import torch

    on_gpu = device.startswith("cuda")
    if config.precision == "auto":
        return choices.resolve_precision("auto", "cuda" if on_gpu else "cpu",
                                         on_gpu and torch.cuda.is_bf16_supported())
    if config.precision == "bf16" and device == "cpu":
        # CPU autocast computes in bf16 (slowly where the CPU lacks bf16 instructions), and pure
        # bf16 full fine-tuning halves what a run holds in memory there.
        return "bf16"
    if config.precision in ("fp16", "bf16") and not on_gpu:
        raise StudioError(f"{config.precision} mixed precision needs a CUDA GPU; on {device} use fp32 (or auto)")
    if config.precision == "bf16" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(device)
        raise StudioError(f"{name} cannot compute in bf16 (it came with Ampere GPUs): use fp16, which trains "
                          "with loss scaling, or auto")
    return config.precision


def check(config: RunConfig, model_path: Optional[Path] = None) -> Resolved:
    """Raise a StudioError for the first choice that cannot run here; else what ``auto`` resolves to."""
    config.validate()
    device = resolve_device(config)
    precision = resolve_precision(config, device)
    problem = choices.pure_bf16_problem(config.pure_bf16, config.method, precision)
    if problem:
        raise StudioError(problem)
    if config.method == "qlora":
        _check_quantised_layers(config.quant, device)
        compute = precision if config.compute_dtype == "auto" else config.compute_dtype
        if compute in ("bf16", "fp16") and not device.startswith("cuda"):
            raise StudioError(f"4-bit layers computing in {compute} need a CUDA GPU; on {device} "
                              "set the compute dtype to fp32 (or the precision to auto)")
    if config.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        _check_bnb_optimizer(config.optimizer, device)
    if config.deepspeed is not None:
        _check_deepspeed(Path(config.deepspeed))
    if config.objective == "kto" and config.batch_size < 2:
        raise StudioError("KTO measures each answer against the other answers in its batch: set the batch size "
                          "to 2 or more")
    if model_path is not None:
        check_model(config, model_path)
    return Resolved(device=device, precision=precision)


def check_model(config: RunConfig, model_path: Path) -> None:
    """Choices the architecture decides: padding-free attention, and whether the method
    (with its target modules) attaches to this architecture and trains."""
    from engine.models import trust
    from engine.models.store import check_loadable

    model_config = check_loadable(model_path)
    if config.batching == "padding_free":
        text = getattr(model_config, "text_config", None) or model_config
        if getattr(text, "attn_logit_softcapping", None):
            raise StudioError(f"{model_config.model_type} soft-caps its attention scores, which padding-free "
                              "batching cannot do without flash-attention: use padded batches")
    if config.method != "full" and not trust.needs_code(model_path):
        # A model with its own code is not rebuilt here: its classes are the user's to run, not the preflight's.
        _check_method_on_architecture(config, model_config)
    if config.from_adapter:
        start_adapter(config, model_path)


def start_adapter(config: RunConfig, model_path: Path) -> Path:
    """The folder of the adapter the run starts from (``from_adapter``), once it is known to fit:
    a LoRA or DoRA adapter, trained on this very base, for a LoRA-family or full run."""
    from engine.adapters.library import read_adapter_meta, read_peft_config, resolve_adapter
    from engine.models.store import model_fingerprint

    ref = str(config.from_adapter)
    folder = resolve_adapter(ref)
    if not (config.uses_lora or config.method == "full"):
        raise StudioError(f"a run can start from an adapter with LoRA, DoRA, QLoRA or full fine-tuning, not "
                          f"{choices.METHOD_LABELS[config.method]}")
    if read_peft_config(folder).get("peft_type") != "LORA":
        raise StudioError(f"adapter {ref!r} is not a LoRA or DoRA adapter, so a run cannot start from it")
    meta = read_adapter_meta(folder)
    recorded = meta.get("base_model_fingerprint")
    if recorded and recorded != model_fingerprint(model_path):
        raise StudioError(f"adapter {ref!r} was trained on {meta.get('base_model') or 'another base model'}, not on "
                          f"{config.model}: start from it with that model, or train on {config.model} from its base")
    return folder


def check_data_objective(config: RunConfig, source_format: str) -> None:
    """Refuse data the objective cannot learn from (a preference file given to SFT, an SFT file
    given to DPO, unpaired answers given to a paired objective), in the data module's words."""
    from engine.data.preference import objective_problem

    problem = objective_problem(source_format, config.objective)
    if problem:
        raise StudioError(problem)


# probes ------------------------------------------------------------------------------------------
@functools.cache
def _check_quantised_layers(quant: str, device: str) -> None:
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        raise StudioError("QLoRA needs the bitsandbytes package, which is not installed: pip install bitsandbytes, "
                          "or train LoRA") from None
    kind = "8-bit" if quant == "int8" else f"4-bit {quant.upper()}"
    try:
        weight = torch.randn(64, 64, device=device)
        if quant == "int8":
            layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type=quant, compute_dtype=torch.float32)
        layer.weight.data = weight.cpu()
        layer = layer.to(device)
        layer(torch.randn(2, 64, device=device))
    except Exception as exc:
        raise StudioError(f"bitsandbytes {getattr(bnb, '__version__', '')} cannot run {kind} layers on {device} "
                          f"({first_line(exc, _LIMIT)}): train LoRA instead, or use a CUDA GPU") from None


@functools.cache
def _check_bnb_optimizer(optimizer: str, device: str) -> None:
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        raise StudioError(f"the {optimizer} optimizer comes from bitsandbytes, which is not installed: "
                          "pip install bitsandbytes, or use adamw") from None
    classes = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit", "paged_adamw_32bit": "PagedAdamW32bit"}
    try:
        # Above 4096 elements, so the 8-bit state (not the 32-bit fallback for small tensors) is tried.
        parameter = torch.nn.Parameter(torch.zeros(8192, device=device))
        step = getattr(bnb.optim, classes[optimizer])([parameter], lr=1e-3)
        parameter.grad = torch.ones_like(parameter)
        step.step()
    except Exception as exc:
        raise StudioError(f"bitsandbytes cannot run the {optimizer} optimizer on {device} ({first_line(exc, _LIMIT)}): "
                          "use adamw") from None


def _check_deepspeed(config_file: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise StudioError("the run names a DeepSpeed config but DeepSpeed is not installed: pip install deepspeed "
                          "on the machines that run it, or remove deepspeed from the config")
    if not config_file.is_file():
        raise StudioError(f"DeepSpeed config {config_file} not found")


def _check_method_on_architecture(config: RunConfig, model_config: Any) -> None:
    """Attach the method, with its targets, to a two-layer copy of the architecture (built
    from its config) and train it one step: what fails there fails on the real model too,
    and fails now in a second instead of after the model has loaded. When it fails, the
    methods that do work on the copy are named instead.

    A copy that cannot be built says nothing about the method, so the run goes ahead."""
    from engine.core.choices import METHOD_LABELS

    tiny = _tiny_copy(model_config)
    problem = _try_method(config, tiny)
    if problem is None:
        return
    others = [method for method in ("lora", "prompt", "ptuning", "prefix")
              if method != config.method and _try_method(replace(config, method=method, targets="all-linear"),
                                                         tiny) is None]
    working = ", ".join(METHOD_LABELS[method] for method in [*others, "full"])
    target_hint = " with these target modules" if config.uses_lora and config.targets != "all-linear" else ""
    raise StudioError(f"{METHOD_LABELS[config.method]}{target_hint} does not work with {model_config.model_type} "
                      f"models ({problem}); what does: {working}")


def _try_method(config: RunConfig, tiny_config: Any) -> Optional[str]:
    """Why ``config``'s method fails one training step on the tiny copy, or None when it trains
    (or when the copy cannot be built at all)."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.train.methods import attach

    try:
        model = AutoModelForCausalLM.from_config(tiny_config)
    except Exception:
        return None
    # The probe is about the architecture: 4-bit layers and text initialisation are checked apart.
    probe = replace(config, method="lora" if config.method == "qlora" else config.method, prompt_init="random",
                    num_virtual_tokens=2)
    try:
        peft_model = attach(model, probe, tokenizer=None)
        ids = torch.tensor([[1, 2, 3]])
        peft_model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    except StudioError:
        raise
    except Exception as exc:
        return first_line(exc, _LIMIT)
    return None


def _tiny_copy(model_config: Any) -> Any:
    """The same architecture with two small layers, for trying an operation in milliseconds."""
    import copy

    tiny = copy.deepcopy(model_config)
    text = getattr(tiny, "text_config", None) or tiny
    heads = getattr(text, "num_attention_heads", 4) or 4
    kv = getattr(text, "num_key_value_heads", None) or heads
    groups = max(1, heads // kv)
    _shrink(text, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2 * groups,
            num_key_value_heads=2, head_dim=16)
    if isinstance(getattr(text, "layer_types", None), list):
        _shrink(text, layer_types=text.layer_types[:2])
    vision = getattr(tiny, "vision_config", None)
    if vision is not None:
        _shrink(vision, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    return tiny


def _shrink(config: Any, **sizes: Any) -> None:
    """Set the sizes a config has; some are derived properties that cannot be set, and stay."""
    for name, value in sizes.items():
        if hasattr(config, name):
            try:
                setattr(config, name, value)
            except AttributeError:
                continue

