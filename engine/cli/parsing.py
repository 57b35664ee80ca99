"""How a subcommand is declared: its parser, the ``--json`` flag every one takes, its handler;
and how the command line reads what a user typed: numbers checked by the engine's rules
(engine.core.checks), every usage mistake refused in one line."""

from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

from engine.core.checks import parse_number, parse_whole
from engine.errors import StudioError

Handler = Callable[[argparse.Namespace], int]


class UsageError(StudioError):
    """A command line argparse cannot read: an unknown flag, a missing argument, a bad number."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one ``error:`` line and exit code 2 (raised as a UsageError
    for ``main`` to print), not a usage block; its subcommand parsers are Parsers too."""

    def error(self, message: str) -> NoReturn:
        # One line even when the message quotes a typed argument that holds a line break.
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def number(text: str) -> float:
    """argparse type: a finite number (``float`` alone would take "nan", "inf" and "1e999")."""
    return _as_argument(parse_number, text)


def whole_number(text: str) -> int:
    """argparse type: a whole number."""
    return _as_argument(parse_whole, text)


def _as_argument(parse: Callable[[str, str], Any], text: str) -> Any:
    try:
        return parse("the value", text)
    except StudioError as exc:  # argparse adds "argument --flag:" in front
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_command(parent: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand of ``parent`` (the subparsers of lora-studio or of a command group)."""
    p = parent.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=handler)
    return p
