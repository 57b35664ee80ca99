"""Running one run config on several processes (``torchrun`` / ``accelerate launch``).

Every rank runs the same recipe. Rank 0 alone writes events, tokenises the dataset and
saves the adapter; the others wait for it where they need its work. Pause and stop come
from a file that only rank 0's decision counts for: it is broadcast at each step, so all
ranks stop at the same step (one rank leaving early would hang the others' all-reduce).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.core.atomic import write_text
from engine.errors import StudioError
from engine.run.rundir import RunDir

_CODES = {"run": 0, "pause": 1, "stop": 2}
_COMMANDS = {code: command for command, code in _CODES.items()}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """The processes on this node (torchrun's ``--nproc_per_node``)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))


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

    code = torch.tensor([_CODES.get(command.get("command", "run"), 0), int(bool(command.get("save", True)))],
                        device=_device())
    dist.broadcast(code, src=0)
    return {"command": _COMMANDS[int(code[0])], "save": bool(code[1])}


def check_shared_folder(folder: Path) -> None:
    """Refuse, on every rank at once, a run folder that is not the same folder on every node.

    The ranks share the run folder: rank 0 tokenises the data into it and the others read it, and
    they all write checkpoint state into it. On several nodes that needs a file system they all
    mount (NFS, Lustre); a folder copied to each node instead would fail later on some rank with
    a missing file, which the others only see as a dropped connection. Here rank 0 writes a
    token, every rank reads it back, and all of them learn who could not."""
    if world_size() == 1 or not _initialised():
        return
    import torch
    import torch.distributed as dist

    marker = RunDir(folder).shared_check
    token = torch.tensor([secrets.randbits(62) if is_main() else 0], dtype=torch.int64, device=_device())
    if is_main():
        write_text(marker, str(int(token[0])))
    dist.broadcast(token, src=0)  # returns on the others once rank 0 has written the file
    try:
        seen = marker.read_text(encoding="utf-8").strip() == str(int(token[0]))
    except OSError:
        seen = False
    missed = torch.tensor([0 if seen else 1], dtype=torch.int64, device=_device())
    everyone = [torch.zeros_like(missed) for _ in range(world_size())]
    dist.all_gather(everyone, missed)  # every rank has read the file once this returns
    if is_main():
        marker.unlink(missing_ok=True)
    blind = [rank for rank, flag in enumerate(everyone) if int(flag[0])]
    if blind:
        nodes = sorted({rank // local_world_size() for rank in blind})
        raise StudioError(
            f"the run folder {folder} is not shared by every node: node {', '.join(map(str, nodes))} "
            f"(rank {', '.join(map(str, blind))}) does not see what node 0 writes into it. Put it on a file "
            "system every node mounts at the same path (NFS, Lustre...) and start the run from there")


def _device() -> str:
    """Where this rank's collective tensors live: its own GPU under NCCL, else the CPU."""
    import torch.distributed as dist

    return f"cuda:{local_rank()}" if dist.get_backend() == "nccl" else "cpu"


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
