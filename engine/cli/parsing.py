"""How a subcommand is declared: its parser, the ``--json`` flag every one takes, its handler."""

from __future__ import annotations

import argparse
from typing import Any, Callable

Handler = Callable[[argparse.Namespace], int]


def add_command(parent: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand of ``parent`` (the subparsers of lora-studio or of a command group)."""
    p = parent.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=handler)
    return p
