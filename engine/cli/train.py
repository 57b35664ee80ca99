"""lora-studio train: start a run from flags or a config, resume one, or train a finished run
more; it streams the run's progress, and Ctrl-C stops and saves."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from engine.cli.inputs import add_data_reading_flags, dataset_reference, open_data
from engine.cli.evaluate import progress_line
from engine.cli.output import print_error, print_json, print_progress, quiet_libraries
from engine.cli.parsing import add_command, number, whole_number
from engine.core.choices import RunStatus
from engine.errors import StudioError


def register(sub: Any) -> None:
    train = add_command(sub, "train", cmd_train, "train an adapter (streams progress; Ctrl-C stops and saves)")
    _add_input_and_method_flags(train)
    _add_optimisation_flags(train)
    _add_run_flags(train)


def _add_input_and_method_flags(train: argparse.ArgumentParser) -> None:
    from engine.core.choices import (BAD_ROWS, COMPUTE_DTYPES, METHODS, OBJECTIVES, PREFERENCE_OBJECTIVES, QUANTS,
                                     TRAIN_ON)

    train.add_argument("--model", help="starter, a model store name, a local folder or a .gguf file")
    train.add_argument("--dataset", help="a dataset file (JSONL, JSON, CSV, TSV, Parquet, text), a folder of them, "
                                         "or a Hugging Face dataset id")
    add_data_reading_flags(train)
    train.add_argument("--train-on", choices=TRAIN_ON, help="the loss on the assistant's replies only, or all tokens")
    train.add_argument("--val-fraction", type=number, help="share of rows held out to measure the eval loss")
    train.add_argument("--bad-rows", choices=BAD_ROWS, help="train on the good rows, or stop when any row is bad")
    train.add_argument("--evaluate-at-end", action=argparse.BooleanOptionalAction, default=None,
                       help="with --val-fraction: when the run completes, score its adapter against the base on "
                            "the held-out rows and print the change (default on)")
    train.add_argument("--objective", choices=OBJECTIVES,
                       help="learn from replies (sft, the default) or from preferences between answers")
    train.add_argument("--method", choices=(*METHODS, *PREFERENCE_OBJECTIVES),
                       help="what trains; dpo, orpo, kto or simpo is short for that objective over LoRA")
    train.add_argument("--rank", type=whole_number)
    train.add_argument("--alpha", type=number)
    train.add_argument("--dropout", type=number)
    train.add_argument("--rslora", action="store_true", default=None, help="scale LoRA by alpha/sqrt(rank)")
    train.add_argument("--targets", help="q,v, attention, all-linear, or module names such as q_proj,gate_proj")
    train.add_argument("--quant", choices=QUANTS, help="qlora: the base in 4-bit nf4 or fp4, or 8-bit int8")
    train.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None,
                       help="qlora: quantise the 4-bit block scales too (default on)")
    train.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, help="qlora: what the 4-bit layers compute in")
    train.add_argument("--virtual-tokens", type=whole_number, help="prompt, prefix, ptuning: how many virtual tokens")
    train.add_argument("--prompt-init-text", help="prompt tuning: start the virtual tokens from this text")
    train.add_argument("--prefix-projection", action="store_true", default=None,
                       help="prefix tuning: train through a reparametrising MLP")
    _add_preference_flags(train)


def _add_preference_flags(train: argparse.ArgumentParser) -> None:
    from engine.core.choices import DPO_LOSSES

    train.add_argument("--beta", type=number,
                       help="dpo, kto: how far the model may move from the reference; orpo: the weight of the "
                            "preference term; simpo: the reward scale")
    train.add_argument("--dpo-loss", choices=DPO_LOSSES, help="dpo: the loss (sigmoid is the paper's)")
    train.add_argument("--reference-free", action="store_true", default=None,
                       help="dpo: measure against a uniform reference: no reference pass, no reference copy")
    train.add_argument("--label-smoothing", type=number,
                       help="dpo with --dpo-loss robust: the share of pairs thought mislabelled")
    train.add_argument("--sft-weight", type=number,
                       help="dpo: the weight of a supervised loss on the chosen answers beside DPO's (RPO); 0: none")
    train.add_argument("--simpo-gamma", type=number, help="simpo: the reward margin it aims for")
    train.add_argument("--desirable-weight", type=number, help="kto: the weight of answers labelled good")
    train.add_argument("--undesirable-weight", type=number, help="kto: the weight of answers labelled bad")
    train.add_argument("--from-adapter", metavar="ADAPTER",
                       help="start from this adapter (library name or PEFT folder), which is also the reference: "
                            "SFT, then DPO")


def _add_optimisation_flags(train: argparse.ArgumentParser) -> None:
    from engine.core.choices import BATCHING, OPTIMIZERS, SCHEDULERS

    steps = train.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=whole_number)
    steps.add_argument("--epochs", type=number)
    train.add_argument("--batch", type=whole_number)
    train.add_argument("--grad-accum", type=whole_number)
    train.add_argument("--max-length", type=whole_number)
    train.add_argument("--lr", type=number)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--scheduler", choices=SCHEDULERS, help="the learning-rate schedule after the warm-up")
    train.add_argument("--warmup-steps", type=whole_number)
    train.add_argument("--weight-decay", type=number)
    train.add_argument("--max-grad-norm", type=number, help="clip gradients to this norm (0: off)")
    train.add_argument("--grad-checkpointing", action="store_true", default=None)
    train.add_argument("--batching", choices=BATCHING, help="padded batches, or rows packed without padding")
    train.add_argument("--group-by-length", action="store_true", default=None)


def _add_run_flags(train: argparse.ArgumentParser) -> None:
    from engine.core.choices import PRECISION_CHOICES, PURE_BF16_CHOICES, TRACKERS

    train.add_argument("--save-every", type=whole_number)
    train.add_argument("--keep-checkpoints", type=whole_number, help="keep the newest N checkpoints (0: all)")
    train.add_argument("--eval-every", type=whole_number)
    train.add_argument("--early-stopping", type=whole_number, metavar="PATIENCE",
                       help="stop after this many evaluations without a better eval loss")
    train.add_argument("--log-every", type=whole_number)
    train.add_argument("--report-to", type=_names, metavar=",".join(TRACKERS),
                       help="experiment trackers to report to as well, files in the run folder: TensorBoard events in "
                            "RUN_DIR/tensorboard, an MLflow store in RUN_DIR/mlruns, W&B offline in RUN_DIR/wandb "
                            "(online only once you are logged in)")
    train.add_argument("--mlflow-uri", metavar="URI",
                       help="with --report-to mlflow: its tracking server (http://host:port) or store, instead of "
                            "RUN_DIR/mlruns")
    train.add_argument("--seed", type=whole_number)
    train.add_argument("--name")
    train.add_argument("--precision", choices=PRECISION_CHOICES)
    train.add_argument("--pure-bf16", choices=PURE_BF16_CHOICES,
                       help="full fine-tuning with bf16 weights and optimizer states, no fp32 masters "
                            "(auto: whenever it trains in bf16)")
    train.add_argument("--device")
    train.add_argument("--memory-limit", help="cap the run's memory, e.g. 6GiB")
    train.add_argument("--config", help="a run config JSON (flags override it)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    more = train.add_mutually_exclusive_group()
    more.add_argument("--more-steps", type=whole_number, help="with --resume: train a finished run this many steps more")
    more.add_argument("--more-epochs", type=number, help="with --resume: train a finished run this many epochs more")


_TRAIN_FLAGS = {  # CLI flag -> RunConfig field
    "model": "model", "dataset": "dataset", "method": "method", "rank": "rank", "alpha": "alpha",
    "dropout": "dropout", "targets": "targets", "max_steps": "max_steps", "epochs": "epochs",
    "batch": "batch_size", "grad_accum": "grad_accum", "max_length": "max_length", "lr": "lr",
    "warmup_steps": "warmup_steps", "save_every": "save_every", "eval_every": "eval_every",
    "log_every": "log_every", "seed": "seed", "name": "name", "precision": "precision", "pure_bf16": "pure_bf16",
    "device": "device",
    "format": "data_format", "columns": "columns", "text_split": "text_split", "train_on": "train_on",
    "val_fraction": "val_fraction", "bad_rows": "bad_rows", "rslora": "use_rslora", "quant": "quant",
    "double_quant": "double_quant", "compute_dtype": "compute_dtype", "virtual_tokens": "num_virtual_tokens",
    "prompt_init_text": "prompt_init_text", "prefix_projection": "prefix_projection", "optimizer": "optimizer",
    "scheduler": "lr_scheduler", "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
    "grad_checkpointing": "grad_checkpointing", "batching": "batching", "group_by_length": "group_by_length",
    "keep_checkpoints": "keep_checkpoints", "early_stopping": "early_stopping_patience",
    "memory_limit": "memory_limit", "evaluate_at_end": "evaluate_at_end",
    "objective": "objective", "beta": "beta", "dpo_loss": "dpo_loss", "reference_free": "reference_free",
    "label_smoothing": "label_smoothing", "sft_weight": "sft_weight", "simpo_gamma": "simpo_gamma", "desirable_weight": "desirable_weight",
    "undesirable_weight": "undesirable_weight", "from_adapter": "from_adapter",
    "report_to": "report_to", "mlflow_uri": "mlflow_uri",
}


def _names(value: str) -> list[str]:
    """A comma-separated list (``tensorboard,mlflow``); RunConfig says which names it knows."""
    return [name.strip() for name in value.split(",") if name.strip()]


def _train_config(args: argparse.Namespace) -> Any:
    from engine.run.config import RunConfig

    data: dict[str, Any] = {}
    if args.config:
        data = RunConfig.load(Path(args.config)).to_dict()
    for flag, field_name in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            data[field_name] = value
    _objective_from_method(data)
    if args.max_steps is not None:
        data["epochs"] = 1.0
    if args.epochs is not None:
        data["max_steps"] = None
    if "dataset" in data:
        data["dataset"] = dataset_reference(data["dataset"])
    if args.prompt_init_text is not None:
        data["prompt_init"] = "text"
    if isinstance(data.get("columns"), str):
        from engine.data.formats import parse_columns

        data["columns"] = parse_columns(data["columns"])
    model = data.get("model")
    if model and (os.sep in model or model.endswith(".gguf")):
        data["model"] = str(Path(model).expanduser().resolve())
    if not data.get("model") or not data.get("dataset"):
        raise StudioError("train needs --model and --dataset (or --config with both, or --resume RUN_DIR)")
    return RunConfig.from_dict(data)


def _objective_from_method(data: dict[str, Any]) -> None:
    """``--method dpo`` (orpo, kto, simpo) is short for ``--objective dpo --method lora``."""
    from engine.core.choices import PREFERENCE_OBJECTIVES

    method = data.get("method")
    if method not in PREFERENCE_OBJECTIVES:
        return
    if data.get("objective", "sft") not in ("sft", method):
        raise StudioError(f"--method {method} is short for --objective {method} over LoRA, but the objective is "
                          f"{data['objective']}: give one of them")
    data.update(objective=method, method="lora")


def cmd_train(args: argparse.Namespace) -> int:
    from engine.jobs.training_job import TrainingJob

    quiet_libraries()  # the pre-run checks try the method on a copy of the model: its libraries' notices stay out
    more = args.more_steps is not None or args.more_epochs is not None
    if more and not args.resume:
        raise StudioError("--more-steps and --more-epochs continue a finished run: give it with --resume RUN_DIR")
    if args.resume:
        run_dir = Path(args.resume)
        if more:
            job = TrainingJob.train_more(run_dir, steps=args.more_steps, epochs=args.more_epochs)
        else:
            job = TrainingJob.resume(run_dir)
    else:
        config = _train_config(args)
        _check_inputs(config)
        job = TrainingJob.start(config)
    if not args.json:
        print(f"run directory: {job.run_dir}", flush=True)
    finished = _follow(job, _print_event_json if args.json else _print_event_human)
    summary = {"status": finished.status, "run_dir": str(job.run_dir), "adapter": finished.adapter}
    if finished.model:
        summary["model"] = finished.model
    if finished.error:
        summary["error"] = finished.error
    if args.json:
        print_json(summary)
    elif finished.status == RunStatus.FAILED:
        print_error(finished.error)
    elif finished.model:
        print(f"{finished.status}: model {finished.model}")
    else:
        print(f"{finished.status}: adapter {finished.adapter or '(not saved)'}")
    if finished.status == RunStatus.FAILED:
        return 1
    _evaluate_at_end(job.run_dir, finished, args)
    return 0


def _evaluate_at_end(run_dir: Path, finished: Any, args: argparse.Namespace) -> None:
    """A completed run with held-out rows scores its adapter against the base on them, as the
    studio's does (``engine.eval.after_run``), unless --no-evaluate-at-end or its config said not
    to. The run stays completed whatever happens here: a failure is one line on standard error."""
    from engine.eval.after_run import evaluate_run, evaluates_itself, rows_to_evaluate
    from engine.run.config import RunConfig
    from engine.run.rundir import RunDir

    try:
        config = RunConfig.load(RunDir(run_dir).config)  # a resumed run's own, as the run used it
        if args.evaluate_at_end is not None:
            config.evaluate_at_end = args.evaluate_at_end
        if not evaluates_itself(config, finished):
            return
        rows = rows_to_evaluate(run_dir)
        if not args.json:
            print(f"evaluating the adapter against the base on {rows} held-out rows (Ctrl-C skips it)",
                  file=sys.stderr, flush=True)
        quiet_libraries()
        document = evaluate_run(run_dir, progress=None if args.json else progress_line(), device=config.device)
    except KeyboardInterrupt:
        _evaluation_failed("evaluation stopped: the run completed, its adapter is saved", args.json)
        return
    except StudioError as exc:
        _evaluation_failed(f"evaluation failed: {exc}", args.json)
        return
    _evaluation_done(document, args.json)


def _evaluation_done(document: dict[str, Any], as_json: bool) -> None:
    """The run's evaluation of itself ended: say how the adapter did against the base."""
    from engine.eval.after_run import headline

    line = headline(document)
    if as_json:
        scores = {candidate["label"]: candidate["scores"] for candidate in document["candidates"]}
        print_json({"evaluation": {"headline": line, "scores": scores}})
    else:
        print(line or "evaluation: no score both the base and the adapter have", flush=True)


def _evaluation_failed(message: str, as_json: bool) -> None:
    if as_json:
        print_json({"evaluation": {"error": message}})
    else:
        print_error(message)


def _check_inputs(config: Any) -> None:
    """Refuse bad inputs before a run directory or a process exists."""
    from engine.models.store import resolve_model

    open_data(config.dataset, config.data_format, config.columns or {}, config.text_split)
    resolve_model(config.model, progress=print_progress)


def _follow(job: Any, show: Callable[[Any], None]) -> Any:
    """Show events until the run finishes; Ctrl-C asks it to stop (twice ends it at once)."""
    from engine.run.events import RunFinished

    interrupts = 0
    while True:
        try:
            for event in job.events():
                show(event)
                if isinstance(event, RunFinished):
                    return event
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 1:
                print("stopping at the next step and saving the adapter (Ctrl-C again to end at once)",
                      file=sys.stderr, flush=True)
                job.stop(save=True)
            else:
                job.kill()


def _print_event_json(event: Any) -> None:
    print_json(event.to_dict())


def _print_event_human(event: Any) -> None:
    from engine.run.events import (CheckpointSaved, EvalMetrics, LogLine, OutOfMemory, Paused, Resumed, RunStarted,
                               StepMetrics)

    if isinstance(event, StepMetrics):
        speed = f" {event.tokens_per_second:,.0f} tok/s" if event.tokens_per_second else ""
        margin = f" margin {event.reward_margin:+.3f}" if event.reward_margin is not None else ""
        accuracy = f" accuracy {event.reward_accuracy:.0%}" if event.reward_accuracy is not None else ""
        print(f"step {event.step}/{event.total_steps} loss {event.loss:.4f}{margin}{accuracy} "
              f"lr {event.learning_rate:.2e}{speed}", flush=True)
    elif isinstance(event, RunStarted):
        print(f"training {event.method} on {event.device}: {event.total_steps} steps, "
              f"{event.trainable_params:,} trainable parameters", flush=True)
    elif isinstance(event, LogLine):
        print(event.message, flush=True)
    elif isinstance(event, EvalMetrics):
        accuracy = "" if event.reward_accuracy is None else f", held-out pairs preferred {event.reward_accuracy:.0%}"
        print(f"eval at step {event.step}: loss {event.eval_loss:.4f}{accuracy}", flush=True)
    elif isinstance(event, CheckpointSaved):
        print(f"checkpoint saved at step {event.step}", flush=True)
    elif isinstance(event, (Paused, Resumed)):
        print(f"{type(event).__name__.lower()} at step {event.step}", flush=True)
    elif isinstance(event, OutOfMemory):
        print(f"out of memory at step {event.step} on {event.device}", flush=True)
        for line in event.explanations:
            print(f"- {line}", flush=True)
        if event.suggestion:
            print(f"suggestion: {event.suggestion}", flush=True)

