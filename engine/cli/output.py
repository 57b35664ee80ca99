"""What every command prints the same way: JSON, progress and warnings on standard error,
the one-line error, and the ML libraries kept quiet so that they do not bury it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data), flush=True)


def print_progress(done: int, total: int, message: str) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)


def print_result(args: argparse.Namespace, report: dict[str, Any], line: str) -> int:
    """The report as JSON with ``--json``, else its one line; the command succeeded."""
    if args.json:
        print_json(report)
    else:
        print(line)
    return 0


def print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def quiet_libraries() -> None:
    """Loading bars, deprecation notices and optional-kernel advice from the ML libraries
    would bury the CLI's own output; only their errors get through."""
    import logging
    import warnings

    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
