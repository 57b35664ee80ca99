"""Full fine-tuning in pure bf16: the weights load in bf16 and stay there, so their gradients
are bf16 too, and AdamW keeps its moments in bf16: 2 (weight) + 2 (gradient) + 6 (states)
= 10 bytes a parameter, against 4 + 4 + 8 = 16 over fp32 masters, plus the 2 of the 16-bit
weight copies autocast makes there and keeps for the backward pass.

The optimizer is torch-optimi's ``AdamW`` with Kahan summation. A bf16 weight holds 8 bits
of mantissa: an update smaller than about 1/256 of the weight rounds away to nothing, which
is most updates at fine-tuning learning rates (``adamw_torch`` over bf16 weights, what
LLaMA-Factory's pure_bf16 runs, loses them). Kahan summation keeps, per weight, a bf16
compensation buffer with what the last rounding lost and adds it to the next update, so
small updates accumulate as they would over fp32 masters. On the tiny model (40 steps at a
learning rate of 1e-4) the loss curve stayed within 0.003 of the fp32-master run's with it and
drifted 0.046 above it with torch's AdamW over the same bf16 weights.

Why this implementation: optimi's foreach path is plain PyTorch ``torch._foreach_*`` ops,
the same code on a CPU and on CUDA, with no ``torch.compile`` and no compiled extension tied
to one torch release (torchao's ``AdamW(bf16_stochastic_round=True)`` compiles its step with
``torch.compile``, and its wheels pair with torch versions). Its state per bf16 weight is
``exp_avg``, ``exp_avg_sq`` and ``kahan_comp``, each the weight's dtype: 6 bytes. Its step
works in place and uses the gradients as its scratch buffer (they are spent by then), so it
allocates no temporaries. Triton is turned off explicitly: optimi would otherwise pick its
Triton kernel on CUDA, compiled at run time.

The Trainer's bf16 autocast is off in pure bf16 (``bf16=False``; torchtune's full recipes and
LLaMA-Factory's pure_bf16 train the same way): over bf16 weights it has nothing to cast for
the matmuls, and on the tiny model (CPU, 40 steps) the loss curve and the profiled peak were
the same to the last digit with it on and off. Off, what runs is what the modeling code says
(bf16 throughout but for its own explicit fp32 upcasts in the norms, rotary embeddings and
the loss) on a CPU and on CUDA alike, where CUDA's autocast would also run the ops on its
fp32 list (exp, pow, sum, softmax...) in fp32: allocations the CPU calibration cannot see.
"""

from __future__ import annotations

from typing import Any, Optional

from engine.core.choices import resolve_pure_bf16
from engine.run.config import RunConfig


def applies(config: RunConfig, precision: str) -> bool:
    """Whether this run, computing in ``precision``, trains in pure bf16."""
    return resolve_pure_bf16(config.pure_bf16, config.method, precision)


def optimizer_cls_and_kwargs(config: RunConfig, precision: str, args: Any) -> Optional[tuple[type, dict[str, Any]]]:
    """The Trainer's ``optimizer_cls_and_kwargs`` for a pure-bf16 AdamW run (None otherwise: the
    8-bit optimizers and SGD run over bf16 weights as the Trainer builds them). The Trainer still
    makes the parameter groups (no weight decay on biases and norms) and the schedule over them."""
    if not applies(config, precision) or config.optimizer != "adamw":
        return None
    from optimi import AdamW

    return AdamW, {"lr": args.learning_rate, "betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon,
                   "weight_decay": args.weight_decay, "kahan_sum": True, "foreach": True, "triton": False}
