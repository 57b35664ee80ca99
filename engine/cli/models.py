"""lora-studio models: list the model store, add a local model, trust a model's own code."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.output import print_json, print_progress, print_result
from engine.cli.parsing import add_command


def register(sub: Any) -> None:
    models = sub.add_parser("models", help="the model store").add_subparsers(dest="models_command", required=True)
    add_command(models, "list", cmd_models_list, "list the model store and the starter model")
    add = add_command(models, "add", cmd_models_add, "add a local Hugging Face folder or a GGUF file")
    add.add_argument("path")
    add.add_argument("--name")
    trusted = add_command(models, "trust", cmd_models_trust,
                          "allow a model's own Python code to run (asked once per model)")
    trusted.add_argument("model", help="a model store name or a model folder")
    trusted.add_argument("--revoke", action="store_true", help="take the permission back")


def cmd_models_list(args: argparse.Namespace) -> int:
    from engine.models.store import list_models

    models = list_models()
    if args.json:
        print_json({"models": [m.to_dict() for m in models]})
        return 0
    for m in models:
        state = "ready" if m.ready else "not prepared"
        print(f"{m.name:32} {m.source:8} {m.architecture or '?':24} {state:12} {m.path or ''}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from engine.models.store import add_model

    record = add_model(args.path, name=args.name, progress=None if args.json else print_progress)
    if args.json:
        print_json(record.to_dict())
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
        files = ", ".join(trust.code_names(folder))
        trust.trust(folder)
        line = f"trusted {folder.name}: its own code ({files}) will run when it loads, until those files change"
    return print_result(args, {"model": str(folder), "trusted": not args.revoke}, line)

