"""An exported run's scripts for several machines (engine.jobs.multinode): what launch-nodes.sh and
train.sbatch tell each node to run, and the command line that writes them. The training they start
is run for real on two localhost nodes in tests/engine/train/test_train.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from engine.jobs.export import export_run
from engine.run.config import RunConfig
from helpers import ROOT, write_messages_dataset


@pytest.fixture
def exported(tmp_path) -> Path:
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    config = RunConfig(model="tiny", dataset=str(dataset), name="pirate", max_steps=4)
    return export_run(config, tmp_path / "run folder", gpus=4, nodes=2).resolve()


def _bash(script: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30)


def test_launch_nodes_says_what_each_node_needs_and_refuses_what_is_missing(exported):
    script = exported / "launch-nodes.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    for name in ("launch.sh", "launch-nodes.sh", "train.sbatch"):
        assert subprocess.run(["bash", "-n", str(exported / name)]).returncode == 0, name
    text = script.read_text()
    assert "NODE_RANK=0" in text and "NODE_RANK=1" in text and "mounts at this same path" in text
    [line] = [line for line in text.splitlines() if line.startswith("exec ")]
    assert line == ('exec torchrun --nnodes 2 --nproc_per_node 4 --node_rank "$NODE_RANK" --master_addr '
                    f'"$MASTER_ADDR" --master_port "$MASTER_PORT" -m engine.train \'{exported}\'')
    # Each variable the node needs is asked for by name, in one line, before anything starts.
    full = {"PATH": os.environ["PATH"], "MASTER_ADDR": "node-a", "MASTER_PORT": "29500", "NODE_RANK": "0"}
    for missing in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        done = _bash(script, {k: v for k, v in full.items() if k != missing})
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
        assert f"{missing}: set {missing} to" in done.stderr
    for rank in ("2", "-1", "one"):
        done = _bash(script, dict(full, NODE_RANK=rank))
        assert done.returncode == 2
        assert done.stderr.strip() == f"NODE_RANK must be the number of this node, from 0 to 1, not {rank}"


def test_train_sbatch_starts_one_torchrun_per_node_numbered_by_slurm(exported, tmp_path):
    text = (exported / "train.sbatch").read_text()
    directives = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                      if line.startswith("#SBATCH --"))
    assert directives == {"job-name": "lora-pirate", "nodes": "2", "ntasks-per-node": "1", "gpus-per-node": "4"}
    assert f"sbatch '{exported / 'train.sbatch'}'" in text
    # Slurm is not installed here: small stand-ins run the script's commands as Slurm would, srun
    # once per node with that node's SLURM_NODEID, and torchrun only says what it was asked to run.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_ins = {
        "scontrol": 'printf "node-a\\nnode-b\\n"',
        "srun": 'shift; for id in 0 1; do SLURM_NODEID=$id "$@"; done',
        "torchrun": 'echo "$*"',
    }
    for name, body in stand_ins.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]",
           "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242"}
    done = _bash(exported / "train.sbatch", env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"--nnodes 2 --nproc_per_node 4 --node_rank {rank} --master_addr node-a --master_port 24242 "
        f"-m engine.train {exported}" for rank in (0, 1)]


def test_runs_export_writes_the_scripts_for_n_nodes_and_refuses_zero(tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(RunConfig(model="tiny", dataset=str(dataset), name="pirate").to_dict()))

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine.cli.main", "runs", "export", str(config), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    out = tmp_path / "exported"
    done = cli("--output", str(out), "--nodes", "3", "--gpus-per-node", "2", "--json")
    assert done.returncode == 0, done.stderr
    commands = json.loads(done.stdout)["commands"]
    assert commands["slurm"] == f"sbatch {out.resolve() / 'train.sbatch'}"
    assert "NODE_RANK=<0 to 2>" in commands["each node"]
    assert "--nnodes 3 --nproc_per_node 2" in (out / "launch-nodes.sh").read_text()
    assert "#SBATCH --nodes=3" in (out / "train.sbatch").read_text()
    for flag in ("--nodes", "--gpus-per-node"):
        refused = cli("--output", str(tmp_path / "none"), flag, "0")
        assert refused.returncode == 2 and refused.stderr.strip() == f"error: {flag} must be at least 1, got 0"
    assert not (tmp_path / "none").exists()
