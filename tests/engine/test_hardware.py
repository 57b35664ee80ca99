"""Device detection, memory readings and library versions, on whatever machine runs the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil

from engine import hardware
from helpers import ROOT



def test_the_cpu_is_listed_last_with_its_memory():
    import torch

    devices = hardware.detect_devices()
    cpu = devices[-1]
    assert (cpu.kind, cpu.index, cpu.torch_device) == ("cpu", 0, "cpu")
    assert cpu.name.strip()
    assert cpu.total_bytes == psutil.virtual_memory().total
    assert 0 < cpu.free_bytes <= cpu.total_bytes
    # Only real accelerators are listed, in torch's numbering.
    cuda = [d for d in devices if d.kind == "cuda"]
    assert [d.torch_device for d in cuda] == [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    assert all(d.kind in ("cuda", "mps") for d in devices[:-1])
    for device in devices:
        assert 0 <= device.free_bytes <= device.total_bytes
        assert json.loads(json.dumps(device.to_dict()))["torch_device"] == device.torch_device


def test_the_best_device_is_an_accelerator_when_there_is_one():
    devices = hardware.detect_devices()
    best = hardware.best_device()
    if len(devices) == 1:
        assert best.kind == "cpu"
    else:
        assert best.kind != "cpu" and best.free_bytes == max(d.free_bytes for d in devices[:-1])


def test_cpu_memory_in_use_grows_with_a_big_tensor():
    # In a process of its own: in the test process, memory that earlier tests freed can stay
    # with the allocator, resident, and a new tensor reuse it without the resident size moving
    # (seen on CI: the same byte count before and after 256 MiB).
    code = (
        "import json, torch; from engine import hardware\n"
        "before, reserved = hardware.memory_in_use('cpu')\n"
        "big = torch.ones(64 * 2**20)  # 256 MiB, written so the pages are really resident\n"
        "after, _ = hardware.memory_in_use('cpu')\n"
        "print(json.dumps([before, reserved, after, big.device.type]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    before, reserved, after, device = json.loads(done.stdout.strip().splitlines()[-1])
    assert before > 0 and reserved is None  # one number on a CPU: the process's resident memory
    assert device == "cpu" and after - before >= 200 * 2**20
    assert hardware.memory_in_use("no-such-device") == (None, None)


def test_versions_name_the_libraries_without_importing_them():
    code = (
        "import sys, json; from engine import hardware; v = hardware.versions(); "
        "print(json.dumps([v, [m for m in ('torch', 'transformers', 'peft', 'PySide6') if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ),
                         capture_output=True, text=True, check=True)
    found, imported = json.loads(out.stdout)
    assert imported == []
    assert set(found) == {"python", "torch", "transformers", "peft", "datasets", "accelerate",
                          "bitsandbytes", "PySide6", "platform"}
    import torch

    assert found["torch"] == torch.__version__
    assert found["python"] == ".".join(map(str, sys.version_info[:3]))


def test_the_cpu_reports_its_cores_and_load_and_nvml_is_quiet_without_a_gpu():
    from engine.hardware import _nvml_live, detect_devices

    cpu = detect_devices()[-1]
    assert cpu.kind == "cpu" and cpu.cores >= 1 and cpu.threads >= cpu.cores
    assert cpu.utilization_percent is not None and 0 <= cpu.utilization_percent <= 100
    # No NVIDIA driver here: NVML cannot start, and the live readings are simply absent.
    assert _nvml_live("00000000-0000-0000-0000-000000000000") == (None, None)
    assert _nvml_live(None) == (None, None)
