"""lora-studio chat: chat with a model, with an adapter or a combination of adapters, or
compare their answers side by side."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Iterator

from engine.cli.output import print_json, quiet_libraries
from engine.cli.parsing import add_command, number, whole_number
from engine.errors import StudioError


def register(sub: Any) -> None:
    chat = add_command(sub, "chat", cmd_chat, "chat with a model, with or without adapters, or compare them")
    chat.add_argument("--model", required=True)
    chat.add_argument("--adapter", action="append", help="a library name or PEFT folder (repeat for several)")
    chat.add_argument("--combine", action="store_true", help="chat with the combination of the adapters")
    chat.add_argument("--weights", type=number, nargs="+", help="with --combine: one weight per adapter")
    chat.add_argument("--compare", action="store_true",
                      help="answer each prompt with the base model and each adapter (and the combination)")
    chat.add_argument("--prompt", help="one message; without it, read messages from standard input")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-new-tokens", type=whole_number, default=256)
    chat.add_argument("--temperature", type=number, default=0.0, help="0 is greedy (the default)")
    chat.add_argument("--top-p", type=number, default=0.9)
    chat.add_argument("--top-k", type=whole_number, default=0, help="0 is off")
    chat.add_argument("--repetition-penalty", type=number, default=1.0)
    chat.add_argument("--seed", type=whole_number)


def cmd_chat(args: argparse.Namespace) -> int:
    from engine.chat.sampling import check_sampling
    from engine.chat.session import ChatSession
    from engine.adapters.library import resolve_adapter

    for ref in args.adapter or []:
        resolve_adapter(ref)  # a wrong name fails now, before seconds of model loading
    choices = _chat_choices(args)
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, repetition_penalty=args.repetition_penalty, seed=args.seed)
    check_sampling(**settings)  # a bad setting fails now, before seconds of model loading
    quiet_libraries()
    session = ChatSession(args.model)
    session.load()
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
            print_json(reply.to_dict())
        else:
            print()
            print(f"[{reply.tokens} tokens, {reply.tokens_per_second:.1f} tok/s]", file=sys.stderr)
    return 0


def _chat_choices(args: argparse.Namespace) -> list[Any]:
    """What to chat with (one choice) or compare (the columns), from --adapter, --combine, --compare."""
    from engine.chat.blends import Blend
    from engine.chat.compare import MAX_COMPARE_COLUMNS

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
    from engine.chat.blends import choice_label

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
        print_json({"columns": [result.to_dict() for result in results]})
        return
    heading(0)
    session.compare(messages, choices, on_token=stream, on_column=column_done, **settings)

