"""Between a run configuration and a memory plan: what the estimator needs to know of a
RunConfig, and the RunConfig that an auto-fit plan turns it into.

The studio's memory bar, chat's "unload before training" and the out-of-memory retry all
go through here, so the estimate is always of the run that would really start.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from engine.core.choices import resolve_precision, resolve_pure_bf16
from engine.run.config import RunConfig
from engine.memory.plan import Plan

# Settings a plan decides; the rest of the RunConfig (data, steps, learning rate...) stays.
_PLAN_TO_CONFIG = {"rank": "rank", "targets": "targets", "batch": "batch_size", "seq": "max_length",
                   "grad_checkpointing": "grad_checkpointing", "optimizer": "optimizer", "grad_accum": "grad_accum",
                   "quant": "quant", "double_quant": "double_quant"}


def run_precision(config: RunConfig, device_kind: str, bf16: bool) -> str:
    """The precision the run will train in (``auto`` resolved as the recipe resolves it)."""
    return resolve_precision(config.precision, device_kind, bf16)


def plan_for(config: RunConfig, device_kind: str, bf16: bool = True, precision: Optional[str] = None) -> Plan:
    """The estimator's plan for the run ``config`` describes on a ``device_kind`` device
    (``precision``: the one the run resolved, when known)."""
    precision = precision or run_precision(config, device_kind, bf16)
    if config.method == "qlora" and config.compute_dtype != "auto":
        precision = config.compute_dtype
    targets = config.targets if config.target_modules is None else "all-linear"
    return Plan(
        method=config.method, rank=config.rank, targets=targets, batch=config.batch_size, seq=config.max_length,
        grad_checkpointing=config.grad_checkpointing, optimizer=config.optimizer, precision=precision,
        quant=config.quant, double_quant=config.double_quant, grad_accum=config.grad_accum,
        num_virtual_tokens=config.num_virtual_tokens, lora_dropout=config.dropout if config.uses_lora else 0.0,
        prefix_projection=config.prefix_projection,
        target_modules=tuple(config.target_modules) if config.target_modules is not None else None,
        pure_bf16=resolve_pure_bf16(config.pure_bf16, config.method, precision),
        objective=config.objective, reference_free=config.reference_free, from_adapter=config.from_adapter is not None,
    )


def fit_run(config: RunConfig, spec: Any, device_kind: str, free_bytes: int, lengths: Optional[Any] = None, *,
            bf16: bool = True, after_out_of_memory: bool = False) -> Any:
    """Auto-fit for the run ``config`` describes on a ``device_kind`` device with ``free_bytes``
    free (``lengths``: the dataset's ``LengthStats``): the one way the Train page's Auto-fit and
    the out-of-memory guard size a run. It keeps the run's method family, precision, targets and
    effective batch; ``after_out_of_memory`` also keeps it from suggesting a larger rank or a
    longer max length than the run that just ran out of memory."""
    keep: dict[str, Any] = {"effective_batch": config.batch_size * config.grad_accum}
    if after_out_of_memory:
        keep.update(max_rank=config.rank if config.uses_lora else 64, default_length=config.max_length)
    # QLoRA is LoRA with a 4-bit base, a memory saver auto-fit may take or leave.
    family = "lora" if config.method == "qlora" else config.method
    return fit_plan(plan_for(config, device_kind, bf16), spec, device_kind, free_bytes, lengths, method=family, **keep)


def fit_plan(plan: Plan, spec: Any, device_kind: str, free_bytes: int, lengths: Optional[Any] = None,
             **keep: Any) -> Any:
    """Auto-fit keeping ``plan``'s method, precision and targets (``keep``: other preferences,
    or the method to keep instead): what ``fit_run`` and the CLI's ``estimate --fit`` call."""
    from engine.memory.autofit import auto_fit

    preferences = {"method": plan.method, "precision": plan.precision, "targets": plan.targets,
                   "pure_bf16": "on" if plan.pure_bf16 else "off", "objective": plan.objective,
                   "reference_free": plan.reference_free, "from_adapter": plan.from_adapter}
    if plan.from_adapter and plan.uses_lora:
        preferences["max_rank"] = plan.rank  # the starting adapter's own rank trains on
    preferences.update(keep)
    return auto_fit(spec, free_bytes, lengths, preferences, device=device_kind)


def config_with_plan(config: RunConfig, plan: Plan | dict[str, Any]) -> RunConfig:
    """``config`` changed to follow ``plan`` (an auto-fit result): method, batch, length, savers.

    The effective batch (micro-batch x accumulation) is the plan's, which auto-fit keeps at
    what was asked; the learning rate and the data settings are left as they were.
    """
    plan = plan if isinstance(plan, Plan) else Plan.from_dict(plan)
    changes: dict[str, Any] = {field: getattr(plan, key) for key, field in _PLAN_TO_CONFIG.items()}
    if config.target_modules is not None and plan.targets == "all-linear":
        changes.pop("targets")  # the user's own module list stands; the plan was sized for all-linear
    if plan.method != config.method:
        changes["method"] = plan.method
    if plan.method not in ("lora", "dora", "qlora") or config.from_adapter:
        # (A run started from an adapter trains that adapter's own rank and layers.)
        changes.pop("rank", None)
        changes.pop("targets", None)
    updated = replace(config, **changes)
    updated.validate()
    return updated


def describe_changes(before: RunConfig, after: RunConfig) -> list[str]:
    """'batch size 8 -> 2' lines for the settings a plan changed, in the order a user reads them."""
    labels = {"method": "method", "rank": "rank", "targets": "targets", "batch_size": "batch size",
              "grad_accum": "gradient accumulation", "max_length": "max length",
              "grad_checkpointing": "gradient checkpointing", "optimizer": "optimizer", "quant": "quantisation",
              "double_quant": "double quantisation"}
    lines = []
    for field, label in labels.items():
        old, new = getattr(before, field), getattr(after, field)
        if old != new:
            lines.append(f"{label} {_show(old)} -> {_show(new)}")
    return lines


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def length_stats_of(lengths: Any) -> Optional[Any]:
    """``LengthStats`` of a sequence of token counts (None for no rows)."""
    import numpy as np

    from engine.memory.autofit import LengthStats

    values = np.asarray(lengths)
    if not values.size:
        return None
    p50, p95, p99 = (int(np.ceil(np.percentile(values, q))) for q in (50, 95, 99))
    return LengthStats(p50=max(1, p50), p95=max(1, p95), p99=max(1, p99), max=max(1, int(values.max())))
