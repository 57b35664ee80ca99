"""lora-studio runs: list the training runs, and export one to train on another machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.output import print_json
from engine.cli.parsing import add_command, whole_number
from engine.errors import StudioError


def register(sub: Any) -> None:
    runs = sub.add_parser("runs", help="training runs").add_subparsers(dest="runs_command", required=True)
    add_command(runs, "list", cmd_runs_list, "list training runs, newest first")
    run_export = add_command(runs, "export", cmd_runs_export,
                             "write a run's config and the commands that run it elsewhere")
    run_export.add_argument("run", help="a run directory, or a run config JSON")
    run_export.add_argument("--output", required=True, metavar="DIR")
    run_export.add_argument("--gpus", "--gpus-per-node", dest="gpus", type=whole_number, default=1, metavar="G",
                            help="processes (GPUs) on each machine, for the torchrun/accelerate lines")
    run_export.add_argument("--nodes", type=whole_number, default=1, metavar="N",
                            help="machines for launch-nodes.sh and train.sbatch to train on together")


def cmd_runs_list(args: argparse.Namespace) -> int:
    from engine.jobs.summary import list_runs

    runs = list_runs()
    if args.json:
        print_json([run.to_dict() for run in runs])
        return 0
    if not runs:
        print("no runs yet")
    for run in runs:
        loss = f" loss {run.final_loss:.4f}" if run.final_loss is not None else ""
        total = f"/{run.total_steps}" if run.total_steps else ""
        extra = "  (resumable)" if run.resumable else ""
        print(f"{run.name}  {run.status}  step {run.steps}{total}{loss}{extra}")
    return 0


def cmd_runs_export(args: argparse.Namespace) -> int:
    from engine.run.config import RunConfig
    from engine.jobs.export import export_run, launch_commands

    source = Path(args.run)
    config_file = source / "config.json" if source.is_dir() else source
    if not config_file.is_file():
        raise StudioError(f"{source} is neither a run directory nor a run config JSON")
    for flag, count in (("--gpus-per-node", args.gpus), ("--nodes", args.nodes)):
        if count < 1:
            raise StudioError(f"{flag} must be at least 1, got {count}")
    out = export_run(RunConfig.load(config_file), Path(args.output), args.gpus, args.nodes)
    commands = launch_commands(out.resolve(), args.gpus, args.nodes)
    if args.json:
        print_json({"run_dir": str(out), "config": str(out / "config.json"), "commands": commands})
    else:
        print(f"exported to {out}")
        for label, line in commands.items():
            print(f"  {label:13} {line}")
    return 0

