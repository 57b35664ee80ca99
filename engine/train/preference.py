"""Preference tuning: DPO, KTO, ORPO and SimPO, each with TRL's own trainer, run the studio's way.

Each trainer is TRL's class under ``StudioTrainer`` (atomic checkpoints, the schedule of a
continued run), built on ``training_arguments``' values in TRL's config class, with the same
callback: pause / stop, checkpoints, resume, the learning-rate schedule, the optimizer choice
and pure bf16 work as for supervised runs. SimPO is TRL's CPO trainer with its SimPO loss and
no behaviour-cloning term.

What each objective measures against (its reference):

- DPO and KTO over LoRA / DoRA / QLoRA: the base with the adapter switched off, so no second
  copy of the model exists. Started from an adapter (``from_adapter``), TRL keeps a frozen copy
  of that adapter (only the adapter's weights) named "ref": the usual SFT -> DPO recipe.
- DPO and KTO over full fine-tuning: a second copy of the weights, loaded as the policy was
  (with ``from_adapter`` merged into both).
- Reference-free DPO: a uniform reference whose log-probabilities are all 0, so no reference
  pass and no copy.
- ORPO and SimPO have no reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from trl.experimental.cpo import CPOConfig, CPOTrainer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from engine.core.choices import REFERENCE_OBJECTIVES
from engine.errors import StudioError
from engine.run.config import RunConfig
from engine.train.trainer import StudioTrainer, training_arguments

# The name TRL gives the frozen copy of a starting adapter (DPOTrainer / KTOTrainer).
REFERENCE_ADAPTER = "ref"


class StudioDPOTrainer(StudioTrainer, DPOTrainer):
    pass


class ReferenceFreeDPOTrainer(StudioDPOTrainer):
    """DPO against a uniform reference: the reference log-probabilities TRL would precompute
    are zeros, so the loss compares the policy's own log-probabilities of the two answers."""

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        zeros = [0.0] * len(dataset)
        return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)


class StudioKTOTrainer(StudioTrainer, KTOTrainer):
    pass


class _CountsPairTokens:
    """ORPO's and CPO's batches hold ``chosen_*`` and ``rejected_*`` sequences (each with its prompt)
    instead of ``input_ids``: count the non-padding tokens of both, as DPO's count does, so the
    run's tokens/s shows for them too."""

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        import torch

        if self.args.include_num_input_tokens_seen == "no":
            return
        tokens = sum(inputs[f"{side}_attention_mask"].sum() for side in ("chosen", "rejected"))
        tokens = torch.as_tensor(tokens, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()


class StudioORPOTrainer(_CountsPairTokens, StudioTrainer, ORPOTrainer):
    pass


class StudioCPOTrainer(_CountsPairTokens, StudioTrainer, CPOTrainer):
    pass


def needs_reference_copy(config: RunConfig) -> bool:
    """Whether the run holds a second copy of the model as its reference (full fine-tuning only)."""
    return config.method == "full" and config.objective in REFERENCE_OBJECTIVES and not config.reference_free


def arguments(config: RunConfig, run_dir: Path, *, examples: int, has_eval: bool, device: str,
              precision: str, report_to: Any = "none") -> Any:
    """TRL's config for the objective: the run's training arguments plus the objective's settings."""
    common = dict(examples=examples, has_eval=has_eval, device=device, precision=precision, report_to=report_to,
                  max_length=config.max_length, beta=config.beta)
    if config.objective == "dpo":
        # The SFT weight is TRL's "sft" loss term beside the chosen DPO loss (RPO).
        losses = ([config.dpo_loss, "sft"], [1.0, config.sft_weight]) if config.sft_weight else ([config.dpo_loss], None)
        return training_arguments(config, run_dir, arguments_class=DPOConfig, **common, loss_type=losses[0],
                                  loss_weights=losses[1], label_smoothing=config.label_smoothing,
                                  precompute_ref_log_probs=config.reference_free)
    if config.objective == "kto":
        # KTO estimates its KL term from the other answers of the same batch, in order: TRL samples
        # sequentially (the rows were shuffled once, with the run's seed, when they were read).
        return training_arguments(config, run_dir, arguments_class=KTOConfig, **common,
                                  desirable_weight=config.desirable_weight,
                                  undesirable_weight=config.undesirable_weight, train_sampling_strategy="sequential")
    if config.objective == "orpo":
        return training_arguments(config, run_dir, arguments_class=ORPOConfig, **common)
    if config.objective == "simpo":
        return training_arguments(config, run_dir, arguments_class=CPOConfig, **common, loss_type="simpo",
                                  cpo_alpha=0.0, simpo_gamma=config.simpo_gamma)
    raise StudioError(f"{config.objective} is not a preference objective")


def build(config: RunConfig, args: Any, model: Any, tokenizer: Any, train: Any, eval_set: Optional[Any],
          callbacks: list[Any], optimizer_cls_and_kwargs: Any = None, ref_model: Any = None) -> Any:
    """The objective's trainer over ``model`` (a PeftModel or, for full fine-tuning, the model)."""
    import torch

    kwargs = dict(model=model, args=args, train_dataset=train, eval_dataset=eval_set, processing_class=tokenizer,
                  callbacks=callbacks, schedule_start=config.schedule_start)
    if config.objective == "dpo":
        trainer_class = ReferenceFreeDPOTrainer if config.reference_free else StudioDPOTrainer
        trainer = trainer_class(ref_model=ref_model, **kwargs)
    elif config.objective == "kto":
        trainer = StudioKTOTrainer(ref_model=ref_model, **kwargs)
    elif config.objective == "orpo":
        trainer = StudioORPOTrainer(**kwargs)
    else:
        trainer = StudioCPOTrainer(**kwargs)
    peft_config = getattr(model, "peft_config", {})
    if REFERENCE_ADAPTER in peft_config and not config.from_adapter:
        # TRL copies whatever adapter it is given as the reference; a new adapter starts as the
        # identity, so its reference is the base itself: drop the copy, and TRL's reference pass
        # runs with the adapter switched off (no extra weights, no extra adapter compute).
        model.delete_adapter(REFERENCE_ADAPTER)
    if config.method == "qlora":
        # TRL casts QLoRA's trainable weights to bf16; the studio keeps adapters in fp32 over a
        # 4-bit base (engine.train.methods), which the estimate counts and fp16 loss scaling needs.
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.to(torch.float32)
    # TRL's trainers take no optimizer class; the Trainer reads this attribute when it makes one.
    trainer.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
    return trainer


def load_reference(config: RunConfig, model_path: Path, precision: str, device: str,
                   start_adapter: Optional[Path]) -> Any:
    """Full fine-tuning's reference: a frozen copy of the starting weights, loaded as the policy was."""
    from engine.train import loading

    reference = loading.load_model(model_path, config, precision, device)
    if start_adapter is not None:
        reference = merge_adapter(reference, start_adapter)
    reference.requires_grad_(False)
    return reference.eval()


def start_from_adapter(model: Any, config: RunConfig, adapter: Path) -> Any:
    """The model a run started from an adapter trains: that adapter, trainable, over the base
    (or, for full fine-tuning, merged into the weights, which then all train)."""
    from peft import PeftModel

    if config.method == "full":
        model = merge_adapter(model, adapter)
        for parameter in model.parameters():
            parameter.requires_grad = True
        return model
    peft_model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    # Trainable adapter weights in fp32, as a new adapter's are (engine.train.methods).
    for parameter in peft_model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return peft_model


def merge_adapter(model: Any, adapter: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
