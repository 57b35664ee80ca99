"""Auto-fit: the best plan that fits a device, searching max lengths (from the dataset's
length percentiles), micro-batches, ranks and memory savers against the estimate, with
the reasons for each choice in words a user reads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional

from engine.core.choices import PURE_BF16_CHOICES, resolve_pure_bf16
from engine.core.units import MAX_DEVICE_BYTES, human_bytes
from engine.errors import StudioError
from engine.memory.estimate import DEFAULT_MARGIN, MemoryEstimate, estimate_memory
from engine.memory.plan import MAX_SEQ, Plan
from engine.models.spec import ModelSpec, list_catalog, load_model_spec


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of a dataset's examples, as percentiles."""

    p50: int
    p95: int
    p99: int
    max: int

    @classmethod
    def from_percentiles(cls, percentiles: Mapping[Any, Any]) -> "LengthStats":
        """From the ``token_percentiles`` of ``lora-studio data inspect`` (``p50``, ``p95``, ``p99``,
        ``max``), or the same keyed by number (``50``, ``95``, ``99``, ``100``)."""
        values = {str(key).lstrip("p").replace("max", "100"): value for key, value in percentiles.items()}
        try:
            stats = {name: int(values[key]) for name, key in (("p50", "50"), ("p95", "95"), ("p99", "99"),
                                                                ("max", "100"))}
        except (KeyError, TypeError, ValueError):
            raise StudioError("dataset length statistics need the 50th, 95th, 99th and 100th percentiles") from None
        if min(stats.values()) < 1:
            raise StudioError("dataset length percentiles must be positive")
        return cls(**stats)


@dataclass(frozen=True)
class Preferences:
    """What the user asked for; auto-fit chooses the rest. ``effective_batch`` is the batch
    the optimizer should see (micro-batch x accumulation). ``pure_bf16`` is a run's setting
    (auto, on, off): by default full fine-tuning in bf16 is planned in pure bf16."""

    method: str = "lora"
    precision: str = "bf16"
    targets: str = "all-linear"
    pure_bf16: str = "auto"
    effective_batch: int = 16
    max_rank: int = 64
    margin: float = DEFAULT_MARGIN
    default_length: int = 2048
    objective: str = "sft"
    reference_free: bool = False
    from_adapter: bool = False  # going on from a trained adapter (the reference, its rank ``max_rank``)

    @classmethod
    def from_mapping(cls, data: Optional[Mapping[str, Any]]) -> "Preferences":
        if data is None:
            return cls()
        if isinstance(data, Preferences):
            return data
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudioError(f"unknown preference(s): {', '.join(unknown)}")
        prefs = cls(**data)
        Plan(method=prefs.method, precision=prefs.precision, targets=prefs.targets, rank=prefs.max_rank,
             batch=max(prefs.effective_batch, _min_batch(prefs)), objective=prefs.objective,
             reference_free=prefs.reference_free, from_adapter=prefs.from_adapter).validate()
        if prefs.pure_bf16 not in PURE_BF16_CHOICES:
            raise StudioError(f"unknown pure bf16 setting {prefs.pure_bf16!r}; choose one of "
                              f"{', '.join(PURE_BF16_CHOICES)}")
        if not 0 <= prefs.margin < 1:
            raise StudioError(f"safety margin must be a fraction in [0, 1), got {prefs.margin!r}")
        return prefs


@dataclass
class FitResult:
    plan: Plan
    estimate: MemoryEstimate
    explanations: list[str]
    fits: bool
    suggestion: Optional[str]

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "estimate": self.estimate.to_dict(), "explanations": list(self.explanations),
                "fits": self.fits, "suggestion": self.suggestion}


_MIN_LENGTH = 128
# Tokens per micro-batch that keep a GPU's matrix units busy; past this a larger batch buys little.
_BUSY_TOKENS = 4096
_RANKS = (8, 16, 32, 64, 128, 256)
_BASE_RANK = 16


def auto_fit(spec: ModelSpec, device_free_bytes: int, dataset_stats: Optional[LengthStats | Mapping[Any, Any]] = None,
             preferences: Optional[Preferences | Mapping[str, Any]] = None, device: str = "cuda") -> FitResult:
    """The best plan that fits ``device_free_bytes`` with a safety margin.

    It prefers, in order, a longer max length (the dataset's 99th, then 95th percentile
    length, then shorter), a larger micro-batch and a higher rank. Gradient checkpointing,
    a paged 8-bit optimizer and (for LoRA) a 4-bit base are memory savers with a cost in
    speed or fidelity: at the chosen length it takes the fewest savers whose micro-batch
    keeps the GPU busy, and sets accumulation to keep the effective batch.
    """
    if isinstance(device_free_bytes, bool) or not isinstance(device_free_bytes, int) or device_free_bytes <= 0:
        raise StudioError(f"free device memory must be a positive number of bytes, got {device_free_bytes!r}")
    if device_free_bytes > MAX_DEVICE_BYTES:
        raise StudioError(f"free device memory {device_free_bytes:,} bytes is beyond any device")
    prefs = Preferences.from_mapping(preferences)
    stats = LengthStats.from_percentiles(dataset_stats) if isinstance(dataset_stats, Mapping) else dataset_stats
    budget = int(device_free_bytes * (1 - prefs.margin))
    lengths = _length_candidates(spec, stats, prefs)
    ladder = _saver_ladder(prefs)
    for seq in lengths:
        options = []
        for savers in ladder:
            plan = _first_fitting(spec, budget, device, prefs, savers, seq)
            if plan is not None:
                options.append((savers, _grow_batch(spec, budget, device, prefs, plan)))
        if options:
            savers, plan = _choose(options, seq, prefs)
            plan = _grow_rank(spec, budget, device, prefs, plan)
            estimate = estimate_memory(spec, plan, device)
            best_unquantised = max((option.batch for saver, option in options if saver.get("method") != "qlora"),
                                   default=0)
            return FitResult(plan, estimate, _explain(spec, plan, estimate, device_free_bytes, stats, lengths,
                                                      savers, prefs, best_unquantised), True, None)
    smallest = _savers_plan(prefs, ladder[-1], lengths[-1], _RANKS[0], 1)
    estimate = estimate_memory(spec, smallest, device)
    return FitResult(smallest, estimate, [
        f"Nothing fits: {spec.name} needs {human_bytes(estimate.device_bytes)} even with {smallest.describe()}, "
        f"and the device has {human_bytes(device_free_bytes)} free ({human_bytes(budget)} after a "
        f"{prefs.margin:.0%} safety margin)."
    ], False, _suggest_smaller(spec, budget, device, prefs, lengths[-1]))


def _choose(options: list[tuple[dict[str, Any], Plan]], seq: int, prefs: Preferences) -> tuple[dict[str, Any], Plan]:
    """The fewest savers whose micro-batch holds enough tokens to keep a GPU busy; when none
    does, the fewest savers within three quarters of the largest micro-batch: another saver
    (a 4-bit base above all) is not worth one more row per micro-batch."""
    rows_per_example = Plan(batch=1, objective=prefs.objective).rows  # a pair is two rows
    busy = min(prefs.effective_batch, max(1, _BUSY_TOKENS // (seq * rows_per_example)))
    for savers, plan in options:
        if plan.batch >= busy:
            return savers, plan
    largest = max(plan.batch for _savers, plan in options)
    return next(option for option in options if 4 * option[1].batch >= 3 * largest)


def _length_candidates(spec: ModelSpec, stats: Optional[LengthStats], prefs: Preferences) -> list[int]:
    """Max lengths from the most wanted down to the shortest worth training."""
    ceiling = spec.max_position_embeddings or MAX_SEQ
    wanted = [stats.p99, stats.p95] if stats else [prefs.default_length]
    lengths = []
    for length in wanted:
        length = min(ceiling, max(_MIN_LENGTH, _round_up(length, 64)))
        if length not in lengths:
            lengths.append(length)
    while lengths[-1] // 2 >= _MIN_LENGTH:
        lengths.append(lengths[-1] // 2)
    return sorted(set(lengths), reverse=True)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _saver_ladder(prefs: Preferences) -> list[dict[str, Any]]:
    """Memory savers in the order they are worth their cost."""
    ladder = [{}, {"grad_checkpointing": True},
              {"grad_checkpointing": True, "optimizer": "paged_adamw_8bit"}]
    if prefs.method in ("lora", "dora"):
        ladder += [{"method": "qlora"}, {"method": "qlora", "grad_checkpointing": True},
                   {"method": "qlora", "grad_checkpointing": True, "optimizer": "paged_adamw_8bit"}]
    return ladder


def _savers_plan(prefs: Preferences, savers: dict[str, Any], seq: int, rank: int, batch: int) -> Plan:
    settings = {"method": prefs.method, "precision": prefs.precision, "targets": prefs.targets,
                "seq": seq, "rank": rank, "batch": max(batch, _min_batch(prefs)), "objective": prefs.objective,
                "reference_free": prefs.reference_free, "from_adapter": prefs.from_adapter, **savers}
    settings["pure_bf16"] = resolve_pure_bf16(prefs.pure_bf16, settings["method"], prefs.precision)
    return Plan(**settings)


def _min_batch(prefs: Preferences) -> int:
    """The smallest micro-batch the objective trains with: KTO estimates its KL term from the
    other answers of the same micro-batch, so TRL refuses it one example at a time."""
    return 2 if prefs.objective == "kto" else 1


def _fits(spec: ModelSpec, plan: Plan, budget: int, device: str) -> bool:
    return estimate_memory(spec, plan, device).device_bytes <= budget


def _first_fitting(spec: ModelSpec, budget: int, device: str, prefs: Preferences, savers: dict[str, Any],
                   seq: int) -> Optional[Plan]:
    """Batch 1 at this length and these savers, with the base rank or failing that the smallest
    (going on from an adapter, its own rank: ``max_rank``)."""
    ranks = (prefs.max_rank,) if prefs.from_adapter else (min(_BASE_RANK, prefs.max_rank),
                                                          min(_RANKS[0], prefs.max_rank))
    for rank in ranks:
        batch = _min_batch(prefs)
        plan = _with_batch(_savers_plan(prefs, savers, seq, rank, batch), batch, prefs)
        if _fits(spec, plan, budget, device):
            return plan
    return None


def _grow_batch(spec: ModelSpec, budget: int, device: str, prefs: Preferences, plan: Plan) -> Plan:
    """The largest micro-batch (up to the effective batch) that fits, and the accumulation to match."""
    low, high = plan.batch, max(plan.batch, prefs.effective_batch)
    while low < high:  # memory grows with the batch, so the largest fitting one is found by bisection
        middle = (low + high + 1) // 2
        if _fits(spec, _with_batch(plan, middle, prefs), budget, device):
            low = middle
        else:
            high = middle - 1
    # A micro-batch that divides the effective batch keeps it exact; worth an eighth of the
    # micro-batch (a quarter would leave a fifth of the memory unused: 4 of 5 rows). Otherwise
    # the accumulation that reaches at least the effective batch.
    divisor = max(d for d in range(1, low + 1) if prefs.effective_batch % d == 0)
    if 8 * divisor >= 7 * low:
        low = divisor
    return _with_batch(plan, low, prefs)


def _with_batch(plan: Plan, batch: int, prefs: Preferences) -> Plan:
    """``plan`` at this micro-batch with the accumulation that keeps the effective batch. Sized
    with it: accumulating full fine-tuning keeps every gradient through the next forward pass."""
    return replace(plan, batch=batch, grad_accum=max(1, -(-prefs.effective_batch // batch)))


def _grow_rank(spec: ModelSpec, budget: int, device: str, prefs: Preferences, plan: Plan) -> Plan:
    if plan.uses_lora:
        for rank in _RANKS:
            if plan.rank < rank <= prefs.max_rank and _fits(spec, replace(plan, rank=rank), budget, device):
                plan = replace(plan, rank=rank)
    return plan


def _explain(spec: ModelSpec, plan: Plan, estimate: MemoryEstimate, free: int, stats: Optional[LengthStats],
             lengths: list[int], savers: dict[str, Any], prefs: Preferences, best_unquantised: int) -> list[str]:
    used = estimate.device_bytes / free
    lines = [f"{spec.name} with {plan.describe()} takes {human_bytes(estimate.device_bytes)} of the "
             f"{human_bytes(free)} free ({used:.0%}), within the {prefs.margin:.0%} safety margin."]
    if plan.method != prefs.method and best_unquantised:
        lines.append(f"QLoRA (a 4-bit {plan.quant.upper()} base) is used because over a {plan.precision} base only a "
                     f"micro-batch of {best_unquantised} fits at {plan.seq} tokens, against {plan.batch} with 4 bits.")
    elif plan.method != prefs.method:
        lines.append(f"QLoRA (a 4-bit {plan.quant.upper()} base) is used because {prefs.method.upper()} over a "
                     f"{plan.precision} base does not fit at {plan.seq} tokens even with gradient checkpointing "
                     "and an 8-bit optimizer.")
    if stats is not None:
        covered = "99%" if plan.seq >= stats.p99 else "95%" if plan.seq >= stats.p95 else "fewer"
        lines.append(f"Max length {plan.seq} covers {covered} of the examples (p95 {stats.p95}, p99 {stats.p99} tokens)"
                     + ("." if plan.seq >= stats.p95 else "; longer ones are cut, since no longer length fits."))
    elif plan.seq == lengths[0]:
        lines.append(f"Max length {plan.seq} is the default; give dataset statistics to size it to your data.")
    else:
        lines.append(f"Max length is cut to {plan.seq} tokens: {lengths[0]} does not fit.")
    lines.append(f"Micro-batch {plan.batch} with {plan.grad_accum} accumulation step(s) keeps the effective batch "
                 f"at {plan.batch * plan.grad_accum} (you asked for {prefs.effective_batch})"
                 + ("." if plan.batch >= prefs.effective_batch else "; a larger micro-batch does not fit."))
    if plan.uses_lora and prefs.from_adapter:
        lines.append(f"Rank {plan.rank} is the rank of the adapter the run goes on training.")
    elif plan.uses_lora:
        lines.append(f"Rank {plan.rank} on {plan.targets} layers"
                     + (" is the highest rank allowed." if plan.rank >= prefs.max_rank else
                        " is the highest that fits with this batch."))
    if plan.pure_bf16:
        lines.append("Every weight trains in pure bf16: bf16 weights and gradients (and AdamW's states, with "
                     "Kahan-compensated updates) instead of fp32 master weights, about half the memory.")
    if plan.grad_checkpointing:
        lines.append("Gradient checkpointing is on: it recomputes each layer in the backward pass (about a third "
                     "more compute) so only one hidden state per layer is kept.")
    else:
        lines.append("Gradient checkpointing is off: everything fits without paying for recomputation.")
    if savers.get("optimizer"):
        lines.append("The paged 8-bit AdamW keeps optimizer states in a quarter of the memory, paged out under pressure.")
    return lines


def _suggest_smaller(spec: ModelSpec, budget: int, device: str, prefs: Preferences, seq: int) -> Optional[str]:
    """What would fit: the largest catalog model at the thriftiest plan, or a bigger device."""
    thrifty = _savers_plan(prefs, _saver_ladder(prefs)[-1], seq, _RANKS[0], 1)
    fitting = None
    for name in list_catalog():  # smallest first
        candidate = load_model_spec(name)
        if candidate.total_params >= spec.total_params:
            break
        if _fits(candidate, thrifty, budget, device):
            fitting = candidate
    needed = estimate_memory(spec, thrifty, device).device_bytes
    bigger = f"a device with at least {human_bytes(needed / (1 - prefs.margin))} free would fit {spec.name}"
    if fitting is None:
        return f"No catalog model fits in {human_bytes(budget)}; {bigger}."
    return (f"{fitting.name} ({fitting.total_params / 1e9:.1f}B parameters) fits with {thrifty.describe()}; "
            f"or {bigger}.")
