"""What devices exist: CUDA (and ROCm, which torch presents as CUDA), Apple MPS, the CPU.

torch is imported inside the functions that need it, so importing this module
(or asking for ``versions``) stays cheap.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

# Package labels and the distributions that provide them, in order of preference.
_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "datasets": ("datasets",),
    "accelerate": ("accelerate",),
    "bitsandbytes": ("bitsandbytes",),
    "PySide6": ("PySide6", "PySide6-Essentials"),
}
_CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@dataclass
class DeviceInfo:
    kind: str  # cuda | mps | cpu
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool
    compute_capability: Optional[str] = None
    driver: Optional[str] = None
    # Live readings through NVML (NVIDIA GPUs) and psutil (the CPU); None where nothing reports them.
    utilization_percent: Optional[float] = None
    temperature_c: Optional[float] = None
    cores: Optional[int] = None  # the CPU: physical cores (logical ones in ``threads``)
    threads: Optional[int] = None

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "torch_device": self.torch_device}


def detect_devices() -> list[DeviceInfo]:
    """Accelerators first, in torch's order; the CPU always last."""
    return [*_cuda_devices(), *_mps_devices(), _cpu_device()]


def best_device() -> DeviceInfo:
    """The accelerator with the most free memory, or the CPU when there is none."""
    devices = detect_devices()
    accelerators = [device for device in devices if device.kind != "cpu"]
    return max(accelerators, key=lambda device: device.free_bytes) if accelerators else devices[-1]


def memory_in_use(torch_device: str) -> tuple[Optional[int], Optional[int]]:
    """(allocated, reserved) bytes on ``torch_device``; None for what cannot be measured there.

    On the CPU nothing separates tensors from the rest of the process, nor memory held for
    them from memory in use: "allocated" is the process's resident memory and there is no
    "reserved" (a copy of the same number drew a second line over the first).
    """
    device = str(torch_device)
    if device == "cpu":
        import psutil

        return psutil.Process().memory_info().rss, None
    if device.startswith("cuda"):
        import torch

        return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    if device == "mps":
        import torch

        return torch.mps.current_allocated_memory(), torch.mps.driver_allocated_memory()
    return None, None


def versions() -> dict[str, str]:
    """Versions of Python, the libraries that matter and the platform, read from package
    metadata so that nothing heavy is imported."""
    found = {"python": platform.python_version()}
    for label, distributions in _PACKAGES.items():
        found[label] = _installed_version(distributions)
    found["platform"] = platform.platform()
    return found


def _installed_version(distributions: tuple[str, ...]) -> str:
    for distribution in distributions:
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "not installed"


# accelerators --------------------------------------------------------------------------------
def _cuda_devices() -> list[DeviceInfo]:
    import torch

    if not torch.cuda.is_available():
        return []
    rocm = torch.version.hip is not None
    driver = None if rocm else _nvidia_driver()
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        if rocm:
            capability = getattr(props, "gcnArchName", None)
            bf16 = torch.cuda.is_bf16_supported()
        else:
            capability = f"{props.major}.{props.minor}"
            bf16 = props.major >= 8  # Ampere and later compute in bf16 natively
        utilization, temperature = (None, None) if rocm else _nvml_live(getattr(props, "uuid", None))
        devices.append(DeviceInfo("cuda", index, props.name, total, free, bf16, capability, driver,
                                  utilization_percent=utilization, temperature_c=temperature))
    return devices


def _nvml_live(uuid: Any) -> tuple[Optional[float], Optional[float]]:
    """(utilisation %, temperature °C) of the GPU with this CUDA UUID, from NVML.

    Matched by UUID, not by index: CUDA_VISIBLE_DEVICES and CUDA's ordering renumber the
    GPUs, NVML does not."""
    if uuid is None:
        return None, None
    try:
        import pynvml
    except ImportError:
        return None, None
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            utilization = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            temperature = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None, None
    return float(utilization), float(temperature)


def _nvidia_driver() -> Optional[str]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None
    return driver.decode() if isinstance(driver, bytes) else str(driver)


def _mps_devices() -> list[DeviceInfo]:
    import torch

    if not torch.backends.mps.is_available():
        return []
    # Memory is unified: Metal's recommended working set is the real ceiling for one process.
    total = torch.mps.recommended_max_memory()
    free = max(0, total - torch.mps.driver_allocated_memory())
    bf16 = _macos_major() >= 14  # MPS gained bf16 with macOS 14
    return [DeviceInfo("mps", 0, f"{_cpu_name()} GPU", total, free, bf16)]


def _macos_major() -> int:
    release = platform.mac_ver()[0]
    return int(release.split(".")[0]) if release else 0


# the CPU -------------------------------------------------------------------------------------
def _cpu_device() -> DeviceInfo:
    import psutil

    memory = psutil.virtual_memory()
    return DeviceInfo("cpu", 0, _cpu_name(), memory.total, memory.available, _cpu_bf16(),
                      utilization_percent=psutil.cpu_percent(interval=None), temperature_c=_cpu_temperature(),
                      cores=psutil.cpu_count(logical=False), threads=psutil.cpu_count(logical=True))


def _cpu_temperature() -> Optional[float]:
    import psutil

    readings = getattr(psutil, "sensors_temperatures", lambda: {})()
    for name in ("coretemp", "k10temp", "cpu_thermal", "zenpower"):
        if readings.get(name):
            return float(readings[name][0].current)
    return None


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and info:
            break
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def _sysctl(key: str) -> Optional[str]:
    try:
        result = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


@functools.cache
def _cpu_name() -> str:
    info = _cpuinfo()
    for key in ("model name", "Hardware", "Model", "cpu model"):
        if info.get(key):
            return info[key]
    if sys.platform == "darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or platform.machine() or "CPU"


@functools.cache
def _cpu_bf16() -> bool:
    """Whether the CPU computes bf16 natively (without it torch emulates bf16, slowly)."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    if flags:
        return bool(flags & _CPU_BF16_FLAGS)
    if sys.platform == "darwin":
        return _sysctl("hw.optional.arm.FEAT_BF16") == "1"
    return False
