"""A run's memory: the cap a user can set, and what to say when the device runs out.

Out of memory is the first complaint about fine-tuning tools. When it happens here the
run reports the peak it measured and the plan ``engine.memory.autofit.auto_fit`` finds for the
same model, data and memory, so the studio can offer "apply and retry" instead of
leaving the user to guess.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any, Optional

from engine.core.units import gib
from engine.run.config import RunConfig
from engine.errors import StudioError
from engine.run.events import OutOfMemory

# The CPU allocator's words when malloc fails; on CUDA torch raises torch.OutOfMemoryError.
_CPU_OOM = ("can't allocate memory", "not enough memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or any(words in text for words in _CPU_OOM))


def process_memory() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def cap_memory(limit: int, device: str) -> None:
    """Keep this process within ``limit`` bytes on ``device``: torch's allocator fraction on
    CUDA; on the CPU an address-space limit for the data this process may still allocate."""
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
        return
    in_use = process_memory()
    if limit <= in_use:
        raise StudioError(f"the memory limit ({_gib(limit)}) is below what the training process already uses "
                          f"before loading the model ({_gib(in_use)}): raise it")
    # RLIMIT_DATA counts reserved as well as resident memory: allow what is reserved now plus the
    # resident memory still allowed, so the cap falls where resident memory reaches the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    allowed = _data_segment() + (limit - in_use)
    if hard != resource.RLIM_INFINITY:
        allowed = min(allowed, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (allowed, hard))


def _data_segment() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def measured_peak(device: str) -> Optional[int]:
    """The highest memory this run has held on ``device``: the allocator's peak on CUDA, the
    process's resident high-water mark elsewhere."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    if device == "mps":
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def report(config: RunConfig, model_path: Path, device: str, step: int, budget: int,
           lengths: Optional[Any]) -> OutOfMemory:
    """The event for an out-of-memory at ``step``: what was measured and what would fit in ``budget`` bytes."""
    from engine.memory.planning import fit_run, length_stats_of
    from engine.models.spec import load_model_spec

    kind = device.split(":")[0]
    total = _device_total(device)
    peak = measured_peak(device)
    try:
        spec = load_model_spec(model_path)
        stats = length_stats_of([min(length, config.max_length) for length in lengths]) if lengths else None
        fit = fit_run(config, spec, kind, max(1, budget), stats, after_out_of_memory=True)
    except StudioError as exc:
        return OutOfMemory(step=step, device=device, measured_peak_bytes=peak, device_total_bytes=total,
                           explanations=[f"No plan could be worked out: {exc}"])
    return OutOfMemory(step=step, device=device, measured_peak_bytes=peak, device_total_bytes=total,
                       plan=fit.plan.to_dict() if fit.fits else None, explanations=fit.explanations,
                       suggestion=fit.suggestion)


def _device_total(device: str) -> Optional[int]:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.get_device_properties(device).total_memory)
    import psutil

    return int(psutil.virtual_memory().total)


def describe(event: OutOfMemory, limit_text: str) -> str:
    """The run's one-line error for an out-of-memory."""
    peak = f"; the peak measured was {_gib(event.measured_peak_bytes)}" if event.measured_peak_bytes else ""
    if event.plan:
        from engine.memory.plan import Plan

        advice = f"auto-fit suggests {Plan.from_dict(event.plan).describe()} (apply it and retry)"
    else:
        advice = event.suggestion or "lower the batch size or the max length"
    return f"out of memory at step {event.step} on {event.device} ({limit_text}){peak}: {advice}"


def _gib(value: Optional[int]) -> str:
    return gib(value or 0, digits=2)
