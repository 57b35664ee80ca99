"""The transformers Trainer as the studio runs it: its arguments from a RunConfig, atomic
checkpoints, the learning-rate schedule of a continued ("train more") run, and a loss that
never holds the batch's logits (``engine.train.lean_loss``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

from transformers import Trainer

from engine.core.atomic import staging_path
from engine.run.rundir import RunDir
from engine.run.checkpoints import CHECKPOINT_PREFIX, STAGING, TRAINER_STATE
from engine.run.config import RunConfig
from engine.train import lean_loss, pure_bf16

# The studio's optimizer names -> the Trainer's.
OPTIMIZERS = {"adamw": "adamw_torch_fused", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit", "sgd": "sgd"}
SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def log_every(config: RunConfig, examples: int, world_size: int = 1) -> int:
    if config.log_every:
        return config.log_every
    # About a hundred points per curve: enough to see, few enough device syncs.
    return max(1, planned_steps(config, examples, world_size) // 100)


def planned_steps(config: RunConfig, examples: int, world_size: int = 1) -> int:
    if config.max_steps:
        return config.max_steps
    per_epoch = -(-examples // (config.batch_size * config.grad_accum * world_size))
    return max(1, int(per_epoch * config.epochs))


def training_arguments(config: RunConfig, run_dir: Path, *, examples: int, has_eval: bool, device: str,
                       precision: str, arguments_class: Any = None, report_to: Any = "none", **extra: Any) -> Any:
    """The Trainer's arguments for this run. A preference run passes TRL's config class (a
    TrainingArguments subclass) and its objective's settings in ``extra`` (``engine.train.preference``),
    so every run schedules, saves, logs and computes the same way whatever trains it. ``report_to``:
    the experiment trackers that passed their checks (``engine.train.trackers``)."""
    from transformers import TrainingArguments

    every = log_every(config, examples, _world_size())
    eval_steps = config.eval_every or 10 * every  # about ten evaluations a run unless asked otherwise
    early_stopping = bool(config.early_stopping_patience) and has_eval
    # Early stopping keeps the best adapter: it needs a checkpoint at every evaluation.
    save_steps = eval_steps if early_stopping else (config.save_every or 500)
    values = dict(
        output_dir=str(RunDir(run_dir).checkpoints),
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        lr_scheduler_type=SCHEDULERS[config.lr_scheduler],
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=OPTIMIZERS[config.optimizer],
        **_checkpointing(config.grad_checkpointing),
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        logging_steps=every,
        logging_first_step=True,
        # The Trainer would hide a NaN or infinite loss behind the running average: the run must see it to stop.
        logging_nan_inf_filter=False,
        save_strategy="steps" if (config.save_every or early_stopping) else "no",
        save_steps=save_steps,
        save_total_limit=config.keep_checkpoints or None,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="eval_loss" if early_stopping else None,
        greater_is_better=False if early_stopping else None,
        report_to=report_to,
        run_name=Path(run_dir).name,  # what the trackers call the run: its folder's name
        seed=config.seed,
        data_seed=config.seed,
        # Autocast over fp32 masters; pure bf16 trains bf16 weights as they are (engine.train.pure_bf16).
        bf16=precision == "bf16" and not pure_bf16.applies(config, precision),
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        # A padding-free batch has no padding (and no attention mask to count it by): every token counts.
        include_num_input_tokens_seen="all" if config.batching == "padding_free" else "non_padding",
        remove_unused_columns=False,
        fsdp=config.fsdp is not None,
        fsdp_config=config.fsdp,
        deepspeed=config.deepspeed,
        ddp_find_unused_parameters=False if _world_size() > 1 else None,
    )
    return (arguments_class or TrainingArguments)(**{**values, **extra})


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing under the name this transformers gives it (``activation_`` since 5.x).
    Non-reentrant checkpointing needs no input that requires a gradient, so a frozen base works as is."""
    from transformers import TrainingArguments

    name = "activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ \
        else "gradient_checkpointing"
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class StudioTrainer(Trainer):
    """The stock Trainer with three changes.

    - The loss is ``engine.train.lean_loss``'s: the model's own loss, computed a chunk of tokens at a
      time, so the whole batch's fp32 logits never exist (for every method; not where FSDP or
      DeepSpeed shard the head's weight, which is whole only inside its own forward pass).
    - Checkpoints are written into ``checkpoints/.staging`` and renamed into place once
      complete, so a crash or a full disk never leaves a half-written ``checkpoint-N``
      that looks usable; the Trainer's own rotation then applies to the real folder.
    - A continued run (``schedule_start`` > 0) runs its learning-rate schedule (warm-up
      included) over its new steps only, instead of resuming the finished run's decayed one.
    """

    def __init__(self, *args: Any, schedule_start: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._schedule_start = schedule_start
        self._staging: Optional[Path] = None
        self._logits_wanted = False

    # the loss -------------------------------------------------------------------------------
    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if not self._lean_loss_applies(model, inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        owner = self.accelerator.unwrap_model(model)

        def forward(labels: Any, num_items_in_batch: Any = None, **rest: Any) -> dict[str, Any]:
            return {"loss": lean_loss.model_loss(model, owner, rest, labels, num_items_in_batch)}

        # The stock method runs as is around a forward that returns the model's loss computed leanly:
        # it passes num_items_in_batch exactly when the model would get it, and scales the loss after.
        return super().compute_loss(forward, inputs, return_outputs, num_items_in_batch)

    def _lean_loss_applies(self, model: Any, inputs: dict[str, Any]) -> bool:
        return ("labels" in inputs and self.label_smoother is None and self.compute_loss_func is None
                and not self.is_fsdp_enabled and not self.is_deepspeed_enabled and not self._logits_wanted
                and lean_loss.output_head(self.accelerator.unwrap_model(model)) is not None)

    def prediction_step(self, model: Any, inputs: dict[str, Any], prediction_loss_only: bool,
                        ignore_keys: Optional[list[str]] = None) -> Any:
        # Evaluation wants the loss only (the studio has no compute_metrics); a prediction that
        # returns logits computes them the stock way.
        self._logits_wanted = not prediction_loss_only
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            self._logits_wanted = False

    # the schedule ---------------------------------------------------------------------------
    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is not None or not self._schedule_start:
            return super().create_scheduler(num_training_steps, optimizer)
        from torch.optim.lr_scheduler import LambdaLR
        from transformers import get_scheduler

        optimizer = optimizer or self.optimizer
        start = self._schedule_start
        segment = get_scheduler(self.args.lr_scheduler_type, optimizer=optimizer,
                                num_warmup_steps=self.args.get_warmup_steps(num_training_steps - start),
                                num_training_steps=max(1, num_training_steps - start))
        self.lr_scheduler = LambdaLR(optimizer, [_shifted(factor, start) for factor in segment.lr_lambdas])
        return self.lr_scheduler

    def _load_optimizer_and_scheduler(self, checkpoint: Optional[str]) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self._schedule_start or self.lr_scheduler is None:
            return
        # The finished run's state holds the rate its schedule ended on (0 for a decayed one);
        # the first new step must train at the new schedule's rate instead.
        scheduler = self.lr_scheduler
        rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs,
                                                                             scheduler.lr_lambdas)]
        for group, rate in zip(scheduler.optimizer.param_groups, rates):
            group["lr"] = rate
        scheduler._last_lr = rates

    # atomic checkpoints ---------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        return str(self._staging) if self._staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        final_root = Path(self.args.output_dir)
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        self._staging = final_root / STAGING
        if self.args.should_save:
            shutil.rmtree(self._staging / name, ignore_errors=True)  # what a crash left of an earlier try
            self._staging.mkdir(parents=True, exist_ok=True)
        _barrier(self.args)
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            # A full disk or a crash while writing: what was written is not a checkpoint.
            if self.args.should_save:
                shutil.rmtree(final_root / STAGING / name, ignore_errors=True)
            raise
        finally:
            self._staging = None
        _barrier(self.args)  # every rank has written its RNG state into the staged folder
        if not self.args.should_save:
            return
        staged = final_root / STAGING / name
        self._point_best_checkpoint_at(final_root)
        self.state.save_to_json(str(staged / TRAINER_STATE))
        _fsync_tree(staged)
        _replace_folder(staged, final_root / name)
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(str(final_root), self.args.save_total_limit, self.state.best_model_checkpoint)

    def _point_best_checkpoint_at(self, final_root: Path) -> None:
        """The best checkpoint as it will be named once in place (the staged path is temporary)."""
        if self.state.best_global_step:
            best = final_root / f"{CHECKPOINT_PREFIX}{self.state.best_global_step}"
            current = self.state.best_global_step == self.state.global_step
            self.state.best_model_checkpoint = str(best) if current or best.is_dir() else None


def _shifted(factor: Any, start: int) -> Any:
    return lambda step: factor(max(0, step - start))


def _barrier(args: Any) -> None:
    from transformers.training_args import ParallelMode

    if args.parallel_mode == ParallelMode.DISTRIBUTED:
        import torch.distributed as dist

        dist.barrier()


def _fsync_tree(folder: Path) -> None:
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def _replace_folder(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an existing ``target`` (the same step saved again) goes first,
    moved aside so that some complete copy exists at every moment."""
    if target.exists():
        aside = staging_path(target, "old")
        os.rename(target, aside)
        os.rename(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(source, target)
