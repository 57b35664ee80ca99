"""lora-studio eval: score the base model and adapters on a dataset or a run's held-out rows
(answers, metrics, the judge, the forgetting check), and write the comparison report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.cli.inputs import add_data_reading_flags, dataset_reference
from engine.cli.output import print_json, quiet_libraries
from engine.cli.parsing import add_command, whole_number
from engine.errors import StudioError


def register(sub: Any) -> None:
    evaluate = add_command(sub, "eval", cmd_eval,
                           "evaluate the base model and adapters on a dataset or a run's held-out rows")
    evaluate.add_argument("--model", help="the base model (with --run: the run's model when left out)")
    evaluate.add_argument("--adapter", action="append", default=[],
                          help="a library name, PEFT folder or run checkpoint (repeat for several)")
    evaluate.add_argument("--other-model", action="append", default=[], metavar="MODEL",
                          help="another model to compare, e.g. a merged adapter or a full fine-tune (repeatable)")
    evaluate.add_argument("--combination", action="append", nargs="+", default=[], metavar="ADAPTER",
                          help="the combination of these adapters (their changes added, weight 1 each) as one "
                               "candidate (repeatable)")
    evaluate.add_argument("--include-base", action="store_true", help="score the base model too (always, with --run)")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--dataset", help="a dataset file or folder the Data page reads")
    source.add_argument("--run", metavar="RUN_DIR", help="a run folder: evaluate on the rows it held out")
    add_data_reading_flags(evaluate)
    evaluate.add_argument("--metrics", nargs="+", metavar="METRIC", help="the metrics (default: all that apply)")
    evaluate.add_argument("--label-column", help="the dataset column with each row's expected choice or number")
    evaluate.add_argument("--answer-regex", help="finds the answer (its first group) in answers and references")
    evaluate.add_argument("--judge", metavar="MODEL", help="the judge model (default: the base model itself)")
    evaluate.add_argument("--no-judge", action="store_true", help="do not judge the answers against the base's")
    evaluate.add_argument("--no-forgetting", action="store_true",
                          help="skip the forgetting check (the drift from the base on 100 general prompts)")
    evaluate.add_argument("--forgetting-prompts", type=whole_number, metavar="N",
                          help="the forgetting check on the first N general prompts (default: all 100)")
    evaluate.add_argument("--max-new-tokens", type=whole_number, default=128)
    evaluate.add_argument("--limit", type=whole_number, default=500, help="evaluate on the first N rows (default 500)")
    evaluate.add_argument("--batch-size", type=whole_number)
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(eval_command=None)
    reports = evaluate.add_subparsers(dest="eval_command")
    report = add_command(reports, "report", cmd_eval_report,
                         "write the comparison report of evaluation results (HTML or Markdown)")
    report.add_argument("results", nargs="+",
                        help="library adapters (their newest results on each set) or results .json files")
    report.add_argument("--output", required=True, help="the report: a .html or .md file")


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.eval.request import EvalRequest, prepare, run_request

    model, adapters = _model_and_adapters(args)
    request = EvalRequest(model=model, adapters=adapters, include_base=args.include_base or bool(args.run),
                          other_models=args.other_model, combinations=args.combination, run_dir=args.run,
                          dataset=dataset_reference(args.dataset) if args.dataset else None,
                          data_options=_data_options(args), limit=args.limit, max_new_tokens=args.max_new_tokens,
                          metrics=args.metrics, answer_regex=args.answer_regex, label_column=args.label_column,
                          judge=not args.no_judge, judge_model=args.judge, forgetting=not args.no_forgetting,
                          forgetting_prompts=args.forgetting_prompts, device=args.device)
    if args.batch_size:
        request.batch_size = args.batch_size
    prepared = prepare(request)  # every refusal before the libraries load
    quiet_libraries()
    document, stored = run_request(request, prepared=prepared, progress=progress_line())
    _print_results(document, args.json)
    print(f"results: {stored.results_file}" + (f" (kept with {', '.join(stored.adapters)})" if stored.adapters else ""),
          file=sys.stderr)
    return 0


def _model_and_adapters(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The base model and adapters named, or with --run and none named, the run's own."""
    if not args.dataset and not args.run:
        raise StudioError("evaluate on what? give --dataset FILE or --run RUN_DIR")
    model, adapters = args.model, list(args.adapter)
    if args.run:
        from engine.jobs.summary import summarize_run

        summary = summarize_run(Path(args.run))
        if summary is None:
            raise StudioError(f"{args.run} is not a run folder")
        model = model or summary.model
        if not adapters and not args.other_model and not args.combination:
            if not summary.adapter:
                raise StudioError(f"run {summary.name} saved no adapter: name one with --adapter")
            adapters = [summary.adapter]
    if not model:
        raise StudioError("which base model? give --model")
    if not adapters and not args.other_model and not args.combination and not args.include_base:
        raise StudioError("nothing to evaluate: give --adapter, --combination, --other-model or --include-base")
    return model, adapters


def _data_options(args: argparse.Namespace) -> Any:
    from engine.data.dataset import DataOptions
    from engine.data.formats import parse_columns

    return DataOptions(args.format, parse_columns(args.columns or ""), args.text_split or "auto")


def progress_line() -> Any:
    """Progress on standard error: one line each time the step changes, with the share done."""
    shown: dict[str, Any] = {"message": None}

    def report(done: int, total: int, message: str) -> None:
        if message != shown["message"]:
            shown["message"] = message
            print(f"[{done}/{total}] {message}", file=sys.stderr, flush=True)
    return report


def _print_results(document: dict[str, Any], as_json: bool) -> None:
    for note in document["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if as_json:
        for example in document["examples"]:
            print_json({"example": example})
        print_json({"scoreboard": {key: value for key, value in document.items() if key != "examples"}})
        return
    print(scoreboard_text(document))


def scoreboard_text(document: dict[str, Any]) -> str:
    """The scoreboard as a plain-text table: a row per candidate, a column per score."""
    names = [name for name in document["metrics"] if any(name in c["scores"] for c in document["candidates"])]
    header = ["candidate", *names, "judge win rate", "KL", "changed"]
    rows = [header]
    for candidate in document["candidates"]:
        judge, forgetting = candidate.get("judge"), candidate.get("forgetting")
        rows.append([candidate["label"], *(_number(candidate["scores"].get(name)) for name in names),
                     f"{judge['win_rate']:.2f} [{judge['low']:.2f}, {judge['high']:.2f}]" if judge else "-",
                     _number(forgetting["kl"]) if forgetting else "-",
                     f"{forgetting['changed']:.0%}" if forgetting else "-"])
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    where = document["set"]
    return "\n".join([f"{where['name']}: {where['examples']} examples", *lines])


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"


def cmd_eval_report(args: argparse.Namespace) -> int:
    from engine.eval.report import write_report
    from engine.eval.results import gather_results

    output = write_report(gather_results(args.results), Path(args.output).expanduser())
    if args.json:
        print_json({"report": str(output)})
    else:
        print(f"report: {output}")
    return 0
