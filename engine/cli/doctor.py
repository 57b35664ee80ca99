"""lora-studio doctor: the studio's version, the devices, their memory, the library versions, the starter model and
whether the window can open."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.output import print_json
from engine.cli.parsing import add_command
from engine.core.units import human_bytes


def register(sub: Any) -> None:
    add_command(sub, "doctor", cmd_doctor, "devices, memory, library versions and whether the window can open")


def cmd_doctor(args: argparse.Namespace) -> int:
    from engine.display import check_window
    from engine.hardware import detect_devices, versions
    from engine.models.store import list_models
    from engine.paths import studio_home
    from engine.version import studio_version

    devices = detect_devices()
    starter = next((m for m in list_models() if m.source == "starter"), None)
    report = {
        "version": studio_version(),
        "home": str(studio_home()),
        "devices": [d.to_dict() for d in devices],
        "versions": versions(),
        "starter_model": starter.to_dict() if starter else None,
        "window": check_window().to_dict(),
    }
    if args.json:
        print_json(report)
        return 0
    print(f"LoRA Studio {report['version']}")
    print(f"LoRA Studio home: {report['home']}")
    for d in devices:
        extra = f", compute {d.compute_capability}" if d.compute_capability else ""
        extra += f", driver {d.driver}" if d.driver else ""
        extra += f", {d.cores} cores / {d.threads} threads" if d.cores else ""
        extra += f", {d.utilization_percent:.0f}% busy" if d.utilization_percent is not None else ""
        extra += f", {d.temperature_c:.0f} °C" if d.temperature_c is not None else ""
        print(f"{d.torch_device:8} {d.name}: {human_bytes(d.free_bytes)} free of {human_bytes(d.total_bytes)}"
              f", bf16 {'yes' if d.bf16 else 'no'}{extra}")
    for name, version in report["versions"].items():
        print(f"{name:14} {version}")
    if starter:
        print(f"starter model  {starter.name}: {'ready' if starter.ready else 'prepared on first use'}")
    window = report["window"]
    print(f"window         {'can open' if window['can_open'] else 'cannot open: ' + window['reason']}"
          f" (Qt platform {window['platform']})")
    return 0

