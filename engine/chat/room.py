"""Memory room: whether a chat model fits on its device before it is loaded, and whether a
training run fits beside a loaded chat model (or the chat model must be unloaded for it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from engine.chat.devices import same_device
from engine.errors import StudioError

if TYPE_CHECKING:
    from engine.chat.session import ChatSession

# A loaded chat model must leave this share of the device's free memory unused, as the
# training estimator does: allocators and other programs need some slack.
MEMORY_MARGIN = 0.10
# Room for the key/value cache of a conversation this long is counted when loading;
# chats seldom come near a long-context model's full window.
CHAT_CONTEXT_TOKENS = 4096


@dataclass
class MemoryRoom:
    """Whether something fits in a device's free memory beside what already runs there."""

    device: str
    needed_bytes: int
    free_bytes: int
    what: str

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.free_bytes * (1 - MEMORY_MARGIN)

    def describe(self) -> str:
        from engine.core.units import human_bytes

        return (f"{self.what} needs about {human_bytes(self.needed_bytes)} on {self.device}, "
                f"which has {human_bytes(self.free_bytes)} free")


def chat_memory_bytes(model_path: str | Path, device: str) -> int:
    """What chatting with a model takes: its weights in the chat dtype, and the key/value
    cache of a ``CHAT_CONTEXT_TOKENS``-token conversation (read from config.json alone)."""
    from engine.models.spec import load_model_spec

    spec = load_model_spec(model_path)
    element = 2 if device.startswith("cuda") else 4  # see engine.chat.devices.dtype_for
    context = min(spec.max_position_embeddings or CHAT_CONTEXT_TOKENS, CHAT_CONTEXT_TOKENS)
    kv_cache = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * context * element
    return spec.total_params * element + kv_cache


def room_to_load(model_path: str | Path, device: str, free_bytes: Optional[int] = None) -> MemoryRoom:
    """Whether a chat model fits in ``device``'s free memory (measured unless given), beside
    whatever runs there already: a training run, another program."""
    free = _free_bytes(device) if free_bytes is None else free_bytes
    return MemoryRoom(device, chat_memory_bytes(model_path, device), free, f"chatting with {Path(model_path).name}")


def room_for_training(session: ChatSession, config: Any, free_bytes: Optional[int] = None) -> Optional[MemoryRoom]:
    """Whether the training run ``config`` (a RunConfig) fits beside ``session``'s loaded model.

    None when they do not share a device (or nothing is loaded). The run's need is the
    memory estimator's peak for it; the free memory is measured now, with the chat model
    in it, unless given.
    """
    from engine.hardware import best_device
    from engine.memory.estimate import estimate_memory
    from engine.models.spec import load_model_spec
    from engine.memory.planning import plan_for

    if not session.loaded or session.device is None:
        return None
    device = best_device().torch_device if config.device == "auto" else config.device
    if same_device(device) != same_device(session.device):
        return None
    kind = device.split(":")[0]
    plan = plan_for(config, kind, bf16=kind == "cuda" and _cuda_bf16())
    estimate = estimate_memory(load_model_spec(config.model), plan, kind)
    free = _free_bytes(session.device) if free_bytes is None else free_bytes
    return MemoryRoom(session.device, estimate.device_bytes, free, f"training {config.model}")


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def _free_bytes(device: str) -> int:
    from engine.hardware import detect_devices

    for info in detect_devices():
        if info.torch_device == same_device(device):
            return info.free_bytes
    raise StudioError(f"device {device!r} is not available here")
