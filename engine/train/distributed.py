"""Running one run config on several processes (``torchrun`` / ``accelerate launch``).

Every rank runs the same recipe. Rank 0 alone writes events, tokenises the dataset and
saves the adapter; the others wait for it where they need its work. Pause and stop come
from a file that only rank 0's decision counts for: it is broadcast at each step, so all
ranks stop at the same step (one rank leaving early would hang the others' all-reduce).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

_CODES = {"run": 0, "pause": 1, "stop": 2}
_COMMANDS = {code: command for command, code in _CODES.items()}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def agree_on(command: dict) -> dict:
    """Rank 0's command, on every rank."""
    if world_size() == 1 or not _initialised():
        return command
    import torch
    import torch.distributed as dist

    device = f"cuda:{local_rank()}" if dist.get_backend() == "nccl" else "cpu"
    code = torch.tensor([_CODES.get(command.get("command", "run"), 0), int(bool(command.get("save", True)))],
                        device=device)
    dist.broadcast(code, src=0)
    return {"command": _COMMANDS[int(code[0])], "save": bool(code[1])}


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first; the others run it after (and find its files ready)."""
    if world_size() == 1 or not _initialised():
        yield
        return
    import torch.distributed as dist

    if not is_main():
        dist.barrier()
    try:
        yield
    finally:
        if is_main():
            dist.barrier()
