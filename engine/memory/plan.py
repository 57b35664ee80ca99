"""The plan a memory estimate is for: the settings that decide a run's memory, and their
validation (what no real run could ask for is refused before any arithmetic).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

from engine.core.choices import (METHODS, OBJECTIVES, OPTIMIZERS, PAIRED_OBJECTIVES, PRECISIONS, PREFERENCE_METHODS,
                                 PREFERENCE_OBJECTIVES, QUANTS, REFERENCE_OBJECTIVES, TARGET_PRESETS, Method, Objective,
                                 Optimizer, Precision, Quant, TargetPreset)
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
    instead of fp32 masters under autocast (resolved: ``engine.core.choices.resolve_pure_bf16``);
    ``objective`` is what the loss teaches (SFT, or a preference objective run by TRL's trainer),
    and ``reference_free`` DPO's setting that reads the reference log-probabilities as zero
    (no reference pass, no reference copy); ``from_adapter`` whether the run goes on training a
    trained adapter (``RunConfig.from_adapter``), which is then also its reference. ``batch`` counts examples: a pair for DPO, ORPO
    and SimPO, which run chosen and rejected side by side (``rows``).
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
    objective: Objective = "sft"
    reference_free: bool = False
    from_adapter: bool = False

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
    def is_preference(self) -> bool:
        return self.objective in PREFERENCE_OBJECTIVES

    @property
    def rows(self) -> int:
        """Sequences a micro-batch runs through the model with gradients: TRL stacks each pair's
        chosen and rejected answers (prompt included) into one batch of twice the pairs, every
        row padded to the batch's longest; KTO's rows are single labelled answers."""
        return 2 * self.batch if self.objective in PAIRED_OBJECTIVES else self.batch

    @property
    def reference_passes(self) -> int:
        """Forward passes without gradients through the reference per micro-batch (each over
        ``rows`` rows): DPO one, over the pairs; KTO two, over its answers and over its KL batch
        (each prompt with the next example's answer, which estimates the KL term). With an
        adapter the reference is the same model with the adapter switched off."""
        if self.objective not in REFERENCE_OBJECTIVES or self.reference_free:
            return 0
        return 2 if self.objective == "kto" else 1

    @property
    def reference_copy(self) -> bool:
        """Whether a second, frozen copy of the model is held as the reference: full fine-tuning
        changes the weights themselves, so no adapter can be switched off to get the start back."""
        return self.method == "full" and self.reference_passes > 0

    @property
    def reference_adapter(self) -> bool:
        """Whether a frozen copy of the adapter is held as the reference (TRL's "ref" adapter):
        only for a run started from a trained adapter. A new adapter starts as the identity, so
        the engine drops TRL's copy of it and the reference is the base with the adapter off
        (``engine.train.preference.build``)."""
        return self.uses_lora and self.from_adapter and self.reference_passes > 0

    @property
    def virtual_tokens(self) -> int:
        return self.num_virtual_tokens if self.method in ("prompt", "prefix", "ptuning") else 0

    def validate(self) -> None:
        """Raise a StudioError naming the first impossible setting."""
        for name, value, choices in (
            ("method", self.method, METHODS), ("targets", self.targets, TARGET_PRESETS),
            ("optimizer", self.optimizer, OPTIMIZERS), ("precision", self.precision, PRECISIONS),
            ("quant", self.quant, QUANTS), ("attention", self.attention, ATTENTIONS),
            ("objective", self.objective, OBJECTIVES),
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
        for name in ("grad_checkpointing", "double_quant", "prefix_projection", "pure_bf16", "reference_free",
                     "from_adapter"):
            if not isinstance(getattr(self, name), bool):
                raise StudioError(f"{name.replace('_', ' ')} must be true or false")
        modules = self.target_modules
        if modules is not None and (not isinstance(modules, tuple) or not modules
                                    or not all(isinstance(name, str) and name for name in modules)):
            raise StudioError("target modules must be a list of module names such as q_proj, v_proj")
        if self.pure_bf16 and (self.method, self.precision) != ("full", "bf16"):
            raise StudioError("pure bf16 applies to full fine-tuning in bf16 only")
        if self.is_preference and self.method not in PREFERENCE_METHODS:
            raise StudioError(f"{self.objective} trains {', '.join(PREFERENCE_METHODS)}, not {self.method}")
        if self.reference_free and self.objective != "dpo":
            raise StudioError("reference-free is a DPO setting")
        if self.from_adapter and not (self.uses_lora or self.method == "full"):
            raise StudioError(f"a run can start from an adapter with LoRA, DoRA, QLoRA or full fine-tuning, "
                              f"not {self.method}")

    def describe(self) -> str:
        parts = [self.method] if not self.is_preference else [
            f"{self.objective}{' reference-free' if self.reference_free else ''} {self.method}"]
        if self.from_adapter:
            parts[0] += " from an adapter"
        if self.uses_lora:
            parts.append(f"r{self.rank} {','.join(self.target_modules) if self.target_modules else self.targets}")
        if self.method == "qlora":
            parts.append(self.quant + (" double-quant" if self.double_quant and self.quant != "int8" else ""))
        if self.virtual_tokens:
            parts.append(f"{self.num_virtual_tokens} virtual tokens")
        pairs = " pairs" if self.rows > self.batch else ""
        parts.append(f"batch {self.batch}{pairs} x {self.seq} tokens")
        if self.grad_accum > 1:
            parts.append(f"x{self.grad_accum} accumulation")
        parts += ["pure bf16" if self.pure_bf16 else self.precision, self.attention, self.optimizer]
        if self.grad_checkpointing:
            parts.append("gradient checkpointing")
        return ", ".join(parts)
