"""The headless command line. Every subcommand takes ``--json`` and exits non-zero
with one readable line on error. It never imports Qt."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from engine.errors import StudioError


def _print_json(data: Any) -> None:
    print(json.dumps(data), flush=True)


def _human_bytes(value: Optional[int]) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value} B"
        value /= 1024
    return str(value)


# doctor ------------------------------------------------------------------------------------
def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.hardware import detect_devices, versions
    from engine.models import list_models
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
        print(f"{d.torch_device:8} {d.name}: {_human_bytes(d.free_bytes)} free of {_human_bytes(d.total_bytes)}"
              f", bf16 {'yes' if d.bf16 else 'no'}{extra}")
    for name, version in report["versions"].items():
        print(f"{name:14} {version}")
    if starter:
        print(f"starter model  {starter.name}: {'ready' if starter.ready else 'prepared on first use'}")
    return 0


# models ------------------------------------------------------------------------------------
def cmd_models_list(args: argparse.Namespace) -> int:
    from engine.models import list_models

    models = list_models()
    if args.json:
        _print_json({"models": [m.to_dict() for m in models]})
        return 0
    for m in models:
        state = "ready" if m.ready else "not prepared"
        print(f"{m.name:32} {m.source:8} {m.architecture or '?':24} {state:12} {m.path or ''}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from engine.models import add_model

    record = add_model(args.path, name=args.name, progress=None if args.json else _print_progress)
    if args.json:
        _print_json(record.to_dict())
    else:
        print(f"added {record.name} ({record.architecture}) at {record.path}")
    return 0


def _print_progress(done: int, total: int, message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)


# data ----------------------------------------------------------------------------------------
def cmd_data_inspect(args: argparse.Namespace) -> int:
    from engine.data import load_dataset_file

    dataset = load_dataset_file(args.file)
    report: dict[str, Any] = {
        "file": str(Path(args.file).resolve()),
        "format": dataset.format,
        "rows": dataset.total_rows,
        "good_rows": len(dataset.conversations),
        "bad_rows": len(dataset.problems),
        "problems": [{"line": p.line, "reason": p.reason} for p in dataset.problems[:20]],
    }
    if args.model:
        report.update(_token_stats(dataset, args.model, args.max_length))
    if args.json:
        _print_json(report)
        return 0
    print(f"{report['file']}: {report['format']} format, {report['good_rows']} good rows, {report['bad_rows']} bad")
    for problem in report["problems"]:
        print(f"  line {problem['line']}: {problem['reason']}")
    if "token_percentiles" in report:
        pct = report["token_percentiles"]
        print("tokens per example: " + ", ".join(f"p{k} {v}" for k, v in pct.items()))
        print(f"{report['truncated']} of {report['good_rows']} rows longer than {args.max_length} tokens")
    return 0


def _token_stats(dataset: Any, model: str, max_length: int) -> dict[str, Any]:
    import numpy as np
    from transformers import AutoTokenizer

    from engine.data import tokenize_conversation
    from engine.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    # Tokenise without a cutoff to see the real lengths, then count what max_length would cut.
    lengths = []
    for messages in dataset.conversations:
        example = tokenize_conversation(messages, tokenizer, max_length=1 << 30)
        if example is not None:
            lengths.append(len(example.input_ids))
    if not lengths:
        return {"token_percentiles": {}, "truncated": 0}
    values = np.percentile(lengths, [50, 90, 95, 99, 100])
    return {
        "token_percentiles": {k: int(v) for k, v in zip((50, 90, 95, 99, 100), values)},
        "truncated": int(sum(1 for n in lengths if n > max_length)),
        "max_length": max_length,
    }


# train ---------------------------------------------------------------------------------------
_TRAIN_FLAGS = {  # CLI flag -> RunConfig field
    "model": "model", "dataset": "dataset", "method": "method", "rank": "rank", "alpha": "alpha",
    "dropout": "dropout", "targets": "targets", "max_steps": "max_steps", "epochs": "epochs",
    "batch": "batch_size", "grad_accum": "grad_accum", "max_length": "max_length", "lr": "lr",
    "warmup_steps": "warmup_steps", "save_every": "save_every", "eval_every": "eval_every",
    "log_every": "log_every", "seed": "seed", "name": "name", "precision": "precision", "device": "device",
}


def _train_config(args: argparse.Namespace) -> Any:
    from engine.config import RunConfig

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
        data["dataset"] = str(Path(data["dataset"]).expanduser().resolve())
    model = data.get("model")
    if model and (os.sep in model or model.endswith(".gguf")):
        data["model"] = str(Path(model).expanduser().resolve())
    if not data.get("model") or not data.get("dataset"):
        raise StudioError("train needs --model and --dataset (or --config with both, or --resume RUN_DIR)")
    return RunConfig.from_dict(data)


def cmd_train(args: argparse.Namespace) -> int:
    from engine.jobs import TrainingJob

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.json").is_file():
            raise StudioError(f"{run_dir} is not a run directory (no config.json)")
        job = TrainingJob.resume(run_dir)
    else:
        config = _train_config(args)
        _check_inputs(config)
        job = TrainingJob.start(config)
    if not args.json:
        print(f"run directory: {job.run_dir}", flush=True)
    finished = _follow(job, _print_event_json if args.json else _print_event_human)
    summary = {"status": finished.status, "run_dir": str(job.run_dir), "adapter": finished.adapter}
    if finished.error:
        summary["error"] = finished.error
    if args.json:
        _print_json(summary)
    elif finished.status == "failed":
        print(f"error: {finished.error}", file=sys.stderr)
    else:
        print(f"{finished.status}: adapter {finished.adapter or '(not saved)'}")
    return 1 if finished.status == "failed" else 0


def _check_inputs(config: Any) -> None:
    """Refuse bad inputs before a run directory or a process exists."""
    from engine.data import load_dataset_file
    from engine.models import resolve_model

    load_dataset_file(config.dataset)
    resolve_model(config.model, progress=_print_progress)


def _follow(job: Any, show: Callable[[Any], None]) -> Any:
    """Show events until the run finishes; Ctrl-C asks it to stop (twice ends it at once)."""
    from engine.events import RunFinished

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
    from engine.events import CheckpointSaved, EvalMetrics, LogLine, Paused, Resumed, RunStarted, StepMetrics

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


# adapters --------------------------------------------------------------------------------------
def cmd_adapters_list(args: argparse.Namespace) -> int:
    from engine.library import list_adapters

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
    from engine.library import read_adapter_meta, resolve_adapter

    path = resolve_adapter(args.adapter)
    meta = read_adapter_meta(path)
    peft_config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    report = {"name": path.name, "path": str(path), "studio": meta, "peft": peft_config}
    if args.json:
        _print_json(report)
        return 0
    print(f"{path.name} ({path})")
    for key in ("base_model", "method", "rank", "alpha", "targets", "dataset", "steps", "final_loss", "created"):
        if key in meta:
            print(f"  {key:12} {meta[key]}")
    return 0


# chat ------------------------------------------------------------------------------------------
def cmd_chat(args: argparse.Namespace) -> int:
    from engine.chat import ChatSession
    from engine.library import resolve_adapter

    if args.adapter:
        resolve_adapter(args.adapter)  # a wrong name fails now, before seconds of model loading
    _quiet_libraries()
    session = ChatSession(args.model)
    session.load()
    session.set_adapter(args.adapter)
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    history: list[dict] = [{"role": "system", "content": args.system}] if args.system else []
    if args.prompt is not None:
        history.append({"role": "user", "content": args.prompt})
        stream = None if args.json else (lambda piece: print(piece, end="", flush=True))
        reply = session.generate(history, on_token=stream, **settings)
        if args.json:
            _print_json(reply.to_dict())
        else:
            print(f"\n[{reply.tokens} tokens, {reply.tokens_per_second:.1f} tok/s]", file=sys.stderr)
        return 0
    return _chat_interactive(session, history, settings, args.json)


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


def _chat_interactive(session: Any, history: list[dict], settings: dict, as_json: bool) -> int:
    if not as_json:
        print("chat: type a message, an empty line or Ctrl-D to quit", file=sys.stderr)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text.strip():
            break
        history.append({"role": "user", "content": text})
        stream = None if as_json else (lambda piece: print(piece, end="", flush=True))
        reply = session.generate(history, on_token=stream, **settings)
        history.append({"role": "assistant", "content": reply.reply})
        if as_json:
            _print_json(reply.to_dict())
        else:
            print()
    return 0


# parser ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from engine.config import METHODS, PRECISIONS, TARGET_PRESETS

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

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    inspect = command("inspect", cmd_data_inspect, "detect a dataset's format and check its rows", data)
    inspect.add_argument("file")
    inspect.add_argument("--model", help="tokenise with this model to measure lengths")
    inspect.add_argument("--max-length", type=int, default=512)

    train = command("train", cmd_train, "train an adapter (streams progress; Ctrl-C stops and saves)")
    train.add_argument("--model", help="starter, a model store name, a local folder or a .gguf file")
    train.add_argument("--dataset", help="a JSONL or JSON dataset file")
    train.add_argument("--method", choices=METHODS)
    train.add_argument("--rank", type=int)
    train.add_argument("--alpha", type=float)
    train.add_argument("--dropout", type=float)
    train.add_argument("--targets", choices=TARGET_PRESETS)
    steps = train.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int)
    steps.add_argument("--epochs", type=float)
    train.add_argument("--batch", type=int)
    train.add_argument("--grad-accum", type=int)
    train.add_argument("--max-length", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--warmup-steps", type=int)
    train.add_argument("--save-every", type=int)
    train.add_argument("--eval-every", type=int)
    train.add_argument("--log-every", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--name")
    train.add_argument("--precision", choices=PRECISIONS)
    train.add_argument("--device")
    train.add_argument("--config", help="a run config JSON (flags override it)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")

    adapters = sub.add_parser("adapters", help="the adapter library").add_subparsers(
        dest="adapters_command", required=True)
    command("list", cmd_adapters_list, "list the adapter library", adapters)
    show = command("show", cmd_adapters_show, "show one adapter", adapters)
    show.add_argument("adapter")

    chat = command("chat", cmd_chat, "chat with a model, with or without an adapter")
    chat.add_argument("--model", required=True)
    chat.add_argument("--adapter")
    chat.add_argument("--prompt", help="one message; without it, read messages from standard input")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--seed", type=int)
    return parser


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
