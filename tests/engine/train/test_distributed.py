"""The ranks of a run on several nodes check that they share its folder (engine.train.distributed):
two real processes joined by gloo on localhost, as two nodes of one process each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from helpers import ROOT

# One rank: join the group as torchrun would have it join, then check a folder it shares with the
# other rank and one it does not (each rank's own copy, as when the export was copied to each node).
RANK = """
import sys
from pathlib import Path
import torch.distributed as dist
from engine.errors import StudioError
from engine.train.distributed import check_shared_folder, is_main

dist.init_process_group("gloo")
shared, own = Path(sys.argv[1]), Path(sys.argv[2])
check_shared_folder(shared)
# Rank 0 removes its token once every rank has read it: the folder is as it was.
print("shared: ok", sorted(p.name for p in shared.iterdir()) if is_main() else "")
try:
    check_shared_folder(own)
except StudioError as exc:
    print("own:", exc)
"""


def test_nodes_that_do_not_share_the_run_folder_are_refused_on_every_rank(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shared = tmp_path / "shared"
    shared.mkdir()
    ranks = []
    for rank in (0, 1):
        own = tmp_path / f"copy-on-node-{rank}"
        own.mkdir()
        # Node `rank` of two, one process each: its global rank, local rank 0.
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        ranks.append(subprocess.Popen([sys.executable, "-c", RANK, str(shared), str(own)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outputs = [rank.communicate(timeout=60)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    for rank, output in enumerate(outputs):
        lines = output.strip().splitlines()
        assert ("shared: ok []" if rank == 0 else "shared: ok ") in lines, output[-2000:]
        [refusal] = [line for line in lines if line.startswith("own:")]
        assert "is not shared by every node: node 1 (rank 1) does not see what node 0 writes" in refusal
        assert "mounts at the same path" in refusal
