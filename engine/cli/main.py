"""The ``lora-studio`` command line: the parser, assembled from the command groups, and
``main``, which runs the chosen command. Every subcommand takes ``--json`` and exits non-zero
with one readable line on error. It never imports Qt."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional

from engine.cli import adapters, chat, data, desktop, doctor, estimate, evaluate, models, runs, serve, train
from engine.cli.output import print_error
from engine.cli.parsing import Parser, UsageError
from engine.errors import StudioError
from engine.paths import sweep_home
from engine.version import studio_version

# In the order ``lora-studio --help`` lists them.
COMMAND_GROUPS = (doctor, models, data, estimate, train, runs, adapters, chat, evaluate, serve, desktop)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lora-studio", description="LoRA Studio: fine-tune language models.")
    parser.add_argument("--version", action="version", version=f"lora-studio {studio_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:  # a usage mistake: one line, exit 2, as argparse's own exit code
        print_error(str(exc))
        return 2
    sweep_home()  # what killed commands left staged (a merge, an import); never a live one's
    try:
        return args.handler(args)
    except StudioError as exc:
        print_error(str(exc))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line for the user, the traceback on request
        if os.environ.get("LORA_STUDIO_DEBUG"):
            traceback.print_exc()
        print_error(f"unexpected {type(exc).__name__}: {exc} (set LORA_STUDIO_DEBUG=1 for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
