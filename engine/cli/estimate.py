"""lora-studio estimate: how much memory a run takes, item by item, and the plan that fits."""

from __future__ import annotations

import argparse
from typing import Any, Optional

from engine.cli.inputs import open_data, tokenizer_for
from engine.cli.output import print_json
from engine.cli.parsing import add_command, whole_number
from engine.core.choices import OBJECTIVES, PURE_BF16_CHOICES
from engine.core.units import human_bytes
from engine.errors import StudioError


def register(sub: Any) -> None:
    estimate = add_command(sub, "estimate", cmd_estimate,
                           "how much memory a run takes, item by item, and the plan that fits")
    estimate.add_argument("--model", required=True, help="a catalog name, starter, a model store name, a local folder "
                                                         "or a config.json")
    estimate.add_argument("--method", required=True, help="full, lora, dora, qlora, prompt, prefix or ptuning")
    estimate.add_argument("--objective", choices=OBJECTIVES, default="sft",
                          help="what the run teaches: sft, or a preference objective (dpo, orpo, kto, simpo), whose "
                               "--batch counts pairs (dpo, orpo, simpo) or labelled answers (kto)")
    estimate.add_argument("--reference-free", action="store_true",
                          help="dpo only: no reference model (no reference pass, no reference copy)")
    estimate.add_argument("--from-adapter", action="store_true",
                          help="dpo, kto: the run goes on training a trained adapter of --rank, which is then the "
                               "reference (a frozen copy of it is kept)")
    estimate.add_argument("--rank", type=whole_number)
    estimate.add_argument("--targets", help="q,v, attention or all-linear")
    estimate.add_argument("--batch", type=whole_number)
    estimate.add_argument("--seq", type=whole_number, help="max length in tokens")
    estimate.add_argument("--grad-checkpointing", action="store_true")
    estimate.add_argument("--optimizer", help="adamw, adamw_8bit, paged_adamw_8bit, paged_adamw_32bit or sgd")
    estimate.add_argument("--precision", help="bf16, fp16 or fp32 (default: what training would pick here)")
    estimate.add_argument("--pure-bf16", choices=PURE_BF16_CHOICES, default="auto",
                          help="full fine-tuning with bf16 weights and optimizer states, no fp32 masters "
                               "(auto: whenever it trains in bf16)")
    estimate.add_argument("--device-memory", help="free GPU memory, e.g. 24GiB, 24GB, 8000MiB "
                                                  "(default: the detected device's free memory)")
    estimate.add_argument("--fit", action="store_true", help="find the best plan that fits the device")
    estimate.add_argument("--dataset", help="with --fit: size the max length to this dataset's token lengths")
    estimate.add_argument("--tokenizer", help="with --dataset: the model whose tokenizer measures it (default: --model)")


_ESTIMATE_NUMBERS = {"rank": "rank", "batch": "batch", "seq": "seq"}


def cmd_estimate(args: argparse.Namespace) -> int:
    from engine.core.choices import pure_bf16_problem, resolve_precision, resolve_pure_bf16
    from engine.memory.estimate import estimate_memory
    from engine.memory.plan import Plan
    from engine.memory.planning import fit_plan
    from engine.models.spec import load_model_spec

    spec = load_model_spec(args.model)
    device, free, bf16 = _estimate_device(args.device_memory)
    precision = resolve_precision(args.precision or "auto", device, bf16)
    problem = pure_bf16_problem(args.pure_bf16, args.method, precision)
    if problem:
        raise StudioError(problem)
    settings: dict[str, Any] = {"method": args.method, "precision": precision,
                                "pure_bf16": resolve_pure_bf16(args.pure_bf16, args.method, precision),
                                "objective": args.objective, "reference_free": args.reference_free,
                                "from_adapter": args.from_adapter}
    for flag, field_name in _ESTIMATE_NUMBERS.items():
        if getattr(args, flag) is not None:
            settings[field_name] = getattr(args, flag)
    for flag in ("targets", "optimizer"):
        if getattr(args, flag) is not None:
            settings[flag] = getattr(args, flag)
    if args.grad_checkpointing:
        settings["grad_checkpointing"] = True
    plan = Plan.from_dict(settings)
    report: dict[str, Any]
    if args.fit:
        stats = _dataset_lengths(args) if args.dataset else None
        fit = fit_plan(plan, spec, device, free, stats)
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
        print_json(report)
    else:
        _print_estimate(report, estimate)
    return 0


def _dataset_lengths(args: argparse.Namespace) -> Any:
    """Token-length percentiles of ``--dataset``, tokenised as training would (chat template included)."""
    from engine.data.scan import scan_dataset
    from engine.memory.planning import length_stats_of

    reference = args.tokenizer or args.model
    try:
        tokenizer = tokenizer_for(reference)
    except StudioError as exc:
        raise StudioError(f"measuring --dataset needs a tokenizer, and {reference!r} has none here ({exc}); "
                          "give --tokenizer with a local model of the same family") from None
    report = scan_dataset(open_data(args.dataset, None, {}, "auto"), tokenizer)
    stats = length_stats_of(report.token_lengths) if report is not None else None
    if stats is None:
        raise StudioError(f"{args.dataset} has no usable rows to measure")
    return stats


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

