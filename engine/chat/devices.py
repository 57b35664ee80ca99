"""Where chat runs: the device it picks, the number type it loads weights in there, and its
CPU threads in the studio process."""

from __future__ import annotations

import os
from typing import Any

from engine.errors import StudioError


def chat_threads() -> int:
    """Torch threads for chat in the studio process: one per physical core but one.

    Decoding one token at a time gains little from more threads (the starter model: 16.1
    tok/s on one thread and on two of a two-core machine), while OpenMP threads that wait
    by spinning collapse when another process wants the cores: with a training run or any
    other load beside it, two threads ran 4 times slower than one (4 against 17 tok/s).
    The core left over keeps the window and a training run beside the chat going.
    """
    import psutil

    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 2
    return max(1, cores - 1)


def pick_device(requested: str) -> str:
    """The torch device for a requested one: ``auto`` is the best here; others must exist."""
    from engine.hardware import best_device, detect_devices

    if requested == "auto":
        return best_device().torch_device
    available = [device.torch_device for device in detect_devices()]
    if same_device(requested) in available:
        return requested
    raise StudioError(f"device {requested!r} is not available here; choose auto or one of {', '.join(available)}")


def dtype_for(device: str) -> Any:
    """The torch dtype chat loads a model in on ``device``."""
    import torch

    # 16-bit halves memory and doubles speed on GPUs; CPUs are slow or inexact in 16-bit.
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def same_device(device: str) -> str:
    """``device`` spelt as ``detect_devices`` spells it."""
    return "cuda:0" if device == "cuda" else device  # torch reads a bare "cuda" as the first GPU
