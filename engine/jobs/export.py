"""Running a run elsewhere: its launch command lines, and exporting its config with a
``launch.sh`` into a folder another machine runs as it is."""

from __future__ import annotations

import shlex
from pathlib import Path

from engine.core.atomic import write_json
from engine.errors import StudioError
from engine.run.config import RunConfig
from engine.run.rundir import RunDir


def launch_commands(run_dir: Path, gpus: int = 1) -> dict[str, str]:
    """The command lines that run this run's config on another machine (or this one, headless)."""
    folder = shlex.quote(str(run_dir))
    return {
        "one process": f"python -m engine.train {folder}",
        "torchrun": f"torchrun --standalone --nproc_per_node {gpus} -m engine.train {folder}",
        "accelerate": f"accelerate launch --num_processes {gpus} -m engine.train {folder}",
        "command line": f"lora-studio train --config {shlex.quote(str(Path(run_dir) / 'config.json'))}",
    }


def export_run(config: RunConfig, out_dir: Path, gpus: int = 1) -> Path:
    """Write ``config.json`` and ``launch.sh`` into a new folder: a run directory that
    ``python -m engine.train``, ``torchrun`` or ``accelerate launch`` run as it is."""
    config.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise StudioError(f"{out_dir} is not empty: export into a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = config.to_dict()
    for key in ("dataset", "model"):
        path = Path(data[key]).expanduser()
        if path.exists():
            data[key] = str(path.resolve())  # the same files on the other machine, or edit config.json there
    data["schedule_start"] = 0
    write_json(RunDir(out_dir).config, data)
    commands = launch_commands(out_dir.resolve(), gpus)
    script = ["#!/usr/bin/env bash",
              "# Runs this LoRA Studio run headless. The model and dataset paths in config.json must exist here.",
              "# Pick one of the lines below; progress goes to events.jsonl beside this file.",
              "set -euo pipefail", 'cd "$(dirname "$0")"',
              f"# {commands['one process']}", f"# {commands['accelerate']}", commands["torchrun"], ""]
    launch = out_dir / "launch.sh"
    launch.write_text("\n".join(script), encoding="utf-8")
    launch.chmod(0o755)
    return out_dir
