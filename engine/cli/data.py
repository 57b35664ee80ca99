"""lora-studio data: detect a dataset's format, check its rows and measure their lengths."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.inputs import add_data_reading_flags, open_data, tokenizer_for
from engine.cli.output import print_json
from engine.cli.parsing import add_command, number, whole_number


def register(sub: Any) -> None:
    from engine.core.choices import PREFERENCE_OBJECTIVES, TRAIN_ON

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    inspect = add_command(data, "inspect", cmd_data_inspect, "detect a dataset's format and check its rows")
    inspect.add_argument("file")
    inspect.add_argument("--model", help="tokenise with this model to measure lengths")
    inspect.add_argument("--max-length", type=whole_number, default=512)
    inspect.add_argument("--val-fraction", type=number, default=0.0, help="share of rows held out for validation")
    inspect.add_argument("--train-on", choices=TRAIN_ON, default="assistant",
                         help="the loss on the assistant's replies only, or all tokens (rows whose prompt fills max "
                              "length are skipped only in the first case)")
    inspect.add_argument("--objective", choices=PREFERENCE_OBJECTIVES,
                         help="a preference file: count it as this objective reads it (default: DPO, or KTO for "
                              "labelled answers)")
    add_data_reading_flags(inspect)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from engine.data.formats import parse_columns
    from engine.data.scan import check_report_options, scan_dataset

    check_report_options(args.max_length, args.val_fraction)  # before minutes of reading and tokenising
    source = open_data(args.file, args.format, parse_columns(args.columns or ""), args.text_split or "auto")
    tokenizer = tokenizer_for(args.model) if args.model else None
    if source.is_preference:
        return _inspect_preferences(args, source, tokenizer)
    show_progress = not args.json and sys.stderr.isatty()
    report = scan_dataset(source, tokenizer, progress=_print_fraction if show_progress else None)
    if show_progress:
        print(file=sys.stderr)
    summary = report.to_dict(args.max_length, args.val_fraction, train_on=args.train_on)
    if args.model:
        summary["model"] = args.model
    if args.json:
        print_json(summary)
        return 0
    _print_data_report(summary)
    return 0


def _inspect_preferences(args: argparse.Namespace, source: Any, tokenizer: Any) -> int:
    """A preference file: its layout and what a preference run makes of it (pairs, identical pairs,
    prompts max length cuts off, bad rows), in the words of the run's check."""
    from engine.data.preference import default_objective, preference_counts

    objective = args.objective or default_objective(source.format)
    counts = preference_counts(source, tokenizer, objective=objective, max_length=args.max_length)
    report = {"file": str(source.path), "kind": source.kind, "mapping": source.mapping,
              "ignored_columns": source.ignored_columns, **counts.to_dict()}
    if args.model:
        report["model"] = args.model
    if args.json:
        print_json(report)
        return 0
    print(f"{report['file']}: {report['kind']}, {report['layout_title']}")
    print("  columns: " + ", ".join(f"{field} <- {column}" for field, column in report["mapping"].items())
          + (f"; ignored: {', '.join(report['ignored_columns'])}" if report["ignored_columns"] else ""))
    cut = report["prompts_cut_off"]
    pairs = f"{report['pairs']} {'pair' if report['pairs'] == 1 else 'pairs'}"
    print(f"as {objective.upper()} reads it: {report['rows']} rows ({pairs}, {report['bad_rows']} bad); "
          f"identical pairs: "
          f"{report['identical_pairs']}; prompts cut off by max length {args.max_length}: "
          + (str(cut) if cut is not None else "not measured (give --model)"))
    print(report["summary"])
    for problem in report["problems"][:20]:
        print(f"  {problem['unit']} {problem['line']}: {problem['reason']}")
    return 0


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
    print(report["summary"])
    if "token_percentiles" in report:
        print("tokens per row: " + ", ".join(f"{k} {v}" for k, v in report["token_percentiles"].items()))
        print(f"{report['truncated']} of {report['examples']} examples ({100 * report['truncated_share']:.1f}%) "
              f"are longer than {report['max_length']} tokens and would be cut to it")
        if report["chat_template"] == "chatml-fallback":
            print("the model has no chat template: training would use ChatML")
    if report["problems"]:
        print("first problems:")
    for problem in report["problems"]:
        where = problem["file"] if problem["unit"] == "file" else f"{problem['unit']} {problem['line']}"
        where = f"{problem['file']} {where}" if problem["file"] and problem["unit"] != "file" else where
        print(f"  {where}: {problem['reason']}")

