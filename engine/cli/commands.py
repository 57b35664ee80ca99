"""The headless command line. Every subcommand takes ``--json`` and exits non-zero
with one readable line on error. It never imports Qt."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.core.choices import RunStatus
from engine.core.units import human_bytes
from engine.errors import StudioError


def _print_json(data: Any) -> None:
    print(json.dumps(data), flush=True)


# doctor ------------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.hardware import detect_devices, versions
    from engine.models.store import list_models
    from engine.paths import studio_home

    devices = detect_devices()
    starter = next((m for m in list_models() if m.source == "starter"), None)
    report = {
        "home": str(studio_home()),
        "devices": [d.to_dict() for d in devices],
        "versions": versions(),
        "starter_model": starter.to_dict() if starter else None,
    }
    if args.json:
        _print_json(report)
        return 0
    print(f"LoRA Studio home: {report['home']}")
    for d in devices:
        extra = f", compute {d.compute_capability}" if d.compute_capability else ""
        extra += f", driver {d.driver}" if d.driver else ""
        extra += f", {d.cores} cores / {d.threads} threads" if d.cores else ""
        extra += f", {d.utilization_percent:.0f}% busy" if d.utilization_percent is not None else ""
        extra += f", {d.temperature_c:.0f} °C" if d.temperature_c is not None else ""
        print(f"{d.torch_device:8} {d.name}: {human_bytes(d.free_bytes)} free of {human_bytes(d.total_bytes)}"
              f", bf16 {'yes' if d.bf16 else 'no'}{extra}")
    for name, version in report["versions"].items():
        print(f"{name:14} {version}")
    if starter:
        print(f"starter model  {starter.name}: {'ready' if starter.ready else 'prepared on first use'}")
    return 0


# models ------------------------------------------------------------------------------------
def cmd_models_list(args: argparse.Namespace) -> int:
    from engine.models.store import list_models

    models = list_models()
    if args.json:
        _print_json({"models": [m.to_dict() for m in models]})
        return 0
    for m in models:
        state = "ready" if m.ready else "not prepared"
        print(f"{m.name:32} {m.source:8} {m.architecture or '?':24} {state:12} {m.path or ''}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from engine.models.store import add_model

    record = add_model(args.path, name=args.name, progress=None if args.json else _print_progress)
    if args.json:
        _print_json(record.to_dict())
    else:
        print(f"added {record.name} ({record.architecture}) at {record.path}")
    return 0


def cmd_models_trust(args: argparse.Namespace) -> int:
    from engine.models import trust
    from engine.models.store import model_folder

    folder = model_folder(args.model)
    if args.revoke:
        trust.revoke(folder)
        line = f"{folder.name}'s own code will not run any more (until you trust it again)"
    else:
        files = ", ".join(file.name for file in trust.code_files(folder))
        trust.trust(folder)
        line = f"trusted {folder.name}: its own code ({files}) will run when it loads, until those files change"
    return _done(args, {"model": str(folder), "trusted": not args.revoke}, line)


def _print_progress(done: int, total: int, message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)


# data ----------------------------------------------------------------------------------------
def cmd_data_inspect(args: argparse.Namespace) -> int:
    from engine.data.scan import scan_dataset

    from engine.data.formats import parse_columns

    source = _open_data(args.file, args.format, parse_columns(args.columns or ""), args.text_split or "auto")
    tokenizer = _tokenizer_for(args.model) if args.model else None
    show_progress = not args.json and sys.stderr.isatty()
    report = scan_dataset(source, tokenizer, progress=_print_fraction if show_progress else None)
    if show_progress:
        print(file=sys.stderr)
    summary = report.to_dict(args.max_length, args.val_fraction)
    if args.model:
        summary["model"] = args.model
    if args.json:
        _print_json(summary)
        return 0
    _print_data_report(summary)
    return 0


def _open_data(reference: str, data_format: Optional[str], columns: dict[str, str], text_split: str) -> Any:
    from engine.data.dataset import DataOptions, open_dataset

    return open_dataset(_dataset_reference(reference), DataOptions(data_format, columns, text_split))


def _dataset_reference(reference: str) -> str:
    """An absolute path for a file or folder; anything else (a hub dataset id) as given."""
    path = Path(reference).expanduser()
    return str(path.resolve()) if path.exists() else reference


def _tokenizer_for(model: str) -> Any:
    from engine.models.store import resolve_model

    from engine.models.tokenizer import load_tokenizer

    _quiet_libraries()
    return load_tokenizer(resolve_model(model, progress=_print_progress))


def _print_fraction(fraction: float) -> None:
    print(f"\rreading the dataset: {100 * fraction:3.0f}%", end="", file=sys.stderr, flush=True)


def _print_data_report(report: dict[str, Any]) -> None:
    print(f"{report['file']}: {report['kind']}, {report['format_title']}")
    print("  columns: " + ", ".join(f"{field} <- {column}" for field, column in report["mapping"].items())
          + (f"; ignored: {', '.join(report['ignored_columns'])}" if report["ignored_columns"] else ""))
    if report["skipped_files"]:
        print(f"  skipped files: {', '.join(report['skipped_files'])}")
    print(f"rows: {report['rows']} ({report['good_rows']} good, {report['bad_rows']} bad); "
          f"duplicates: {report['duplicates']}; empty answers: {report['empty_answers']}")
    split = report["validation"]
    if split["validation_rows"]:
        print(f"validation split: {split['train_rows']} train, {split['validation_rows']} validation")
    if "token_percentiles" in report:
        print("tokens per row: " + ", ".join(f"{k} {v}" for k, v in report["token_percentiles"].items()))
        print(f"{report['truncated']} of {report['good_rows']} rows ({100 * report['truncated_share']:.1f}%) are "
              f"longer than {report['max_length']} tokens and would be truncated")
        if report["chat_template"] == "chatml-fallback":
            print("the model has no chat template: training would use ChatML")
    if report["problems"]:
        print("first problems:")
    for problem in report["problems"]:
        where = problem["file"] if problem["unit"] == "file" else f"{problem['unit']} {problem['line']}"
        where = f"{problem['file']} {where}" if problem["file"] and problem["unit"] != "file" else where
        print(f"  {where}: {problem['reason']}")


# estimate ------------------------------------------------------------------------------------
_ESTIMATE_NUMBERS = {"rank": "rank", "batch": "batch", "seq": "seq"}


def cmd_estimate(args: argparse.Namespace) -> int:
    from engine.core.choices import resolve_precision
    from engine.memory.autofit import auto_fit
    from engine.memory.estimate import estimate_memory
    from engine.memory.plan import Plan
    from engine.models.spec import load_model_spec

    spec = load_model_spec(args.model)
    device, free, bf16 = _estimate_device(args.device_memory)
    settings: dict[str, Any] = {"method": args.method,
                                "precision": resolve_precision(args.precision or "auto", device, bf16)}
    for flag, field_name in _ESTIMATE_NUMBERS.items():
        if getattr(args, flag) is not None:
            settings[field_name] = _whole_number(flag, getattr(args, flag))
    for flag in ("targets", "optimizer"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    if args.grad_checkpointing:
        settings["grad_checkpointing"] = True
    plan = Plan.from_dict(settings)
    report: dict[str, Any]
    if args.fit:
        preferences = {"method": plan.method, "precision": plan.precision, "targets": plan.targets}
        stats = _dataset_lengths(args) if args.dataset else None
        fit = auto_fit(spec, free, stats, preferences=preferences, device=device)
        estimate, fits = fit.estimate, fit.fits
        report = {"explanations": fit.explanations, "suggestion": fit.suggestion}
        if stats is not None:
            report["dataset_token_percentiles"] = {"p50": stats.p50, "p95": stats.p95, "p99": stats.p99,
                                                   "max": stats.max}
    else:
        estimate = estimate_memory(spec, plan, device)
        fits, report = estimate.fits(free), {}
    report = {"model": spec.name, "device": device, "device_memory_bytes": free,
              "peak_allocated_bytes": estimate.peak_allocated_bytes, "device_bytes": estimate.device_bytes,
              "items": estimate.items, "fits": fits, "plan": estimate.plan.to_dict(), "peak_phase": estimate.peak_phase,
              "paged_optimizer_bytes": estimate.paged_optimizer_bytes, "trainable_params": estimate.trainable_params,
              "total_params": estimate.total_params, "notes": estimate.notes, **report}
    if args.json:
        _print_json(report)
    else:
        _print_estimate(report, estimate)
    return 0


def _dataset_lengths(args: argparse.Namespace) -> Any:
    """Token-length percentiles of ``--dataset``, tokenised as training would (chat template included)."""
    from engine.data.scan import scan_dataset
    from engine.memory.planning import length_stats_of

    reference = args.tokenizer or args.model
    try:
        tokenizer = _tokenizer_for(reference)
    except StudioError as exc:
        raise StudioError(f"measuring --dataset needs a tokenizer, and {reference!r} has none here ({exc}); "
                          "give --tokenizer with a local model of the same family") from None
    report = scan_dataset(_open_data(args.dataset, None, {}, "auto"), tokenizer)
    stats = length_stats_of(report.token_lengths) if report is not None else None
    if stats is None:
        raise StudioError(f"{args.dataset} has no usable rows to measure")
    return stats


def _whole_number(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise StudioError(f"--{flag} must be a whole number, got {text!r}") from None


def _estimate_device(device_memory: Optional[str]) -> tuple[str, int, bool]:
    """The device kind, its free bytes and bf16 support: a GPU of the size given (bf16, as
    every GPU since Ampere), or else the detected best device."""
    from engine.core.units import parse_bytes

    if device_memory is not None:
        return "cuda", parse_bytes(device_memory), True
    from engine.hardware import best_device

    device = best_device()
    return device.kind, device.free_bytes, device.bf16


def _print_estimate(report: dict[str, Any], estimate: Any) -> None:
    print(f"{report['model']} ({report['total_params'] / 1e9:.2f}B parameters, "
          f"{report['trainable_params']:,} trainable): {estimate.plan.describe()}")
    for name, value in report["items"].items():
        if value:
            print(f"  {name.replace('_', ' '):26} {human_bytes(value):>12}")
    if report["paged_optimizer_bytes"]:
        print(f"  {'paged optimizer states':26} {human_bytes(report['paged_optimizer_bytes']):>12}  (unified memory)")
    print(f"  {'peak allocated':26} {human_bytes(report['peak_allocated_bytes']):>12}  "
          f"(torch.cuda.max_memory_allocated; peak at the {report['peak_phase'].replace('_', ' ')})")
    print(f"  {'device total':26} {human_bytes(report['device_bytes']):>12}  (what nvidia-smi shows)")
    verdict = "fits" if report["fits"] else "does NOT fit"
    print(f"  {'free on the ' + report['device']:26} {human_bytes(report['device_memory_bytes']):>12}  {verdict}")
    for note in report["notes"]:
        print(f"note: {note}")
    for line in report.get("explanations", []):
        print(f"- {line}")
    if report.get("suggestion"):
        print(f"suggestion: {report['suggestion']}")


# train ---------------------------------------------------------------------------------------
_TRAIN_FLAGS = {  # CLI flag -> RunConfig field
    "model": "model", "dataset": "dataset", "method": "method", "rank": "rank", "alpha": "alpha",
    "dropout": "dropout", "targets": "targets", "max_steps": "max_steps", "epochs": "epochs",
    "batch": "batch_size", "grad_accum": "grad_accum", "max_length": "max_length", "lr": "lr",
    "warmup_steps": "warmup_steps", "save_every": "save_every", "eval_every": "eval_every",
    "log_every": "log_every", "seed": "seed", "name": "name", "precision": "precision", "device": "device",
    "format": "data_format", "columns": "columns", "text_split": "text_split", "train_on": "train_on",
    "val_fraction": "val_fraction", "bad_rows": "bad_rows", "rslora": "use_rslora", "quant": "quant",
    "double_quant": "double_quant", "compute_dtype": "compute_dtype", "virtual_tokens": "num_virtual_tokens",
    "prompt_init_text": "prompt_init_text", "prefix_projection": "prefix_projection", "optimizer": "optimizer",
    "scheduler": "lr_scheduler", "weight_decay": "weight_decay", "max_grad_norm": "max_grad_norm",
    "grad_checkpointing": "grad_checkpointing", "batching": "batching", "group_by_length": "group_by_length",
    "keep_checkpoints": "keep_checkpoints", "early_stopping": "early_stopping_patience",
    "memory_limit": "memory_limit",
}


def _train_config(args: argparse.Namespace) -> Any:
    from engine.run.config import RunConfig

    data: dict[str, Any] = {}
    if args.config:
        data = RunConfig.load(Path(args.config)).to_dict()
    for flag, field_name in _TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            data[field_name] = value
    if args.max_steps is not None:
        data["epochs"] = 1.0
    if args.epochs is not None:
        data["max_steps"] = None
    if "dataset" in data:
        data["dataset"] = _dataset_reference(data["dataset"])
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


def cmd_train(args: argparse.Namespace) -> int:
    from engine.jobs.training_job import TrainingJob

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
        _print_json(summary)
    elif finished.status == RunStatus.FAILED:
        print(f"error: {finished.error}", file=sys.stderr)
    elif finished.model:
        print(f"{finished.status}: model {finished.model}")
    else:
        print(f"{finished.status}: adapter {finished.adapter or '(not saved)'}")
    return 1 if finished.status == RunStatus.FAILED else 0


def _check_inputs(config: Any) -> None:
    """Refuse bad inputs before a run directory or a process exists."""
    from engine.models.store import resolve_model

    _open_data(config.dataset, config.data_format, config.columns or {}, config.text_split)
    resolve_model(config.model, progress=_print_progress)


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
    _print_json(event.to_dict())


def _print_event_human(event: Any) -> None:
    from engine.run.events import (CheckpointSaved, EvalMetrics, LogLine, OutOfMemory, Paused, Resumed, RunStarted,
                               StepMetrics)

    if isinstance(event, StepMetrics):
        speed = f" {event.tokens_per_second:,.0f} tok/s" if event.tokens_per_second else ""
        print(f"step {event.step}/{event.total_steps} loss {event.loss:.4f} lr {event.learning_rate:.2e}{speed}",
              flush=True)
    elif isinstance(event, RunStarted):
        print(f"training {event.method} on {event.device}: {event.total_steps} steps, "
              f"{event.trainable_params:,} trainable parameters", flush=True)
    elif isinstance(event, LogLine):
        print(event.message, flush=True)
    elif isinstance(event, EvalMetrics):
        print(f"eval at step {event.step}: loss {event.eval_loss:.4f}", flush=True)
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


# runs ------------------------------------------------------------------------------------------
def cmd_runs_list(args: argparse.Namespace) -> int:
    from engine.jobs.training_job import list_runs

    runs = list_runs()
    if args.json:
        _print_json([run.to_dict() for run in runs])
        return 0
    if not runs:
        print("no runs yet")
    for run in runs:
        loss = f" loss {run.final_loss:.4f}" if run.final_loss is not None else ""
        total = f"/{run.total_steps}" if run.total_steps else ""
        extra = "  (resumable)" if run.resumable else ""
        print(f"{run.name}  {run.status}  step {run.steps}{total}{loss}{extra}")
    return 0


def cmd_runs_export(args: argparse.Namespace) -> int:
    from engine.run.config import RunConfig
    from engine.jobs.training_job import export_run, launch_commands

    source = Path(args.run)
    config_file = source / "config.json" if source.is_dir() else source
    if not config_file.is_file():
        raise StudioError(f"{source} is neither a run directory nor a run config JSON")
    if args.gpus < 1:
        raise StudioError(f"--gpus must be at least 1, got {args.gpus}")
    out = export_run(RunConfig.load(config_file), Path(args.output), args.gpus)
    commands = launch_commands(out.resolve(), args.gpus)
    if args.json:
        _print_json({"run_dir": str(out), "config": str(out / "config.json"), "commands": commands})
    else:
        print(f"exported to {out}")
        for label, line in commands.items():
            print(f"  {label:13} {line}")
    return 0


# adapters --------------------------------------------------------------------------------------
def cmd_adapters_list(args: argparse.Namespace) -> int:
    from engine.adapters.library import list_adapters

    adapters = list_adapters()
    if args.json:
        _print_json({"adapters": [a.to_dict() for a in adapters]})
        return 0
    if not adapters:
        print("the adapter library is empty")
    for a in adapters:
        loss = f"{a.final_loss:.4f}" if a.final_loss is not None else "-"
        state = f"DAMAGED: {a.damaged}" if a.damaged else f"{a.method or '?'} r{a.rank or '?'} loss {loss}"
        print(f"{a.name:40} {a.base_model or '?':28} {state}")
    return 0


def cmd_adapters_show(args: argparse.Namespace) -> int:
    from engine.adapters.library import read_adapter_meta, resolve_adapter

    path = resolve_adapter(args.adapter)
    meta = read_adapter_meta(path)
    peft_config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    report = {"name": path.name, "path": str(path), "studio": meta, "peft": peft_config}
    if args.json:
        _print_json(report)
        return 0
    print(f"{path.name} ({path})")
    for key in ("base_model", "method", "rank", "alpha", "targets", "dataset", "steps", "final_loss",
                "final_eval_loss", "created", "tags", "notes"):
        if meta.get(key) not in (None, "", []):
            print(f"  {key:15} {meta[key]}")
    return 0


def _done(args: argparse.Namespace, report: dict[str, Any], line: str) -> int:
    if args.json:
        _print_json(report)
    else:
        print(line)
    return 0


def cmd_adapters_rename(args: argparse.Namespace) -> int:
    from engine.adapters.library import rename_adapter

    path = rename_adapter(args.adapter, args.new_name)
    return _done(args, {"name": path.name, "path": str(path)}, f"renamed to {path.name}")


def cmd_adapters_delete(args: argparse.Namespace) -> int:
    from engine.adapters.library import delete_adapter

    entry = delete_adapter(args.adapter)
    return _done(args, entry.to_dict(),
                 f"moved {entry.name} to the trash (bring it back with: lora-studio adapters restore {entry.id})")


def cmd_adapters_restore(args: argparse.Namespace) -> int:
    from engine.adapters.library import restore_adapter

    path = restore_adapter(args.id)
    return _done(args, {"name": path.name, "path": str(path)}, f"restored {path.name}")


def cmd_adapters_trash(args: argparse.Namespace) -> int:
    from engine.adapters.library import empty_trash, list_trash

    if args.empty:
        removed = empty_trash()
        return _done(args, {"removed": removed}, f"deleted {removed} adapter(s) for good")
    entries = list_trash()
    if args.json:
        _print_json({"trash": [e.to_dict() for e in entries]})
        return 0
    if not entries:
        print("the trash is empty")
    for e in entries:
        print(f"{e.id:28} {e.name:40} deleted {e.deleted}  {human_bytes(e.size_bytes)}")
    return 0


def cmd_adapters_import(args: argparse.Namespace) -> int:
    from engine.adapters.library import import_adapter

    path = import_adapter(args.path, name=args.name)
    return _done(args, {"name": path.name, "path": str(path)}, f"imported as {path.name} ({path})")


def cmd_adapters_export(args: argparse.Namespace) -> int:
    from engine.adapters.library import export_adapter

    path = export_adapter(args.adapter, args.output, overwrite=args.overwrite)
    return _done(args, {"zip": str(path), "size_bytes": path.stat().st_size}, f"wrote {path}")


def cmd_adapters_duplicate(args: argparse.Namespace) -> int:
    from engine.adapters.library import duplicate_adapter

    path = duplicate_adapter(args.adapter, args.name)
    return _done(args, {"name": path.name, "path": str(path)}, f"copied to {path.name}")


def cmd_adapters_edit(args: argparse.Namespace) -> int:
    from engine.adapters.library import read_adapter_meta, resolve_adapter, set_notes, set_tags

    if args.tags is None and args.notes is None:
        raise StudioError("nothing to change: give --tags and/or --notes")
    if args.tags is not None:
        set_tags(args.adapter, args.tags.split(","))
    if args.notes is not None:
        set_notes(args.adapter, args.notes)
    meta = read_adapter_meta(resolve_adapter(args.adapter))
    report = {"tags": meta.get("tags", []), "notes": meta.get("notes", "")}
    return _done(args, report, f"tags: {', '.join(report['tags']) or '-'}; notes: {report['notes'] or '-'}")


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def cmd_adapters_merge(args: argparse.Namespace) -> int:
    from engine.adapters.merge import merge_adapter

    _quiet_libraries()
    result = merge_adapter(args.adapter, args.output, base=args.base, dtype=args.dtype,
                           progress=None if args.json else _print_progress)
    _print_warnings(result.warnings)
    fidelity = result.fidelity
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"merged {result.adapter} into {result.base_model}: {result.output} ({result.dtype}, "
              f"{human_bytes(result.size_bytes)}, {result.seconds:.1f} s)")
        print(f"fidelity: max |logit diff| {fidelity.max_abs_logit_diff:.3g} (tolerance {fidelity.tolerance_logit:g}), "
              f"mean KL {fidelity.mean_kl:.3g} (tolerance {fidelity.tolerance_kl:g}) over {fidelity.tokens} positions")
    if not fidelity.within_tolerance:
        print("error: the merged model differs from base+adapter by more than float tolerance; it was kept "
              "for inspection", file=sys.stderr)
        return 1
    return 0


def cmd_adapters_combine(args: argparse.Namespace) -> int:
    from engine.adapters.merge import combine_adapters

    if args.weights is None:
        weights = [1.0 / len(args.adapters)] * len(args.adapters)
    else:
        weights = args.weights
    _quiet_libraries()
    result = combine_adapters(args.adapters, weights, args.how, name=args.name, density=args.density,
                              base=args.base, progress=None if args.json else _print_progress)
    _print_warnings(result.warnings)
    line = (f"combined {', '.join(f'{a} x {w:g}' for a, w in zip(result.adapters, result.weights))} with "
            f"{result.how} into {result.name} (rank {result.rank})")
    return _done(args, result.to_dict(), line)


def cmd_adapters_gguf(args: argparse.Namespace) -> int:
    from engine.adapters.gguf import adapter_to_gguf

    _quiet_libraries()
    result = adapter_to_gguf(args.adapter, args.output, quant=args.quant, lora_only=args.lora_only, base=args.base,
                             progress=None if args.json else _print_progress)
    _print_warnings(result.warnings)
    if args.json:
        _print_json(result.to_dict())
    else:
        kind = "GGUF LoRA" if result.kind == "lora" else "GGUF model"
        print(f"wrote {kind} {result.path} ({result.quant}, {human_bytes(result.size_bytes)}): {result.tensors} "
              f"tensors read back and checked, largest error {result.max_abs_error:.3g}")
        if result.base_gguf:
            print(f"base model GGUF: {result.base_gguf}")
        print(f"Ollama Modelfile: {result.modelfile}")
    if result.merge is not None and not result.merge["within_tolerance"]:
        return 1
    return 0


# chat ------------------------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    from engine.chat.session import ChatSession
    from engine.adapters.library import resolve_adapter

    for ref in args.adapter or []:
        resolve_adapter(ref)  # a wrong name fails now, before seconds of model loading
    choices = _chat_choices(args)
    _quiet_libraries()
    session = ChatSession(args.model)
    session.load()
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)
    system: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    prompts = [args.prompt] if args.prompt is not None else _stdin_prompts(args.json, args.compare)
    if args.compare:
        for prompt in prompts:
            _print_comparison(session, system + [{"role": "user", "content": prompt}], choices, settings, args.json)
        return 0
    session.set_adapter(choices[0])
    history = list(system)
    for prompt in prompts:
        history.append({"role": "user", "content": prompt})
        stream = None if args.json else (lambda piece: print(piece, end="", flush=True))
        reply = session.generate(history, on_token=stream, **settings)
        history.append({"role": "assistant", "content": reply.reply})
        if args.json:
            _print_json(reply.to_dict())
        else:
            print()
            print(f"[{reply.tokens} tokens, {reply.tokens_per_second:.1f} tok/s]", file=sys.stderr)
    return 0


def _chat_choices(args: argparse.Namespace) -> list[Any]:
    """What to chat with (one choice) or compare (the columns), from --adapter, --combine, --compare."""
    from engine.chat.session import MAX_COMPARE_COLUMNS, Blend

    adapters = args.adapter or []
    if args.weights and not args.combine:
        raise StudioError("--weights goes with --combine")
    blend = None
    if args.combine:
        if len(adapters) < 2:
            raise StudioError("--combine needs two or more --adapter")
        weights = args.weights or [1.0] * len(adapters)
        if len(weights) != len(adapters):
            raise StudioError(f"--weights needs one weight per adapter: {len(adapters)} adapters, "
                              f"{len(weights)} weights")
        blend = Blend(tuple(zip(adapters, weights)))
    if args.compare:
        columns = [None, *adapters] + ([blend] if blend else [])
        if len(columns) > MAX_COMPARE_COLUMNS:
            raise StudioError(f"--compare shows at most {MAX_COMPARE_COLUMNS} columns (the base model, each adapter "
                              f"and their combination): {len(columns)} asked for")
        return columns
    if blend is not None:
        return [blend]
    if len(adapters) > 1:
        raise StudioError("several adapters: add --compare to put them side by side, or --combine to chat with "
                          "their combination")
    return [adapters[0] if adapters else None]


def _stdin_prompts(as_json: bool, compare: bool) -> Iterator[str]:
    """Lines from standard input until an empty line or end of input."""
    if not as_json:
        what = "each message is compared on its own" if compare else "the conversation goes on"
        print(f"chat: type a message ({what}); an empty line or Ctrl-D quits", file=sys.stderr)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            return
        yield text


def _print_comparison(session: Any, messages: list[dict], choices: list[Any], settings: dict, as_json: bool) -> None:
    from engine.chat.session import choice_label

    def heading(index: int) -> None:
        gap = "\n" if index else ""
        print(f"{gap}=== {choice_label(choices[index])} ===", flush=True)

    def stream(index: int, piece: str) -> None:
        print(piece, end="", flush=True)

    def column_done(index: int, result: Any) -> None:
        if result.reply is None:
            print(f"error: {result.error}", flush=True)
        else:
            print(f"\n[{result.reply.tokens} tokens, {result.reply.tokens_per_second:.1f} tok/s]", flush=True)
        if index + 1 < len(choices):
            heading(index + 1)

    if as_json:
        results = session.compare(messages, choices, **settings)
        _print_json({"columns": [result.to_dict() for result in results]})
        return
    heading(0)
    session.compare(messages, choices, on_token=stream, on_column=column_done, **settings)


def _quiet_libraries() -> None:
    """Loading bars, deprecation notices and optional-kernel advice from the ML libraries
    would bury the CLI's own output; only their errors get through."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


# parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from engine.core.choices import (BAD_ROWS, BATCHING, COMPUTE_DTYPES, METHODS, OPTIMIZERS, PRECISION_CHOICES, QUANTS,
                                     SCHEDULERS, TRAIN_ON)

    parser = argparse.ArgumentParser(prog="lora-studio", description="LoRA Studio: fine-tune language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.set_defaults(handler=handler)
        return p

    command("doctor", cmd_doctor, "devices, memory and library versions")

    models = sub.add_parser("models", help="the model store").add_subparsers(dest="models_command", required=True)
    command("list", cmd_models_list, "list the model store and the starter model", models)
    add = command("add", cmd_models_add, "add a local Hugging Face folder or a GGUF file", models)
    add.add_argument("path")
    add.add_argument("--name")
    trusted = command("trust", cmd_models_trust, "allow a model's own Python code to run (asked once per model)",
                      models)
    trusted.add_argument("model", help="a model store name or a model folder")
    trusted.add_argument("--revoke", action="store_true", help="take the permission back")

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    inspect = command("inspect", cmd_data_inspect, "detect a dataset's format and check its rows", data)
    inspect.add_argument("file")
    inspect.add_argument("--model", help="tokenise with this model to measure lengths")
    inspect.add_argument("--max-length", type=int, default=512)
    inspect.add_argument("--val-fraction", type=float, default=0.0, help="share of rows held out for validation")
    _data_reading_flags(inspect)

    estimate = command("estimate", cmd_estimate, "how much memory a run takes, item by item, and the plan that fits")
    estimate.add_argument("--model", required=True, help="a catalog name, starter, a model store name, a local folder "
                                                         "or a config.json")
    estimate.add_argument("--method", required=True, help="full, lora, dora, qlora, prompt, prefix or ptuning")
    estimate.add_argument("--rank")
    estimate.add_argument("--targets", help="q,v, attention or all-linear")
    estimate.add_argument("--batch")
    estimate.add_argument("--seq", help="max length in tokens")
    estimate.add_argument("--grad-checkpointing", action="store_true")
    estimate.add_argument("--optimizer", help="adamw, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit or sgd")
    estimate.add_argument("--precision", help="bf16, fp16 or fp32 (default: what training would pick here)")
    estimate.add_argument("--device-memory", help="free GPU memory, e.g. 24GiB, 24GB, 8000MiB "
                                                  "(default: the detected device's free memory)")
    estimate.add_argument("--fit", action="store_true", help="find the best plan that fits the device")
    estimate.add_argument("--dataset", help="with --fit: size the max length to this dataset's token lengths")
    estimate.add_argument("--tokenizer", help="with --dataset: the model whose tokenizer measures it (default: --model)")

    train = command("train", cmd_train, "train an adapter (streams progress; Ctrl-C stops and saves)")
    train.add_argument("--model", help="starter, a model store name, a local folder or a .gguf file")
    train.add_argument("--dataset", help="a dataset file (JSONL, JSON, CSV, TSV, Parquet, text), a folder of them, "
                                         "or a Hugging Face dataset id")
    _data_reading_flags(train)
    train.add_argument("--train-on", choices=TRAIN_ON, help="the loss on the assistant's replies only, or all tokens")
    train.add_argument("--val-fraction", type=float, help="share of rows held out to measure the eval loss")
    train.add_argument("--bad-rows", choices=BAD_ROWS, help="train on the good rows, or stop when any row is bad")
    train.add_argument("--method", choices=METHODS)
    train.add_argument("--rank", type=int)
    train.add_argument("--alpha", type=float)
    train.add_argument("--dropout", type=float)
    train.add_argument("--rslora", action="store_true", default=None, help="scale LoRA by alpha/sqrt(rank)")
    train.add_argument("--targets", help="q,v, attention, all-linear, or module names such as q_proj,gate_proj")
    train.add_argument("--quant", choices=QUANTS, help="qlora: the base in 4-bit nf4 or fp4, or 8-bit int8")
    train.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None,
                       help="qlora: quantise the 4-bit block scales too (default on)")
    train.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, help="qlora: what the 4-bit layers compute in")
    train.add_argument("--virtual-tokens", type=int, help="prompt, prefix, ptuning: how many virtual tokens")
    train.add_argument("--prompt-init-text", help="prompt tuning: start the virtual tokens from this text")
    train.add_argument("--prefix-projection", action="store_true", default=None,
                       help="prefix tuning: train through a reparametrising MLP")
    steps = train.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int)
    steps.add_argument("--epochs", type=float)
    train.add_argument("--batch", type=int)
    train.add_argument("--grad-accum", type=int)
    train.add_argument("--max-length", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--optimizer", choices=OPTIMIZERS)
    train.add_argument("--scheduler", choices=SCHEDULERS, help="the learning-rate schedule after the warm-up")
    train.add_argument("--warmup-steps", type=int)
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--max-grad-norm", type=float, help="clip gradients to this norm (0: off)")
    train.add_argument("--grad-checkpointing", action="store_true", default=None)
    train.add_argument("--batching", choices=BATCHING, help="padded batches, or rows packed without padding")
    train.add_argument("--group-by-length", action="store_true", default=None)
    train.add_argument("--save-every", type=int)
    train.add_argument("--keep-checkpoints", type=int, help="keep the newest N checkpoints (0: all)")
    train.add_argument("--eval-every", type=int)
    train.add_argument("--early-stopping", type=int, metavar="PATIENCE",
                       help="stop after this many evaluations without a better eval loss")
    train.add_argument("--log-every", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--name")
    train.add_argument("--precision", choices=PRECISION_CHOICES)
    train.add_argument("--device")
    train.add_argument("--memory-limit", help="cap the run's memory, e.g. 6GiB")
    train.add_argument("--config", help="a run config JSON (flags override it)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    more = train.add_mutually_exclusive_group()
    more.add_argument("--more-steps", type=int, help="with --resume: train a finished run this many steps more")
    more.add_argument("--more-epochs", type=float, help="with --resume: train a finished run this many epochs more")

    runs = sub.add_parser("runs", help="training runs").add_subparsers(dest="runs_command", required=True)
    command("list", cmd_runs_list, "list training runs, newest first", runs)
    run_export = command("export", cmd_runs_export, "write a run's config and the commands that run it elsewhere",
                         runs)
    run_export.add_argument("run", help="a run directory, or a run config JSON")
    run_export.add_argument("--output", required=True, metavar="DIR")
    run_export.add_argument("--gpus", type=int, default=1, help="processes for the torchrun/accelerate lines")

    adapters = sub.add_parser("adapters", help="the adapter library").add_subparsers(
        dest="adapters_command", required=True)
    command("list", cmd_adapters_list, "list the adapter library", adapters)
    show = command("show", cmd_adapters_show, "show one adapter", adapters)
    show.add_argument("adapter")
    rename = command("rename", cmd_adapters_rename, "rename an adapter", adapters)
    rename.add_argument("adapter")
    rename.add_argument("new_name")
    delete = command("delete", cmd_adapters_delete, "move an adapter to the trash", adapters)
    delete.add_argument("adapter")
    restore = command("restore", cmd_adapters_restore, "bring an adapter back from the trash", adapters)
    restore.add_argument("id", help="the trash id that delete printed (see: adapters trash)")
    trash = command("trash", cmd_adapters_trash, "list the trash", adapters)
    trash.add_argument("--empty", action="store_true", help="delete everything in the trash for good")
    imported = command("import", cmd_adapters_import, "import a PEFT adapter folder or zip", adapters)
    imported.add_argument("path")
    imported.add_argument("--name")
    export = command("export", cmd_adapters_export, "write an adapter as a zip", adapters)
    export.add_argument("adapter")
    export.add_argument("--output", required=True, metavar="ZIP")
    export.add_argument("--overwrite", action="store_true")
    duplicate = command("duplicate", cmd_adapters_duplicate, "copy an adapter under a new name", adapters)
    duplicate.add_argument("adapter")
    duplicate.add_argument("--name")
    edit = command("edit", cmd_adapters_edit, "set an adapter's tags or notes", adapters)
    edit.add_argument("adapter")
    edit.add_argument("--tags", help="comma-separated; an empty string clears them")
    edit.add_argument("--notes")
    merge = command("merge", cmd_adapters_merge,
                    "merge an adapter into its base as a Hugging Face model folder, checked against base+adapter",
                    adapters)
    merge.add_argument("adapter")
    merge.add_argument("--output", required=True, metavar="DIR")
    merge.add_argument("--base", help="the base model, when the adapter's own is elsewhere")
    merge.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    combine = command("combine", cmd_adapters_combine, "combine adapters of one base into a new adapter", adapters)
    combine.add_argument("adapters", nargs="+")
    combine.add_argument("--weights", type=float, nargs="+", help="one per adapter (default: equal)")
    combine.add_argument("--how", choices=("linear", "cat", "svd", "ties", "dare"), default="linear")
    combine.add_argument("--density", type=float, help="for ties and dare: the fraction of weights kept")
    combine.add_argument("--name", required=True)
    combine.add_argument("--base", help="the base model, when the adapters' own is elsewhere")
    gguf = command("gguf", cmd_adapters_gguf, "write GGUF for llama.cpp and Ollama, with a Modelfile", adapters)
    gguf.add_argument("adapter")
    gguf.add_argument("--output", required=True, metavar="FILE")
    gguf.add_argument("--quant", choices=("f16", "q8_0", "f32"), default="f16")
    gguf.add_argument("--lora-only", action="store_true", help="the adapter alone, as a GGUF LoRA")
    gguf.add_argument("--base", help="the base model, when the adapter's own is elsewhere")

    chat = command("chat", cmd_chat, "chat with a model, with or without adapters, or compare them")
    chat.add_argument("--model", required=True)
    chat.add_argument("--adapter", action="append", help="a library name or PEFT folder (repeat for several)")
    chat.add_argument("--combine", action="store_true", help="chat with the combination of the adapters")
    chat.add_argument("--weights", type=float, nargs="+", help="with --combine: one weight per adapter")
    chat.add_argument("--compare", action="store_true",
                      help="answer each prompt with the base model and each adapter (and the combination)")
    chat.add_argument("--prompt", help="one message; without it, read messages from standard input")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (the default)")
    chat.add_argument("--top-p", type=float, default=0.9)
    chat.add_argument("--top-k", type=int, default=0, help="0 is off")
    chat.add_argument("--repetition-penalty", type=float, default=1.0)
    chat.add_argument("--seed", type=int)
    return parser


def _data_reading_flags(parser: argparse.ArgumentParser) -> None:
    from engine.core.choices import DATASET_FORMATS, TEXT_SPLITS

    parser.add_argument("--format", choices=DATASET_FORMATS, help="the row format (detected when left out)")
    parser.add_argument("--columns", metavar="FIELD=COLUMN,...",
                        help="which column holds each field, e.g. question=prompt,answer=reply")
    parser.add_argument("--text-split", choices=TEXT_SPLITS, help="plain text: one document per line, or chunks (auto: guessed)")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("LORA_STUDIO_DEBUG"):
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (set LORA_STUDIO_DEBUG=1 for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
