"""Running a run elsewhere: its launch command lines, and exporting its config with a
``launch.sh`` (one machine), a ``launch-nodes.sh`` and a ``train.sbatch`` (several,
``engine.jobs.multinode``) into a folder another machine runs as it is."""

from __future__ import annotations

import shlex
from pathlib import Path

from engine.core.atomic import write_json, write_text
from engine.errors import StudioError
from engine.jobs.multinode import DEFAULT_PORT, LAUNCH_NODES, SBATCH, launch_nodes_script, sbatch_script
from engine.run.config import RunConfig
from engine.run.rundir import RunDir

# The scripts an export writes beside config.json, in the order the dialog and the CLI name them.
SCRIPTS = ("launch.sh", LAUNCH_NODES, SBATCH)


def launch_commands(run_dir: Path, gpus: int = 1, nodes: int = 1) -> dict[str, str]:
    """The command lines that run this run's config on another machine (or this one, headless);
    with ``nodes`` > 1 also the ones that run it on that many machines, ``gpus`` processes each."""
    folder = shlex.quote(str(run_dir))
    commands = {
        "one process": f"python -m engine.train {folder}",
        "torchrun": f"torchrun --standalone --nproc_per_node {gpus} -m engine.train {folder}",
        "accelerate": f"accelerate launch --num_processes {gpus} -m engine.train {folder}",
        "command line": f"lora-studio train --config {shlex.quote(str(Path(run_dir) / 'config.json'))}",
    }
    if nodes > 1:
        script = shlex.quote(str(Path(run_dir) / LAUNCH_NODES))
        commands["each node"] = (f"MASTER_ADDR=<node 0's address> MASTER_PORT={DEFAULT_PORT} "
                               f"NODE_RANK=<0 to {nodes - 1}> {script}")
    commands["slurm"] = f"sbatch {shlex.quote(str(Path(run_dir) / SBATCH))}"
    return commands


def export_run(config: RunConfig, out_dir: Path, gpus: int = 1, nodes: int = 1) -> Path:
    """Write ``config.json`` and the launch scripts into a new folder: a run directory that
    ``python -m engine.train``, ``torchrun`` (on one node or ``nodes``), ``accelerate launch``
    or Slurm run as it is."""
    config.validate()
    for what, count in (("nodes", nodes), ("GPUs per node", gpus)):
        if count < 1:
            raise StudioError(f"{what} must be at least 1, got {count}")
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
    where = out_dir.resolve()
    commands = launch_commands(where, gpus, nodes)
    launch = ["#!/usr/bin/env bash",
              "# Runs this LoRA Studio run headless. The model and dataset paths in config.json must exist here.",
              "# Pick one of the lines below; progress goes to events.jsonl beside this file.",
              f"# On several machines: {LAUNCH_NODES}, or under Slurm {SBATCH}.",
              "set -euo pipefail", 'cd "$(dirname "$0")"',
              f"# {commands['one process']}", f"# {commands['accelerate']}", commands["torchrun"], ""]
    texts = {"launch.sh": "\n".join(launch), LAUNCH_NODES: launch_nodes_script(where, nodes, gpus),
             SBATCH: sbatch_script(where, nodes, gpus, config.name or where.name)}
    for name in SCRIPTS:
        write_text(out_dir / name, texts[name])
        (out_dir / name).chmod(0o755)
    return out_dir
