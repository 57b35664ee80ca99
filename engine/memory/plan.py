"""The plan a memory estimate is for: the settings that decide a run's memory, and their
validation (what no real run could ask for is refused before any arithmetic).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

from engine.core.choices import (METHODS, OPTIMIZERS, PRECISIONS, QUANTS, TARGET_PRESETS, Method, Optimizer, Precision,
                                 Quant, TargetPreset)
from engine.core.checks import MAX_BATCH, MAX_LENGTH, MAX_RANK, MAX_VIRTUAL_TOKENS, fraction, whole
from engine.errors import StudioError

ATTENTIONS = ("sdpa", "eager")
MAX_SEQ = MAX_LENGTH


@dataclass
class Plan:
    """The settings that decide a run's memory.

    ``quant`` and ``double_quant`` apply to QLoRA only (nf4/fp4 4-bit, or LLM.int8 loading);
    ``num_virtual_tokens`` and ``prefix_projection`` to prompt, prefix and P-tuning;
    ``lora_dropout`` to LoRA-family methods (the engine's default is 0.05, and a dropout
    above zero saves a mask and a dropped copy of every adapted input);
    ``pure_bf16`` to full fine-tuning in bf16: bf16 weights, gradients and optimizer states
    instead of fp32 masters under autocast (resolved: ``engine.core.choices.resolve_pure_bf16``).
    """

    method: Method = "lora"
    rank: int = 16
    targets: TargetPreset = "all-linear"
    batch: int = 4
    seq: int = 512
    grad_checkpointing: bool = False
    optimizer: Optimizer = "adamw"
    precision: Precision = "bf16"
    quant: Quant = "nf4"
    double_quant: bool = True
    attention: str = "sdpa"
    grad_accum: int = 1
    num_virtual_tokens: int = 20
    lora_dropout: float = 0.05
    prefix_projection: bool = False
    # The model's own module names (q_proj, gate_proj...) instead of a targets preset.
    target_modules: Optional[tuple[str, ...]] = None
    pure_bf16: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.target_modules is not None:
            data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudioError(f"unknown plan setting(s): {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("target_modules"), list):
            values["target_modules"] = tuple(values["target_modules"])
        plan = cls(**values)
        plan.validate()
        return plan

    @property
    def uses_lora(self) -> bool:
        return self.method in ("lora", "dora", "qlora")

    @property
    def virtual_tokens(self) -> int:
        return self.num_virtual_tokens if self.method in ("prompt", "prefix", "ptuning") else 0

    def validate(self) -> None:
        """Raise a StudioError naming the first impossible setting."""
        for name, value, choices in (
            ("method", self.method, METHODS), ("targets", self.targets, TARGET_PRESETS),
            ("optimizer", self.optimizer, OPTIMIZERS), ("precision", self.precision, PRECISIONS),
            ("quant", self.quant, QUANTS), ("attention", self.attention, ATTENTIONS),
        ):
            if value not in choices:
                raise StudioError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        for name, value, ceiling in (
            ("rank", self.rank, MAX_RANK), ("batch size", self.batch, MAX_BATCH),
            ("max length", self.seq, MAX_SEQ), ("gradient accumulation", self.grad_accum, MAX_BATCH),
            ("virtual tokens", self.num_virtual_tokens, MAX_VIRTUAL_TOKENS),
        ):
            whole(name, value, 1, ceiling)
        fraction("LoRA dropout", self.lora_dropout, high_open=True)
        for name in ("grad_checkpointing", "double_quant", "prefix_projection", "pure_bf16"):
            if not isinstance(getattr(self, name), bool):
                raise StudioError(f"{name.replace('_', ' ')} must be true or false")
        modules = self.target_modules
        if modules is not None and (not isinstance(modules, tuple) or not modules
                                    or not all(isinstance(name, str) and name for name in modules)):
            raise StudioError("target modules must be a list of module names such as q_proj, v_proj")
        if self.pure_bf16 and (self.method, self.precision) != ("full", "bf16"):
            raise StudioError("pure bf16 applies to full fine-tuning in bf16 only")

    def describe(self) -> str:
        parts = [self.method]
        if self.uses_lora:
            parts.append(f"r{self.rank} {','.join(self.target_modules) if self.target_modules else self.targets}")
        if self.method == "qlora":
            parts.append(self.quant + (" double-quant" if self.double_quant and self.quant != "int8" else ""))
        if self.virtual_tokens:
            parts.append(f"{self.num_virtual_tokens} virtual tokens")
        parts.append(f"batch {self.batch} x {self.seq} tokens")
        if self.grad_accum > 1:
            parts.append(f"x{self.grad_accum} accumulation")
        parts += ["pure bf16" if self.pure_bf16 else self.precision, self.attention, self.optimizer]
        if self.grad_checkpointing:
            parts.append("gradient checkpointing")
        return ", ".join(parts)
