"""Training one run on several machines (nodes): the scripts an exported run folder carries for it.

``launch-nodes.sh`` is started once on every node, with the first node's address and this node's
number in the environment; ``train.sbatch`` has Slurm start it on every node of a job. Both run
``torchrun`` with the static rendezvous, the one that honours ``--node_rank``: node 0 hosts the
rendezvous at MASTER_ADDR:MASTER_PORT, and its first process is rank 0, the one that writes the
events and saves the adapter. (torchrun's c10d rendezvous ignores ``--node_rank`` and numbers the
nodes in the order of their host names.)

Every node reads config.json and the tokenised data from the run folder and rank 0 writes into it,
so the folder must be on a file system all nodes mount at the same path (NFS, Lustre...); the
training child checks that it is (``engine.train.distributed.check_shared_folder``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

LAUNCH_NODES = "launch-nodes.sh"
SBATCH = "train.sbatch"
# The port node 0 listens on when nothing else is asked for: torchrun's own default.
DEFAULT_PORT = 29500


def torchrun_nodes(nodes: str, gpus: int, node_rank: str, master_addr: str, master_port: str, run_dir: str) -> str:
    """The torchrun line one node runs; the arguments but ``gpus`` are shell words (a value or a variable)."""
    return (f"torchrun --nnodes {nodes} --nproc_per_node {gpus} --node_rank {node_rank} "
            f"--master_addr {master_addr} --master_port {master_port} -m engine.train {run_dir}")


def launch_nodes_script(run_dir: Path, nodes: int, gpus: int) -> str:
    """``launch-nodes.sh``: this node's part of an N-node run, told where node 0 is by the environment."""
    script = Path(run_dir) / LAUNCH_NODES
    last = nodes - 1
    wrong = f"NODE_RANK must be the number of this node, from 0 to {last}, not $NODE_RANK"
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Trains this LoRA Studio run on {nodes} nodes with {gpus} process{'es' if gpus > 1 else ''} "
        f"(GPU{'s' if gpus > 1 else ''}) each.",
        "# This folder must be on a file system every node mounts at this same path (NFS, Lustre...):",
        "# every node reads config.json and the data from it, and rank 0 writes the events and the adapter here.",
        "# The model and dataset paths in config.json must exist on every node.",
        "# Start it on every node at about the same time, with the same MASTER_ADDR and MASTER_PORT",
        f"# and each node's own NODE_RANK, from 0 to {last}; node 0 is the machine at MASTER_ADDR:",
        f"#   MASTER_ADDR=node0.example MASTER_PORT={DEFAULT_PORT} NODE_RANK=0 {shlex.quote(str(script))}   "
        "# on node0.example",
        f"#   MASTER_ADDR=node0.example MASTER_PORT={DEFAULT_PORT} NODE_RANK=1 {shlex.quote(str(script))}   "
        "# on the next node, and so on",
        f"# Under Slurm, sbatch {shlex.quote(str(Path(run_dir) / SBATCH))} does this on every node of the job.",
        "set -euo pipefail",
        ': "${MASTER_ADDR:?set MASTER_ADDR to the address of node 0, the node started with NODE_RANK=0}"',
        f': "${{MASTER_PORT:?set MASTER_PORT to a free TCP port on node 0, e.g. {DEFAULT_PORT}}}"',
        f': "${{NODE_RANK:?set NODE_RANK to the number of this node, from 0 to {last}}}"',
        f'case "$NODE_RANK" in \'\'|*[!0-9]*) echo "{wrong}" >&2; exit 2 ;; esac',
        f'if [ "$NODE_RANK" -gt {last} ]; then echo "{wrong}" >&2; exit 2; fi',
        "exec " + torchrun_nodes(str(nodes), gpus, '"$NODE_RANK"', '"$MASTER_ADDR"', '"$MASTER_PORT"',
                                 shlex.quote(str(run_dir))),
        "",
    ])


def sbatch_script(run_dir: Path, nodes: int, gpus: int, name: str) -> str:
    """``train.sbatch``: one Slurm job of N nodes, one torchrun a node, each with G processes."""
    # In single quotes: each task's own shell expands the line, with its own node's SLURM_NODEID.
    per_node = torchrun_nodes('"$SLURM_NNODES"', gpus, '"$SLURM_NODEID"', '"$MASTER_ADDR"', '"$MASTER_PORT"',
                              '"$RUN_DIR"')
    return "\n".join([
        "#!/usr/bin/env bash",
        f"#SBATCH --job-name={_job_name(name)}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus}",
        "# Trains this LoRA Studio run as one Slurm job: submit it with",
        f"#   sbatch {shlex.quote(str(Path(run_dir) / SBATCH))}",
        "# from a shell where LoRA Studio and torchrun are installed (the job's tasks inherit that environment);",
        "# Slurm writes the job's output to slurm-JOBID.out there, the run its events to events.jsonl here.",
        "# This folder must be on a file system every node mounts at this same path; the model and dataset",
        "# paths in config.json must exist on every node. Add your cluster's #SBATCH --partition / --time above.",
        "set -euo pipefail",
        "# Node 0, the first of the job's nodes, hosts the rendezvous; the port is the job's own.",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)"',
        f'MASTER_PORT="${{MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}}"',
        f"RUN_DIR={shlex.quote(str(run_dir))}",
        "export MASTER_ADDR MASTER_PORT RUN_DIR",
        f"srun --kill-on-bad-exit=1 bash -c 'exec {per_node}'",
        "",
    ])


def _job_name(name: str) -> str:
    """A Slurm job name: the run's name in the characters every shell and squeue show as they are."""
    return "lora-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:40] or "run")
