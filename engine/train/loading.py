"""Loading the base model the way the run's method and precision want it.

- A frozen base (LoRA, DoRA, prompt methods) loads in the compute precision: bf16/fp16 on
  a GPU halves the weights' memory, and the fp32 adapters carry the updates.
- Full fine-tuning loads fp32 weights: the optimizer updates full-precision masters and
  the Trainer's autocast computes in 16 bits (standard mixed precision). In pure bf16
  (``engine.train.pure_bf16``) it loads bf16 weights and trains them as they are.
- QLoRA loads the linear layers through bitsandbytes in 4 bits (NF4 or FP4, optionally
  double-quantised) or 8 bits; embeddings, norms and the head stay in the compute dtype.
  peft's ``prepare_model_for_kbit_training`` is not called: it would upcast every
  remaining 16-bit weight to fp32, which costs memory the estimate does not promise.
  The 4-bit layers keep the layout they train in (``keep_4bit_training_layout``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from engine.run.config import RunConfig
from engine.train import batching, pure_bf16

DTYPES = ("fp32", "bf16", "fp16")


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def weights_dtype(config: RunConfig, precision: str) -> str:
    """The dtype of the base weights as loaded: fp32 for full fine-tuning (bf16 in pure bf16) or
    fp32 runs, else the precision."""
    if config.method == "full":
        return "bf16" if pure_bf16.applies(config, precision) else "fp32"
    return precision


def quantised_compute_dtype(config: RunConfig, precision: str) -> str:
    return precision if config.compute_dtype == "auto" else config.compute_dtype


def load_model(model_path: Path, config: RunConfig, precision: str, device: str) -> Any:
    """The base model on ``device``, ready for ``engine.train.methods.attach``."""
    from transformers import AutoModelForCausalLM

    from engine.models.weights import model_options

    options: dict[str, Any] = {"attn_implementation": attention_implementation(config, device, precision),
                               **model_options(model_path)}
    if config.method == "qlora":
        compute = quantised_compute_dtype(config, precision)
        options.update(quantization_config=quantisation(config, compute), dtype=torch_dtype(compute),
                       device_map={"": _device_index(device)})
    else:
        options["dtype"] = torch_dtype(weights_dtype(config, precision))
    model = AutoModelForCausalLM.from_pretrained(model_path, **options)
    if config.method == "qlora":
        keep_4bit_training_layout(model)
    # The cache only serves generation; training with it on would keep every layer's keys and values.
    model.config.use_cache = False
    return model


def quantisation(config: RunConfig, compute: str) -> Any:
    from transformers import BitsAndBytesConfig

    if config.quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=config.quant,
        bnb_4bit_use_double_quant=config.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute),
    )


def keep_4bit_training_layout(model: Any) -> None:
    """Keep bitsandbytes from repacking the 4-bit weights for its CPU inference kernel.

    On a CPU with AVX512-BF16, bitsandbytes (0.49 and later) repacks a 4-bit layer's weight
    the first time the layer runs in eval mode without gradients (the run's evaluations on
    its validation split) and computes that layer in bf16 from then on, whatever the
    compute dtype. Saving (``state_dict``) unpacks it, but not losslessly: without double
    quantisation the block scales stay transposed in bf16, with it they are quantised again
    (the dequantised weights moved by up to 2.0 and by 0.019 in a round trip). A run that
    evaluates and then saves a checkpoint would go on training over a corrupted base, and its
    adapter would answer differently on a freshly loaded one. So the layers always compute the
    way they train; the switch is bitsandbytes' own, read at every forward.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def attention_implementation(config: RunConfig, device: str, precision: str) -> str:
    """sdpa for padded batches; for padding-free ones flash-attention's variable-length kernels
    where installed (CUDA, 16-bit), else the studio's per-sequence sdpa."""
    if config.batching != "padding_free":
        return "sdpa"
    if device.startswith("cuda") and precision in ("bf16", "fp16") and batching.flash_attention_available():
        return "flash_attention_2"
    return batching.register_varlen_attention()


def _device_index(device: str) -> Optional[Any]:
    if device.startswith("cuda"):
        return int(device.split(":")[1]) if ":" in device else 0
    return device
