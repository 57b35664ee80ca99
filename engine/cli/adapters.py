"""lora-studio adapters: the adapter library (list, show, rename, tag, trash, import, export,
duplicate) and what is made from adapters (merged models, combinations, GGUF)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from engine.cli.output import print_error, print_json, print_progress, print_result, print_warnings, quiet_libraries
from engine.cli.parsing import add_command, number, whole_number
from engine.core.units import human_bytes
from engine.errors import StudioError
from engine.gguf.quants import DEFAULT_QUANT, QUANTS


def register(sub: Any) -> None:
    adapters = sub.add_parser("adapters", help="the adapter library").add_subparsers(
        dest="adapters_command", required=True)
    _register_library(adapters)
    _register_outputs(adapters)


def _register_library(adapters: Any) -> None:
    add_command(adapters, "list", cmd_adapters_list, "list the adapter library")
    show = add_command(adapters, "show", cmd_adapters_show, "show one adapter")
    show.add_argument("adapter")
    rename = add_command(adapters, "rename", cmd_adapters_rename, "rename an adapter")
    rename.add_argument("adapter")
    rename.add_argument("new_name")
    delete = add_command(adapters, "delete", cmd_adapters_delete, "move an adapter to the trash")
    delete.add_argument("adapter")
    restore = add_command(adapters, "restore", cmd_adapters_restore, "bring an adapter back from the trash")
    restore.add_argument("id", help="the trash id that delete printed (see: adapters trash)")
    trash = add_command(adapters, "trash", cmd_adapters_trash, "list the trash")
    trash.add_argument("--empty", action="store_true", help="delete everything in the trash for good")
    imported = add_command(adapters, "import", cmd_adapters_import, "import a PEFT adapter folder or zip")
    imported.add_argument("path")
    imported.add_argument("--name")
    export = add_command(adapters, "export", cmd_adapters_export, "write an adapter as a zip")
    export.add_argument("adapter")
    export.add_argument("--output", required=True, metavar="ZIP")
    export.add_argument("--overwrite", action="store_true")
    duplicate = add_command(adapters, "duplicate", cmd_adapters_duplicate, "copy an adapter under a new name")
    duplicate.add_argument("adapter")
    duplicate.add_argument("--name")
    edit = add_command(adapters, "edit", cmd_adapters_edit, "set an adapter's tags or notes")
    edit.add_argument("adapter")
    edit.add_argument("--tags", help="comma-separated; an empty string clears them")
    edit.add_argument("--notes")
    chat = add_command(adapters, "chat-settings", cmd_adapters_chat_settings,
                       "set the sampling settings an adapter chats with by default (kept in its GGUF Modelfile)")
    chat.add_argument("adapter")
    for flag, kind in (("--temperature", number), ("--top-p", number), ("--top-k", whole_number),
                       ("--repetition-penalty", number), ("--max-new-tokens", whole_number)):
        chat.add_argument(flag, type=kind)
    chat.add_argument("--seed", type=_seed, help='a whole number, or "random" for a new seed each reply')
    chat.add_argument("--clear", action="store_true", help="forget them all")


def _seed(text: str) -> Any:
    """argparse type of --seed: "random" or a whole number."""
    return "random" if text.strip().lower() == "random" else whole_number(text)


def _register_outputs(adapters: Any) -> None:
    merge = add_command(adapters, "merge", cmd_adapters_merge,
                        "merge an adapter into its base as a Hugging Face model folder, checked against base+adapter")
    merge.add_argument("adapter")
    merge.add_argument("--output", required=True, metavar="DIR")
    merge.add_argument("--base", help="the base model, when the adapter's own is elsewhere")
    merge.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    combine = add_command(adapters, "combine", cmd_adapters_combine, "combine adapters of one base into a new adapter")
    combine.add_argument("adapters", nargs="+")
    combine.add_argument("--weights", type=number, nargs="+", help="one per adapter (default: equal)")
    combine.add_argument("--how", choices=("linear", "cat", "svd", "ties", "dare"), default="linear")
    combine.add_argument("--density", type=number, help="for ties and dare: the fraction of weights kept")
    combine.add_argument("--name", required=True)
    combine.add_argument("--base", help="the base model, when the adapters' own is elsewhere")
    gguf = add_command(adapters, "gguf", cmd_adapters_gguf, "write GGUF for llama.cpp and Ollama, with a Modelfile")
    gguf.add_argument("adapter")
    gguf.add_argument("--output", required=True, metavar="FILE")
    gguf.add_argument("--quant", type=str.lower, choices=tuple(QUANTS), default=DEFAULT_QUANT,
                      help="the file type, made and checked by llama.cpp (default: %(default)s)")
    gguf.add_argument("--lora-only", action="store_true", help="the adapter alone, as a GGUF LoRA")
    gguf.add_argument("--base", help="the base model, when the adapter's own is elsewhere")


def cmd_adapters_list(args: argparse.Namespace) -> int:
    from engine.adapters.library import list_adapters

    adapters = list_adapters()
    if args.json:
        print_json({"adapters": [a.to_dict() for a in adapters]})
        return 0
    if not adapters:
        print("the adapter library is empty")
    for a in adapters:
        loss = f"{a.final_loss:.4f}" if a.final_loss is not None else "-"
        state = f"DAMAGED: {a.damaged}" if a.damaged else f"{a.method or '?'} r{a.rank or '?'} loss {loss}"
        print(f"{a.name:40} {a.base_model or '?':28} {state}")
    return 0


def cmd_adapters_show(args: argparse.Namespace) -> int:
    from engine.adapters.library import chat_settings, read_adapter_meta, resolve_adapter

    path = resolve_adapter(args.adapter)
    meta = read_adapter_meta(path)
    peft_config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    settings = chat_settings(meta)
    report = {"name": path.name, "path": str(path), "studio": meta, "peft": peft_config, "chat_settings": settings}
    if args.json:
        print_json(report)
        return 0
    print(f"{path.name} ({path})")
    # A preference-trained adapter's objective and its settings follow the method (engine.train.saving).
    for key in ("base_model", "method", "objective", "from_adapter", "beta", "dpo_loss", "sft_weight", "reference_free",
                "label_smoothing", "simpo_gamma", "desirable_weight", "undesirable_weight", "rank", "alpha", "targets",
                "dataset", "steps", "final_loss", "final_eval_loss", "created", "tags", "notes"):
        if meta.get(key) not in (None, "", []):
            print(f"  {key:15} {meta[key]}")
    if settings:
        print(f"  {'chat settings':15} {_settings_text(settings)}")
    return 0



def cmd_adapters_rename(args: argparse.Namespace) -> int:
    from engine.adapters.library import rename_adapter

    path = rename_adapter(args.adapter, args.new_name)
    return print_result(args, {"name": path.name, "path": str(path)}, f"renamed to {path.name}")


def cmd_adapters_delete(args: argparse.Namespace) -> int:
    from engine.adapters.trash import delete_adapter

    entry = delete_adapter(args.adapter)
    return print_result(args, entry.to_dict(),
                 f"moved {entry.name} to the trash (bring it back with: lora-studio adapters restore {entry.id})")


def cmd_adapters_restore(args: argparse.Namespace) -> int:
    from engine.adapters.trash import restore_adapter

    path = restore_adapter(args.id)
    return print_result(args, {"name": path.name, "path": str(path)}, f"restored {path.name}")


def cmd_adapters_trash(args: argparse.Namespace) -> int:
    from engine.adapters.trash import empty_trash, list_trash

    if args.empty:
        removed = empty_trash()
        return print_result(args, {"removed": removed}, f"deleted {removed} adapter(s) for good")
    entries = list_trash()
    if args.json:
        print_json({"trash": [e.to_dict() for e in entries]})
        return 0
    if not entries:
        print("the trash is empty")
    for e in entries:
        print(f"{e.id:28} {e.name:40} deleted {e.deleted}  {human_bytes(e.size_bytes)}")
    return 0


def cmd_adapters_import(args: argparse.Namespace) -> int:
    from engine.adapters.transfer import import_adapter

    path = import_adapter(args.path, name=args.name)
    return print_result(args, {"name": path.name, "path": str(path)}, f"imported as {path.name} ({path})")


def cmd_adapters_export(args: argparse.Namespace) -> int:
    from engine.adapters.transfer import export_adapter

    path = export_adapter(args.adapter, args.output, overwrite=args.overwrite)
    return print_result(args, {"zip": str(path), "size_bytes": path.stat().st_size}, f"wrote {path}")


def cmd_adapters_duplicate(args: argparse.Namespace) -> int:
    from engine.adapters.library import duplicate_adapter

    path = duplicate_adapter(args.adapter, args.name)
    return print_result(args, {"name": path.name, "path": str(path)}, f"copied to {path.name}")


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
    return print_result(args, report, f"tags: {', '.join(report['tags']) or '-'}; notes: {report['notes'] or '-'}")



def cmd_adapters_chat_settings(args: argparse.Namespace) -> int:
    from engine.adapters.library import (
        chat_settings,
        clear_chat_settings,
        read_adapter_meta,
        resolve_adapter,
        set_chat_settings,
    )
    from engine.core.sampling_checks import SETTINGS

    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if given.get("seed") == "random":
        given["seed"] = None  # the chat draws a new seed for each reply
    if args.clear and given:
        raise StudioError("--clear forgets every setting: give it alone, or give the settings to keep")
    if args.clear:
        clear_chat_settings(args.adapter)
    elif given:
        set_chat_settings(args.adapter, given)
    settings = chat_settings(read_adapter_meta(resolve_adapter(args.adapter)))
    return print_result(args, {"chat_settings": settings},
                        f"chat settings: {_settings_text(settings) or 'none (the chat uses its own)'}")


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {'random' if value is None else value}"
                     for name, value in settings.items())


def cmd_adapters_merge(args: argparse.Namespace) -> int:
    from engine.adapters.merge import merge_adapter

    quiet_libraries()
    result = merge_adapter(args.adapter, args.output, base=args.base, dtype=args.dtype,
                           progress=None if args.json else print_progress)
    print_warnings(result.warnings)
    fidelity = result.fidelity
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"merged {result.adapter} into {result.base_model}: {result.output} ({result.dtype}, "
              f"{human_bytes(result.size_bytes)}, {result.seconds:.1f} s)")
        print(f"fidelity: max |logit diff| {fidelity.max_abs_logit_diff:.3g} (tolerance {fidelity.tolerance_logit:g}), "
              f"mean KL {fidelity.mean_kl:.3g} (tolerance {fidelity.tolerance_kl:g}) over {fidelity.tokens} positions")
    if not fidelity.within_tolerance:
        print_error("the merged model differs from base+adapter by more than float tolerance; it was kept "
                    "for inspection")
        return 1
    return 0


def cmd_adapters_combine(args: argparse.Namespace) -> int:
    from engine.adapters.combine import combine_adapters

    if args.weights is None:
        weights = [1.0 / len(args.adapters)] * len(args.adapters)
    else:
        weights = args.weights
    quiet_libraries()
    result = combine_adapters(args.adapters, weights, args.how, name=args.name, density=args.density,
                              base=args.base, progress=None if args.json else print_progress)
    print_warnings(result.warnings)
    line = (f"combined {', '.join(f'{a} x {w:g}' for a, w in zip(result.adapters, result.weights))} with "
            f"{result.how} into {result.name} (rank {result.rank})")
    return print_result(args, result.to_dict(), line)


def cmd_adapters_gguf(args: argparse.Namespace) -> int:
    from engine.gguf.adapter import adapter_to_gguf
    from engine.gguf.export import describe

    quiet_libraries()
    result = adapter_to_gguf(args.adapter, args.output, quant=args.quant, lora_only=args.lora_only, base=args.base,
                             progress=None if args.json else print_progress)
    print_warnings(result.warnings)
    if args.json:
        print_json(result.to_dict())
    else:
        kind = "GGUF LoRA" if result.kind == "lora" else "GGUF model"
        print(f"wrote {kind} {result.path} ({result.label}, {human_bytes(result.size_bytes)}, {result.tensors} tensors)")
        for line in describe(result):
            print(line)
        if result.base_gguf:
            print(f"base model GGUF: {result.base_gguf}")
        print(f"Ollama Modelfile: {result.modelfile}")
    if result.flagged:
        return 1
    if result.merge is not None and not result.merge["within_tolerance"]:
        return 1
    return 0

