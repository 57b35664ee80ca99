"""How much memory a fine-tuning run takes, item by item, before it starts.

The model follows what this engine runs (``engine/train/recipe.py``) tensor by tensor:

- a frozen base (LoRA, DoRA, prompt methods) loads in the compute precision (bf16/fp16
  on a GPU, fp32 on a CPU) with fp32 adapters; QLoRA loads bitsandbytes 4-bit (or 8-bit)
  linears with the rest in the compute dtype (``engine/train/loading.py``);
- full fine-tuning loads fp32 weights and bf16/fp16 is the Trainer's autocast. Every linear
  then runs on a 16-bit *copy* of its weight that autograd keeps for the backward pass,
  so until the backward pass frees them a whole 16-bit copy of the weights sits beside
  the fp32 ones ("autocast_weight_copies"). In pure bf16 (``Plan.pure_bf16``) the weights,
  their gradients and the optimizer's states are bf16 and autocast copies nothing;
- LoRA comes from peft (fp32 adapters, dropout before ``lora_A``), attention is sdpa
  unless asked otherwise, the collator pads each batch to its longest row, the loss is
  the engine's chunked one (``engine.train.lean_loss``: never the batch's logits) and the
  optimizer the Trainer's fused AdamW.

Activations count every tensor autograd saves for backward, per decoder layer, as
derived from the modeling code and checked against ``saved_tensors_hooks`` on real
models (see ``bench/memory_calibration.py``). Peak memory is the largest of a few
moments of a step (end of forward, start of backward, a layer's backward, the
optimizer step), each the sum of what is alive then: peaks, not sums of peaks.

Importing this module imports no torch, and an estimate is arithmetic on a few dozen
numbers (well under a millisecond). It stays one module, past 500 lines, because every
item's formula reads the same per-run quantities (``_Run``) and each moment of the peak sums
several items: apart, the formulas could no longer be read side by side against the code they model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from engine.errors import StudioError
from engine.memory.loss_chunk import chunk_rows
from engine.memory import preference_head
from engine.memory.plan import Plan
from engine.models.spec import LinearShape, ModelSpec

DEVICES = ("cuda", "mps", "cpu")
ITEMS = ("weights", "reference_model", "autocast_weight_copies", "trainable_params", "gradients", "optimizer_states",
         "activations", "logits_and_loss", "reference_pass", "cuda_context", "allocator_reserve")

# What a process's CUDA context takes before the first tensor: driver state and the lazily
# loaded cuBLAS/cuDNN kernels of CUDA 12. nvidia-smi shows it, torch's allocator does not.
CUDA_CONTEXT_BYTES = 600 * (1 << 20)
# The caching allocator holds freed blocks for reuse; in steady training reserved memory
# runs this much above the allocated peak (published measurements put it at 5-30%).
ALLOCATOR_RESERVE_FRACTION = 0.10
DEFAULT_MARGIN = 0.10

_ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")
_PRESET_LINEARS = {"q,v": ("q_proj", "v_proj"), "attention": _ATTENTION_LINEARS}
# bitsandbytes' 8-bit optimizers keep 32-bit state for tensors under this many elements.
_BNB_MIN_8BIT_SIZE = 4096
_BNB_8BIT_BLOCK = 256
_NF4_BLOCK = 64
_NF4_DOUBLE_QUANT_BLOCK = 256


# the estimate ------------------------------------------------------------------------------------
@dataclass
class MemoryEstimate:
    """Bytes by item at the peak moment of a training step.

    ``items`` sums to ``device_bytes``; without the CUDA context and the allocator reserve
    it sums to ``peak_allocated_bytes``, what ``torch.cuda.max_memory_allocated`` reads.
    Paged optimizer states live in unified memory that the driver pages out under
    pressure, so they are reported apart and counted in neither total.
    ``phases`` gives the allocator bytes of the forward/backward pass and of the
    optimizer step, whose larger is the peak.
    """

    model: str
    device: str
    plan: Plan
    items: dict[str, int]
    peak_allocated_bytes: int
    device_bytes: int
    peak_phase: str
    peak_moment: str
    phases: dict[str, int]
    paged_optimizer_bytes: int
    trainable_params: int
    total_params: int
    notes: list[str] = field(default_factory=list)

    def fits(self, free_bytes: int, margin: float = DEFAULT_MARGIN) -> bool:
        """Whether the run fits in ``free_bytes`` with ``margin`` (a fraction) to spare."""
        return self.device_bytes <= free_bytes * (1 - margin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "device": self.device, "plan": self.plan.to_dict(), "items": dict(self.items),
            "peak_allocated_bytes": self.peak_allocated_bytes, "device_bytes": self.device_bytes,
            "peak_phase": self.peak_phase, "peak_moment": self.peak_moment, "phases": dict(self.phases),
            "paged_optimizer_bytes": self.paged_optimizer_bytes, "trainable_params": self.trainable_params,
            "total_params": self.total_params, "notes": list(self.notes),
        }


@dataclass(frozen=True)
class _Run:
    """One estimate's resolved facts: dtypes in bytes, token counts, what trains."""

    spec: ModelSpec
    plan: Plan
    device: str
    c: int  # bytes of matmul outputs: 2 under 16-bit compute, 4 in fp32
    r: int  # bytes of the residual stream and norm outputs: the base weights' dtype
    casts: bool  # autocast over fp32 weights: inputs and weights are cast to 16 bits per op
    master: int  # bytes of a trainable parameter and its gradient: 4, or 2 for pure bf16's weights
    adapter_in: int  # bytes of what reaches a LoRA adapter's dropout: peft casts it to the fp32 adapter's dtype
    tokens: int  # tokens through the decoder layers per micro-batch
    kv_len: int  # keys each query attends to
    padded: bool  # an attention mask reaches attention (padding, a prefix or a sliding window)
    eager: bool
    adapted: tuple[LinearShape, ...]
    trainable_base: bool
    frozen_first_input: bool  # layer 0's input needs no gradient (frozen embeddings, no prompt)
    fused_head: bool  # TRL's tiled log-probability head (DPO, KTO) instead of the engine's chunked loss
    full_logits: bool  # the model's whole logits, as TRL's ORPO and CPO/SimPO take them

    @property
    def positions(self) -> int:
        """Positions the loss scores: every token with a next one."""
        return self.tokens - self.plan.rows

    @property
    def int8_base(self) -> bool:
        return self.plan.method == "qlora" and self.plan.quant == "int8"

    def mask_bytes(self, element: int) -> int:
        """A dropout mask: CUDA's fused dropout keeps a bool, elsewhere torch keeps a noise tensor."""
        return 1 if self.device == "cuda" else element


def estimate_memory(spec: ModelSpec, plan: Plan, device: str = "cuda") -> MemoryEstimate:
    """The itemised memory of training ``spec`` with ``plan`` on a ``device`` (cuda, mps or cpu)."""
    plan.validate()
    if device not in DEVICES:
        raise StudioError(f"unknown device kind {device!r}; choose one of {', '.join(DEVICES)}")
    # TRL's preference trainers switch every dropout off (their disable_dropout=True), the
    # adapters' included: no mask and no dropped copy of each adapted input is kept.
    run = _resolve(spec, replace(plan, lora_dropout=0.0) if plan.is_preference else plan, device)
    persistent, paged = _persistent(run)
    moments = _fwd_bwd_moments(run, persistent)
    step = _step_moment(run, persistent)
    forward_backward = max(moments, key=lambda moment: sum(moment[1].values()))
    phases = {"forward_backward": sum(forward_backward[1].values()), "optimizer_step": sum(step[1].values())}
    # On a tie (the end of backward already holds all gradients beside the states) the step is
    # named: on the first step it is where the optimizer states appear.
    phase = "optimizer_step" if phases["optimizer_step"] >= phases["forward_backward"] else "forward_backward"
    moment_name, at_peak = step if phase == "optimizer_step" else forward_backward
    peak = sum(at_peak.values())
    context = CUDA_CONTEXT_BYTES if device == "cuda" else 0
    reserve = round(peak * ALLOCATOR_RESERVE_FRACTION) if device == "cuda" else 0
    items = {name: int(at_peak.get(name, 0)) for name in ITEMS}
    items["cuda_context"], items["allocator_reserve"] = context, reserve
    return MemoryEstimate(
        model=spec.name, device=device, plan=replace(plan), items=items,
        peak_allocated_bytes=int(peak), device_bytes=int(peak + context + reserve),
        peak_phase=phase, peak_moment=moment_name, phases=phases, paged_optimizer_bytes=int(paged),
        trainable_params=_trainable_count(run), total_params=spec.total_params, notes=_notes(run),
    )


def _resolve(spec: ModelSpec, plan: Plan, device: str) -> _Run:
    c = 4 if plan.precision == "fp32" else 2
    quantised = plan.method == "qlora"
    # A frozen base loads in the compute dtype; only full fine-tuning keeps fp32 weights under
    # autocast, unless it trains in pure bf16 (the bf16 weights themselves).
    sixteen_bit_base = plan.method != "full" or plan.pure_bf16
    seq = plan.seq + (plan.virtual_tokens if plan.method in ("prompt", "ptuning") else 0)
    kv_len = seq + (plan.virtual_tokens if plan.method == "prefix" else 0)
    eager = plan.attention == "eager" or spec.attn_logit_softcapping is not None
    padded = (plan.rows > 1 or plan.method == "prefix"
              or (spec.sliding_window is not None and kv_len > spec.sliding_window))
    return _Run(
        spec=spec, plan=plan, device=device, c=c,
        r=c if sixteen_bit_base else 4,
        casts=plan.method == "full" and c == 2 and not plan.pure_bf16,
        master=2 if plan.pure_bf16 else 4,
        # peft casts what reaches a 4-bit layer's adapter to fp32 unless autocast is on, which
        # it tests with torch.is_autocast_enabled(): CUDA's autocast only.
        adapter_in=c if quantised and device == "cuda" else 4,
        tokens=plan.rows * seq, kv_len=kv_len, padded=padded, eager=eager,
        adapted=_adapted_linears(spec, plan), trainable_base=plan.method == "full",
        frozen_first_input=plan.method in ("lora", "dora", "qlora", "prefix"),
        fused_head=plan.objective in ("dpo", "kto"), full_logits=plan.objective in ("orpo", "simpo"),
    )


def _adapted_linears(spec: ModelSpec, plan: Plan) -> tuple[LinearShape, ...]:
    """The layer linears a LoRA adapter wraps, chosen as ``engine.train.methods.lora_target_modules`` does."""
    if not plan.uses_lora:
        return ()
    if plan.target_modules:
        chosen = tuple(linear for linear in spec.layer_linears if linear.name in plan.target_modules)
        if not chosen:
            names = ", ".join(linear.name for linear in spec.layer_linears)
            raise StudioError(f"{spec.name} has no module named {', '.join(plan.target_modules)}; its layers' "
                              f"linears are {names}")
        return chosen
    if plan.targets == "all-linear":
        return spec.layer_linears
    wanted = _PRESET_LINEARS[plan.targets]
    found = tuple(linear for linear in spec.layer_linears if linear.name in wanted)
    if not found:
        raise StudioError(f"this architecture has no {', '.join(wanted)} modules; use targets all-linear")
    return found


# what stays for the whole run ------------------------------------------------------------------
def _weights_bytes(run: _Run) -> int:
    spec, plan = run.spec, run.plan
    if plan.method != "qlora":
        return (run.master if plan.method == "full" else run.c) * spec.total_params
    # bitsandbytes quantises every nn.Linear but the output layer; embeddings, norms and
    # lm_head stay in the compute dtype. The vision tower, if any, is linear layers too.
    quantised = [(linear.in_features * linear.out_features, linear.out_features)
                 for linear in spec.layer_linears] * spec.num_layers
    linear_bias = spec.num_layers * sum(linear.out_features for linear in spec.layer_linears if linear.bias)
    kept = spec.embedding_params + spec.lm_head_params + spec.norm_params + linear_bias
    return (sum(_quantised_bytes(n, rows, plan) for n, rows in quantised)
            + _quantised_bytes(spec.extra_params, 0, plan) + run.c * kept)


def _quantised_bytes(n: int, rows: int, plan: Plan) -> int:
    if n == 0:
        return 0
    if plan.quant == "int8":
        return n + 4 * rows  # LLM.int8: one byte a weight and an fp32 scale per output row
    blocks = math.ceil(n / _NF4_BLOCK)
    packed = math.ceil(n / 2)  # two 4-bit codes a byte
    if not plan.double_quant:
        return packed + 4 * blocks  # an fp32 absmax per 64 weights: +0.5 bit a weight
    # Double quantisation stores each absmax in 8 bits, with an fp32 scale per 256 of them
    # and a 256-entry fp32 code book per tensor: 8/64 + 32/(64*256) = 0.127 bit a weight.
    return packed + blocks + 4 * math.ceil(blocks / _NF4_DOUBLE_QUANT_BLOCK) + 4 * 256


def _trainable_tensors(run: _Run) -> list[int]:
    """Element counts of the trainable tensors (their sizes matter to 8-bit optimizers). A
    vision tower is left out even in full fine-tuning: text never reaches it, so it gets
    neither gradients nor optimizer states."""
    spec, plan = run.spec, run.plan
    if plan.method == "full":
        per_layer = [linear.in_features * linear.out_features for linear in spec.layer_linears]
        per_layer += [linear.out_features for linear in spec.layer_linears if linear.bias]
        per_layer += [spec.hidden_size] * spec.norms_per_layer + ([spec.head_dim] * 2 if spec.qk_norm else [])
        heads = [spec.embedding_params, spec.hidden_size] + ([spec.lm_head_params] if spec.lm_head_params else [])
        return per_layer * spec.num_layers + heads
    if plan.uses_lora:
        per_layer = []
        for linear in run.adapted:
            per_layer += [plan.rank * linear.in_features, linear.out_features * plan.rank]
            if plan.method == "dora":
                per_layer.append(linear.out_features)  # DoRA's magnitude vector, one per output
        return per_layer * spec.num_layers
    tokens, hidden = plan.num_virtual_tokens, spec.hidden_size
    if plan.method == "prompt":
        return [tokens * hidden]
    if plan.method == "ptuning":
        # peft's PromptEncoder: the token embedding and an MLP hidden -> hidden -> hidden -> hidden.
        return [tokens * hidden] + [hidden * hidden, hidden] * 3
    # Prefix tuning trains a key and a value per layer and token, at the key/value width.
    width = spec.kv_dim
    if not plan.prefix_projection:
        return [tokens * spec.num_layers * 2 * width]
    # With projection it trains a token embedding and the reparametrisation MLP instead.
    return [tokens * width, width * width, width, width * spec.num_layers * 2 * width, spec.num_layers * 2 * width]


def _trainable_count(run: _Run) -> int:
    return sum(_trainable_tensors(run))


def _optimizer_bytes(run: _Run) -> int:
    optimizer = run.plan.optimizer
    if optimizer == "sgd":
        return 0  # the Trainer's SGD has no momentum unless optim_args asks for it
    if optimizer == "adamw" and run.plan.pure_bf16:
        # torch-optimi's AdamW over bf16 weights: two bf16 moments and the Kahan compensation.
        return 6 * _trainable_count(run)
    if optimizer in ("adamw", "paged_adamw_32bit"):
        return 8 * _trainable_count(run)  # two fp32 moments (bitsandbytes' 32-bit ones whatever the weights)
    # Two 8-bit moments with an fp32 absmax per 256-value block each; small tensors stay 32-bit.
    return sum(2 * n + 2 * 4 * math.ceil(n / _BNB_8BIT_BLOCK) if n >= _BNB_MIN_8BIT_SIZE else 8 * n
               for n in _trainable_tensors(run))


def _persistent(run: _Run) -> tuple[dict[str, int], int]:
    """What lives through a whole step, and the paged optimizer bytes apart."""
    trainable = _trainable_count(run)
    states = _optimizer_bytes(run)
    paged = run.plan.optimizer.startswith("paged")
    return {
        "weights": _weights_bytes(run),
        # Adapters and virtual tokens are fp32 (peft upcasts adapters even over a 16-bit base);
        # full fine-tuning trains the weights themselves, already counted.
        "trainable_params": 0 if run.trainable_base else 4 * trainable,
        "gradients": run.master * trainable,  # gradients take their parameter's dtype
        "optimizer_states": 0 if paged else states,
        "reference_model": _reference_model_bytes(run),
    }, (states if paged else 0)


def _reference_model_bytes(run: _Run) -> int:
    """The frozen reference DPO and KTO compare against (``engine.train.preference``). Full
    fine-tuning holds a second copy of the model, loaded as the policy was (fp32 weights under
    autocast, bf16 in pure bf16), so both start from the same numbers. A run started from a
    trained adapter holds TRL's frozen copy of it, named "ref": fp32 adapter weights, the size of
    what trains. A new adapter holds none: the reference is the base with the adapter off."""
    if run.plan.reference_copy:
        return _weights_bytes(run)
    return 4 * _trainable_count(run) if run.plan.reference_adapter else 0


# activations -----------------------------------------------------------------------------------
def _layer_saved(run: _Run, first: bool) -> tuple[float, float]:
    """Bytes one decoder layer saves for backward, per token: (fixed part, part per key).

    Derived from the Llama/Qwen/Gemma/Phi-3 modeling code under the autograd rule that an
    op saves an input only when the gradient of another input needs it: a frozen linear
    keeps its weight (no new memory unless autocast copied it) and not its input; a
    trainable one keeps its input. ``first`` is layer 0, whose input needs no gradient
    when the embeddings are frozen and no prompt is prepended.
    """
    spec, c = run.spec, run.c
    q, kv = spec.q_dim, spec.kv_dim
    quiet_input = first and run.frozen_first_input
    # The attention half's norms (the input norm keeps nothing when its input needs no gradient).
    fixed = _norm_saved(run) * (spec.norms_per_layer // 2 - (1 if quiet_input else 0))
    attention_in = [lin for lin in spec.layer_linears if lin.name in ("q_proj", "k_proj", "v_proj", "qkv_proj")]
    fixed += _group_saved(run, attention_in, run.r, quiet_input)
    # o_proj's input is sdpa's output, already saved below (eager attention makes a copy).
    fixed += _group_saved(run, [spec.linear("o_proj")], c, False, input_saved_elsewhere=not run.eager)
    fixed += _mlp_saved(run)

    if spec.qk_norm:
        # q_norm/k_norm upcast q and k to fp32 and keep them with a per-head rsqrt (in layer 0
        # only where an adapter made them need a gradient); a trainable norm weight also needs
        # the normalised q and k, cast back to the compute dtype.
        adapted = {lin.name for lin in run.adapted}
        for width, heads, name in ((q, spec.num_heads, "q_proj"), (kv, spec.num_kv_heads, "k_proj")):
            if not quiet_input or name in adapted or "qkv_proj" in adapted:
                trainable = (4 if spec.fp32_norms else c) * width if run.trainable_base else 0
                fixed += 4 * width + 4 * heads + trainable

    per_key = 0.0
    if run.eager:
        # q and the repeated k and v in the compute dtype, the fp32 softmax and its cast back.
        fixed += 3 * c * q
        per_key += 4 * spec.num_heads + (c * spec.num_heads if c != 4 else 0)
        if spec.attn_logit_softcapping is not None:
            per_key += c * spec.num_heads  # tanh(scores / cap) keeps its output
    else:
        # sdpa (flash or memory-efficient kernels) keeps q, k, v, the output and an fp32
        # logsumexp per head. With a mask transformers repeats k and v to every head, and
        # torch turns the boolean mask into a float one per call, which the kernel keeps.
        kv_kept = q if run.padded and spec.num_kv_heads != spec.num_heads else kv
        fixed += c * (2 * q + 2 * kv_kept) + 4 * spec.num_heads
        per_key += c if run.padded else 0
    return fixed, per_key


def _norm_saved(run: _Run) -> float:
    """RMSNorm upcasts its input to fp32 and keeps it plus one fp32 rsqrt per token; a
    trainable norm weight also needs the normalised tensor, cast back to the weights' dtype."""
    return 4 * run.spec.hidden_size + 4 + (run.r * run.spec.hidden_size if run.trainable_base else 0)


def _mlp_saved(run: _Run) -> float:
    """What the MLP half of a layer keeps per token (its norms included): freed first in backward."""
    spec, c = run.spec, run.c
    mlp_in = [lin for lin in spec.layer_linears if lin.name in ("gate_proj", "up_proj", "gate_up_proj")]
    kept = _norm_saved(run) * (spec.norms_per_layer // 2)
    kept += _group_saved(run, mlp_in, run.r, False) + _group_saved(run, [spec.linear("down_proj")], c, False)
    # A gated MLP keeps gate's output (the activation's input), act(gate) and up; a plain
    # one keeps only the activation's input (its output is down_proj's input, counted above).
    return kept + (3 if spec.gated_mlp else 1) * c * spec.intermediate_size


def _group_saved(run: _Run, linears: list[Optional[LinearShape]], input_bytes: int, quiet: bool,
                 input_saved_elsewhere: bool = False) -> float:
    """Bytes per token kept for linears that read the same input (q/k/v, or gate/up)."""
    linears = [lin for lin in linears if lin is not None]
    if not linears:
        return 0.0
    width = linears[0].in_features
    c, plan = run.c, run.plan
    kept = 0.0
    if run.trainable_base:
        # A trainable weight's gradient needs the input: autocast casts it afresh for every
        # linear (only leaf weights are cached), otherwise all share the one tensor.
        if not input_saved_elsewhere:
            kept += len(linears) * c * width if run.casts and input_bytes != c else input_bytes * width
        return kept
    adapted = [lin for lin in linears if lin in run.adapted]
    # bitsandbytes' LLM.int8 matmul keeps its input for the backward pass, adapted or not.
    shared_input = run.int8_base and not quiet
    if not adapted and not shared_input:
        return 0.0
    for lin in adapted:
        kept += c * plan.rank  # lora_A's output, kept by lora_B
        if plan.method == "dora":
            kept += 2 * c * lin.out_features  # the base result and the LoRA result, kept by the magnitude
        if plan.lora_dropout > 0:
            # Dropout keeps its mask (unless its input needs no gradient); lora_A keeps the
            # dropped input, cast to the compute dtype.
            kept += (0 if quiet else run.mask_bytes(run.adapter_in) * width) + c * width
        elif run.adapter_in != c:
            kept += c * width  # the input reaches lora_A in fp32 and autocast casts it anew for each
        else:
            shared_input = True
    if shared_input and not input_saved_elsewhere:
        kept += input_bytes * width
    return kept


def _layers_saved(run: _Run) -> float:
    fixed, per_key = _layer_saved(run, first=False)
    first_fixed, first_per_key = _layer_saved(run, first=True)
    layers = run.spec.num_layers
    return run.tokens * ((layers - 1) * (fixed + per_key * run.kv_len) + first_fixed + first_per_key * run.kv_len)


def _one_layer_saved(run: _Run) -> float:
    fixed, per_key = _layer_saved(run, first=False)
    return run.tokens * (fixed + per_key * run.kv_len)


def _head_saved(run: _Run) -> float:
    """The final norm, lm_head's input when it trains, and the int64 shifted labels."""
    spec = run.spec
    per_token = 4 * spec.hidden_size + 4 + 8
    if run.trainable_base:
        per_token += run.r * spec.hidden_size  # the trainable final norm's output
        if not run.fused_head:  # lm_head's input: the fused head keeps its own copy (``_fused_head_kept``)
            per_token += (run.c if run.casts else run.r) * spec.hidden_size
    return run.tokens * per_token


def _prompt_saved(run: _Run) -> float:
    """What the virtual-token encoders keep (tiny next to the layers, counted all the same)."""
    plan, spec = run.plan, run.spec
    rows = plan.batch * plan.num_virtual_tokens
    if plan.method == "ptuning":
        return rows * 4 * 5 * spec.hidden_size  # the MLP's inputs and ReLU outputs, fp32
    if plan.method == "prefix":
        # The prefix keys and values of every layer, and with projection the MLP's activations.
        kept = rows * spec.num_layers * 2 * spec.kv_dim * 4
        return kept + (rows * 4 * 2 * spec.kv_dim if plan.prefix_projection else 0)
    return 0.0


def _checkpoints(run: _Run) -> float:
    """With gradient checkpointing each layer keeps its input hidden state; the checkpoints
    also hold the attention mask, so it lives until the backward pass."""
    mask = run.tokens * run.kv_len * (4 if run.eager else 1) if run.padded or run.eager else 0
    kept = run.tokens * run.r * run.spec.hidden_size * run.spec.num_layers + mask
    return kept + run.tokens * run.spec.num_layers * _int8_inputs(run)


def _int8_inputs(run: _Run) -> float:
    """bitsandbytes' 8-bit matmuls keep their input on the autograd context as a plain
    attribute (``ctx.A``, ``ctx.tensors``), out of reach of checkpointing's saved-tensor
    hooks: under gradient checkpointing every layer still keeps the inputs of its four
    linear groups (q/k/v, o_proj, gate/up, down_proj), per token."""
    if not run.int8_base:
        return 0.0
    spec, c, r = run.spec, run.c, run.r
    return 2 * r * spec.hidden_size + c * spec.q_dim + c * spec.intermediate_size


def _weight_copies(run: _Run, layers: int) -> float:
    """16-bit copies autocast makes of fp32 weights and autograd keeps: ``layers`` layers' linears and lm_head."""
    if not run.casts:
        return 0.0
    spec = run.spec
    per_layer = spec.linear_params_per_layer
    if run.plan.method == "dora" and run.plan.lora_dropout > 0:
        per_layer += sum(lin.in_features * lin.out_features for lin in run.adapted)  # DoRA's second base matmul
    per_layer += sum(run.plan.rank * (lin.in_features + lin.out_features) for lin in run.adapted)
    first_layer_quiet = 0
    if run.frozen_first_input and layers == spec.num_layers:
        first_layer_quiet = sum(lin.params for lin in spec.layer_linears
                                if lin.name in ("q_proj", "k_proj", "v_proj", "qkv_proj"))
    return run.c * (layers * per_layer - first_layer_quiet + spec.vocab_size * spec.hidden_size)


# the logits ------------------------------------------------------------------------------------
def _logits(run: _Run, moment: str) -> float:
    """What the loss holds (``engine.train.lean_loss``): never the batch's logits, one chunk's.

    The loss reads the model's last hidden states in fp32 (accelerate upcasts a 16-bit model's
    outputs), gathers the rows that have a label (a copy), and during its forward pass computes
    their gradient (kept until backward, hidden-sized) a chunk of rows at a time: each chunk
    holds its fp32 logits and log-probabilities, 8 bytes per vocabulary entry. When the head
    trains, its weight gradient is summed in fp32 during the forward pass too (with a 16-bit
    product per chunk under autocast; the 16-bit copy of the weight is autocast's, counted with
    the copies). At the start of backward the rows' gradient is scattered back into a
    hidden-sized gradient of every token: two fp32 hidden states per token.
    """
    spec = run.spec
    hidden = 4 * spec.hidden_size
    if moment == "forward_end":
        # The model's output (a trainable final norm already keeps it), the gathered rows and
        # their gradient, and the kept rows' indices and labels (int64).
        per_token = (0 if run.trainable_base else hidden) + 2 * hidden + 16
        chunk = min(run.tokens, chunk_rows(spec.vocab_size)) * spec.vocab_size * 8
        return run.tokens * per_token + chunk + _head_gradient(run, forward=True)
    if moment == "backward_start":
        return run.tokens * 2 * hidden + _head_gradient(run, forward=False)
    return 0.0


def _loss_head(run: _Run, moment: str) -> float:
    """What the loss holds at ``moment``: the engine's chunked loss for SFT, TRL's fused head
    for DPO and KTO, the model's full logits for ORPO and SimPO."""
    if run.fused_head:
        return _fused_head(run, moment)
    if run.full_logits:
        return _full_logits(run, moment)
    return _logits(run, moment)


def _fused_head_kept(run: _Run) -> float:
    """What TRL's fused head keeps for backward and returns (``engine.memory.preference_head``):
    a contiguous copy of the scored positions' hidden states, and a few numbers per position."""
    return run.positions * (run.r * run.spec.hidden_size + preference_head.PER_POSITION)


def _fused_head(run: _Run, moment: str) -> float:
    """TRL's fused head: while it runs, its tile buffer, the model's last hidden states (until the
    head returns) and its running statistics; off a GPU the fold's whole-tile temporaries. Its
    backward pass fills a new tile buffer, sums the hidden states' gradient in fp32 and, when the
    head trains, its weight's gradient in fp32 (cast to the weight's dtype at the end)."""
    spec, positions = run.spec, run.positions
    hidden = spec.hidden_size
    backward = moment == "backward_start"
    if moment not in ("forward_end", "backward_start"):
        return 0.0
    held = _fused_head_kept(run) + preference_head.tile_bytes(positions, run.c)
    if run.device != "cuda":
        held += preference_head.cpu_temporaries(positions, spec.vocab_size, backward)
    tile_rows = min(positions, preference_head.TOKEN_TILE)
    if run.c != run.r:  # each tile's hidden states cast to the compute dtype
        held += tile_rows * hidden * run.c
    if not backward:
        return held + positions * (run.r * hidden + preference_head.RUNNING_STATS)
    held += positions * 4 * hidden + (positions * run.r * hidden if run.r != 4 else 0)
    if run.trainable_base:
        weight = spec.vocab_size * hidden
        held += 4 * weight + (run.master * weight if run.master != 4 else 0)
    return held


def _full_logits(run: _Run, moment: str) -> float:
    """ORPO and SimPO take log-probabilities from the model's whole logits, in the compute dtype,
    kept until backward (TRL's per-row log-sum-exp saves them). ORPO's NLL term on the chosen
    half adds a contiguous copy of that half and its log-softmax, which it keeps. Backward
    builds the logits' gradient from both terms: each a logits-sized fp32 tensor."""
    logits = run.tokens * run.spec.vocab_size
    chosen_half = 0.5 * logits * 4 if run.plan.objective == "orpo" else 0.0
    if moment == "forward_end":
        return logits * run.c + 2 * chosen_half
    if moment == "backward_start":
        return logits * run.c + chosen_half + 2 * logits * 4
    return 0.0


def _no_grad_layer(run: _Run) -> float:
    """A decoder layer's forward without gradients: the residual stream and its normed copy,
    and the MLP's gate, up and activation (nothing is kept once the layer is done)."""
    spec = run.spec
    scores = run.tokens * run.kv_len * 4 * spec.num_heads if run.eager else 0
    return run.tokens * (2 * run.r * spec.hidden_size + 3 * run.c * spec.intermediate_size) + scores


def _reference_pass(run: _Run) -> float:
    """A reference forward (no gradients) while the policy's activations and its head's outputs
    are kept: one layer at a time, then the fused head's transient without anything to keep."""
    if not run.plan.reference_passes:
        return 0.0
    head = _fused_head(run, "forward_end") if run.fused_head else 0.0
    return max(_no_grad_layer(run), head)


def _head_gradient(run: _Run, forward: bool) -> float:
    """The output head's weight gradient while the loss holds it (full fine-tuning only): summed
    in fp32 during the forward pass, beside each chunk's 16-bit product under autocast and, at
    its end, the cast to the weight's dtype where that is not fp32; then kept in that dtype."""
    if not run.trainable_base:
        return 0.0
    weight = run.spec.vocab_size * run.spec.hidden_size
    if not forward:
        return weight * run.r
    return weight * (4 + (run.c if run.c != 4 else 0) + (run.r if run.r != 4 else 0))


def _layer_transient(run: _Run, backward: bool) -> float:
    """Short-lived tensors while one layer runs, without gradient checkpointing.

    Forward: what the frames hold while down_proj runs (``_mlp_frame``); eager attention adds
    its fp32 scores and the model's float mask. Backward holds the incoming gradient of the
    hidden state and either the MLP's temporaries while all the layer is still kept, or, for
    eager attention, the softmax's gradient and its fp32 input gradient (two score-sized
    tensors) once the MLP half has been freed.
    """
    spec, c = run.spec, run.c
    ffn, heads = spec.intermediate_size, spec.num_heads
    if not backward:
        per_key = 4 * heads + 4 if run.eager else 0
        return run.tokens * (_mlp_frame(run) + per_key * run.kv_len) + _dora_transient(run) + _dequantised_weight(run)
    mlp = 2 * 4 * ffn if run.plan.uses_lora else 2 * c * ffn
    attention = 8 * heads * run.kv_len - _mlp_saved(run) if run.eager else 0
    return (run.tokens * (run.r * spec.hidden_size + max(mlp, attention)) + _dora_transient(run)
            + _dequantised_weight(run))


def _recompute_transient(run: _Run) -> float:
    """Gradient checkpointing's peak: the backward pass of the last layer unpacks its first
    saved tensor, and the layer's forward runs again up to down_proj's adapter, the last
    tensor backward needs (torch stops recomputing there). Beside what the layer saves, the
    recomputation's frames hold what ``_mlp_frame`` counts, and backward holds two gradients
    of the hidden state: the residual branch's, waiting for the layer's input, and the MLP
    branch's. In an fp32 base the input norm saves the checkpoint itself, counted once.
    (Measured with the profiler's allocator events on CPU, bf16 and fp32: ``bench/memory_calibration.py``.)"""
    spec = run.spec
    if run.trainable_base:  # full fine-tuning: the older, calibrated account
        return _layer_transient(run, backward=True)
    gradients = 2 * run.r * spec.hidden_size
    shared_checkpoint = (4 * spec.hidden_size + 4) if run.r == 4 else 0
    attention = 8 * spec.num_heads * run.kv_len - _mlp_saved(run) if run.eager else 0
    per_token = gradients + max(_mlp_frame(run), attention) - shared_checkpoint
    return run.tokens * per_token + _dora_transient(run) + _dequantised_weight(run)


def _mlp_frame(run: _Run) -> float:
    """Bytes per token the decoder layer's and the MLP's frames hold while down_proj runs,
    beyond what autograd saves.

    Full fine-tuning: the MLP's two widest temporaries. A frozen base: the residual stream
    (unless fp32, when the MLP's norm saves it), the MLP's input (unless gate/up keep it),
    down_proj's input act(gate) * up (unless its adapter keeps it), peft's fp32 cast of that
    input and its dropped copy on the way to lora_A (where they differ from what lora_A
    keeps), and down_proj's frozen result, to which the adapter's is added.
    """
    spec, plan, c, r = run.spec, run.plan, run.c, run.r
    hidden, ffn = spec.hidden_size, spec.intermediate_size
    if run.trainable_base:
        return 2 * c * ffn
    in_adapter_dtype = run.adapter_in == c  # what lora_A keeps is then the input or its dropped copy
    adapter_keeps_input = plan.lora_dropout == 0 and in_adapter_dtype
    gate_up_adapted = any(lin.name in ("gate_proj", "up_proj", "gate_up_proj") for lin in run.adapted)
    down_adapted = any(lin.name == "down_proj" for lin in run.adapted)
    # An 8-bit base keeps every linear's input itself (``_int8_inputs``).
    mlp_input_kept = run.int8_base or (gate_up_adapted and adapter_keeps_input)
    down_input_kept = run.int8_base or (down_adapted and adapter_keeps_input)
    held = (r * hidden if r != 4 else 0) + (0 if mlp_input_kept else r * hidden) + c * hidden
    held += 0 if down_input_kept else c * ffn
    if down_adapted and not in_adapter_dtype:
        held += run.adapter_in * ffn * (2 if plan.lora_dropout > 0 else 1)
    return held


def _dequantised_weight(run: _Run) -> float:
    """A quantised linear computes on a dequantised copy of its weight: bitsandbytes' 4-bit
    matmul dequantises the whole weight in the compute dtype for a training-sized input, in
    forward and again in backward, as does its 8-bit CPU path; on CUDA the 8-bit path
    instead quantises the input (an fp16 copy and its int8 codes, per token)."""
    if run.plan.method != "qlora":
        return 0.0
    spec = run.spec
    if run.int8_base and run.device == "cuda":
        return run.tokens * 3 * max(lin.in_features for lin in spec.layer_linears)
    return run.c * max(lin.params for lin in spec.layer_linears)


def _dora_transient(run: _Run) -> float:
    """peft's DoRA builds lora_B(lora_A(eye(in))) and the summed weight to take its norm on
    every forward: an in x in identity and a few weight-sized tensors for the largest layer."""
    if run.plan.method != "dora" or not run.adapted:
        return 0.0
    return max(4 * lin.in_features ** 2 + (2 * run.c + 4) * lin.in_features * lin.out_features
               for lin in run.adapted)


def _fwd_bwd_moments(run: _Run, persistent: dict[str, int]) -> list[tuple[str, dict[str, float]]]:
    """Candidate peaks of the forward and backward pass, each as the items alive then."""
    spec, plan = run.spec, run.plan
    base = dict(persistent)
    if plan.grad_accum == 1:
        # The Trainer sets every gradient to None after each step (model.zero_grad()): none exist
        # through the forward pass; the backward pass makes them again.
        base["gradients"] = 0
    # An adapter's gradients are all made by the time backward reaches the first layers (full
    # fine-tuning's, far larger, are counted at backward_end instead).
    backward = base if run.trainable_base else {**base, "gradients": persistent["gradients"]}
    extra = _prompt_saved(run) + _head_saved(run)
    moments: list[tuple[str, dict[str, float]]] = []
    if plan.grad_checkpointing:
        kept = _checkpoints(run) + extra
        # autocast caches the copies of trainable weights until the forward pass ends
        forward_copies = _weight_copies(run, spec.num_layers) if run.trainable_base else _weight_copies(run, 0)
        moments.append(("forward_end", {**base, "autocast_weight_copies": forward_copies,
                                        "activations": kept, "logits_and_loss": _loss_head(run, "forward_end")}))
        moments += _reference_moment(run, base, _weight_copies(run, 0), kept)
        moments.append(("backward_start", {**base, "autocast_weight_copies": _weight_copies(run, 0),
                                           "activations": kept, "logits_and_loss": _loss_head(run, "backward_start")}))
        recompute = _checkpoints(run) + _one_layer_saved(run) + _recompute_transient(run)
        moments.append(("layer_backward", {**backward,
                                           "autocast_weight_copies": _weight_copies(run, 1) - _lm_head_copy(run),
                                           "activations": recompute}))
    else:
        layers = _layers_saved(run) + extra
        copies = _weight_copies(run, spec.num_layers) - _lm_head_copy(run) + _kept_head_copy(run)
        before_last = _layers_saved(run) + _prompt_saved(run) - _one_layer_saved(run)
        moments.append(("layer_forward", {**base, "autocast_weight_copies": copies,
                                          "activations": before_last + _layer_transient(run, backward=False)}))
        moments.append(("forward_end", {**base, "autocast_weight_copies": copies, "activations": layers,
                                        "logits_and_loss": _loss_head(run, "forward_end")}))
        moments += _reference_moment(run, base, copies, layers)
        moments.append(("backward_start", {**base, "autocast_weight_copies": copies, "activations": layers,
                                           "logits_and_loss": _loss_head(run, "backward_start")}))
        moments.append(("layer_backward", {**backward, "autocast_weight_copies": copies - _kept_head_copy(run),
                                           "activations": _layers_saved(run) + _prompt_saved(run)
                                           + _layer_transient(run, backward=True)}))
    if run.trainable_base:
        if not run.plan.is_preference:  # the chunked loss made the head's gradient during the forward pass
            moments.append(_lm_head_backward(run, base, moments))
        # A tied embedding's second gradient (from the embedding lookup) exists beside the first (the
        # chunked loss's head gradient), which it is then added into in place.
        tied_grad = run.master * spec.embedding_params if spec.tie_word_embeddings else 0
        moments.append(("backward_end", {**base, "gradients": persistent["gradients"] + tied_grad}))
    return moments


def _reference_moment(run: _Run, base: dict[str, float], copies: float,
                      activations: float) -> list[tuple[str, dict[str, float]]]:
    """DPO and KTO run the reference after the policy's forward pass: its activations and its
    head's outputs wait beside the reference pass."""
    if not run.plan.reference_passes:
        return []
    return [("reference_pass", {**base, "autocast_weight_copies": copies, "activations": activations,
                                "logits_and_loss": _fused_head_kept(run), "reference_pass": _reference_pass(run)})]


def _kept_head_copy(run: _Run) -> float:
    """lm_head's 16-bit autocast copy, kept for backward unless TRL's fused head casts it a tile at a time."""
    return 0.0 if run.fused_head else _lm_head_copy(run)


def _lm_head_copy(run: _Run) -> float:
    return run.c * run.spec.vocab_size * run.spec.hidden_size if run.casts else 0.0


def _lm_head_backward(run: _Run, base: dict[str, float],
                      moments: list[tuple[str, dict[str, float]]]) -> tuple[str, dict[str, float]]:
    """Full fine-tuning: when the backward pass reaches the loss, the head's weight gradient (made
    during the forward pass) becomes the parameter's gradient while the hidden states' gradient
    is scattered back; every activation is still kept."""
    start = dict(next(items for name, items in moments if name == "backward_start"))
    start["logits_and_loss"] = _logits(run, "backward_start") - _head_gradient(run, forward=False)
    start["gradients"] = start.get("gradients", 0) + _head_gradient(run, forward=False)
    return "lm_head_backward", start


def _step_moment(run: _Run, persistent: dict[str, int]) -> tuple[str, dict[str, float]]:
    """The optimizer step: weights, gradients and states; the fused AdamW needs no temporaries,
    nor does pure bf16's (torch-optimi's foreach AdamW works in place, the gradients its scratch)."""
    return "optimizer_step", dict(persistent)


def _notes(run: _Run) -> list[str]:
    notes = []
    if run.plan.pure_bf16:
        notes.append("full fine-tuning in pure bf16: bf16 weights, gradients and optimizer states, no fp32 master copy")
    elif run.casts:
        notes.append("full fine-tuning keeps fp32 weights and autocast computes in "
                     f"{run.plan.precision}: each linear keeps a 16-bit copy of its weight for backward")
    elif run.c == 2 and run.plan.method != "qlora":
        notes.append(f"the frozen base loads in {run.plan.precision}; what trains stays in fp32")
    if run.spec.attn_logit_softcapping is not None and run.plan.attention == "sdpa":
        notes.append(f"{run.spec.name} soft-caps attention logits, which sdpa cannot: it runs eager attention")
    if run.plan.optimizer.startswith("paged"):
        notes.append("paged optimizer states live in unified memory and page out under pressure")
    if run.spec.extra_params:
        notes.append("the vision tower is loaded but not trained: weights only")
    return notes + _preference_notes(run)


def _preference_notes(run: _Run) -> list[str]:
    plan = run.plan
    if not plan.is_preference:
        return []
    notes = []
    if plan.rows > plan.batch:
        notes.append(f"{plan.objective} runs each pair's chosen and rejected answers in one batch: "
                     f"{plan.rows} rows of up to {plan.seq} tokens")
    if plan.uses_lora:
        notes.append(f"TRL's {plan.objective} trainer switches dropout off, the adapters' included")
    if run.fused_head:
        notes.append(f"{plan.objective} scores log-probabilities with TRL's fused head, in tiles of "
                     f"{preference_head.TOKEN_TILE} tokens x {preference_head.VOCAB_TILE} vocabulary entries: "
                     "no whole logits")
    if run.full_logits:
        notes.append(f"{plan.objective} takes log-probabilities from the whole logits (rows x length x vocabulary)")
    if plan.reference_copy:
        notes.append(f"full fine-tuning with {plan.objective} holds a frozen reference copy of the model, loaded "
                     f"as the trained one is (in {'bf16' if plan.pure_bf16 else 'fp32'})")
    elif plan.reference_adapter:
        notes.append(f"the reference is the adapter the run starts from, a frozen copy of it: {plan.reference_passes} "
                     "forward pass(es) without gradients a step, no second model")
    elif plan.reference_passes:
        notes.append(f"the reference is the base with the adapter switched off: {plan.reference_passes} forward "
                     "pass(es) without gradients a step, no copy of anything")
    return notes
