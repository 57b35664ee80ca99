"""lora-studio serve: an OpenAI-compatible server over a base model and its adapters, until
Ctrl+C (or SIGTERM); one line per request (a JSON line each with --json)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from engine.cli.output import print_json, quiet_libraries
from engine.cli.parsing import add_command, whole_number
from engine.serve.events import RequestLogged
from engine.serve.server import DEFAULT_PORT


def register(sub: Any) -> None:
    serve = add_command(sub, "serve", cmd_serve,
                        "serve a model and its adapters to other programs over the OpenAI API")
    serve.add_argument("--model", required=True)
    serve.add_argument("--adapter", action="append", default=[],
                       help="a library name or PEFT folder; clients name it in 'model' (repeat for several)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="the address to listen on; any but this machine's own needs --api-key")
    serve.add_argument("--port", type=whole_number, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--api-key", help="the key clients must send as 'Authorization: Bearer KEY'")
    serve.add_argument("--max-queue", type=whole_number, default=64,
                       help="requests waiting beyond these are answered 429 (try again later)")
    serve.add_argument("--max-batch", type=whole_number, default=8, help="requests generated together")
    serve.add_argument("--export-vllm", metavar="DIR",
                       help="instead of serving: write into the new folder DIR what serves these adapters on "
                            "vLLM's multi-LoRA server (serve.sh, the adapters, the chat template)")


def cmd_serve(args: argparse.Namespace) -> int:
    if args.export_vllm:
        return _export_vllm(args)
    from engine.adapters.library import resolve_adapter
    from engine.serve.server import LocalServer, ServeSettings

    settings = ServeSettings(model=args.model, adapters=args.adapter, host=args.host, port=args.port,
                             api_key=args.api_key, max_queue=args.max_queue, max_batch=args.max_batch)
    settings.check()  # a bad setting or adapter fails now, before seconds of model loading
    for ref in settings.adapters:
        resolve_adapter(ref)
    quiet_libraries()
    server = LocalServer(settings, on_event=lambda event: _print_request(event, args.json))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    try:
        if args.json:
            print_json({"event": "serving", "url": server.url, "models": server.model_names})
        else:
            print(f"Serving {', '.join(server.model_names)} at {server.url} (Ctrl+C stops)", file=sys.stderr,
                  flush=True)
        stop.wait()
    finally:
        server.stop()
    if args.json:
        print_json({"event": "stopped"})
    else:
        print("Stopped.", file=sys.stderr)
    return 0


def _print_request(event: RequestLogged, as_json: bool) -> None:
    if as_json:
        print_json(event.to_dict())
        return
    clock = time.strftime("%H:%M:%S", time.localtime(event.at))
    line = (f"{clock} {event.client} {event.endpoint} {event.model or '-'} {event.status} "
            f"{event.prompt_tokens}+{event.completion_tokens} tokens {event.seconds:.2f} s")
    print(line + (f" ({event.error})" if event.error else ""), flush=True)


def _export_vllm(args: argparse.Namespace) -> int:
    from engine.serve.vllm_export import export_vllm

    export = export_vllm(args.model, args.adapter, Path(args.export_vllm))
    if args.json:
        print_json({"folder": str(export.folder), "command": export.command})
    else:
        print(f"Wrote {export.folder}; on a machine with vLLM, run its serve.sh:\n{export.shell_command}")
    return 0
