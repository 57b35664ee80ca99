"""bench/gpu_check.py end to end on a CPU, run as a user runs it: the CUDA parts skipped with
their reason, every other part measured, and the results file saying so."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("lora", "dora", "qlora", "full", "prompt")
MODELS = ("tiny", "starter", "llama-1b")


def test_gpu_check_runs_on_a_cpu_and_records_every_part(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, on any machine
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    last = dict(pair.split("=", 1) for pair in done.stdout.strip().splitlines()[-1].split())

    [results] = tmp_path.glob("gpu-check-cpu-*.json")
    report = json.loads(results.read_text())
    assert report["device"] == "cpu" and report["host"]["versions"]["torch"]
    parts = report["parts"]
    expected = {"doctor", "chat", "throughput", *(f"model {model}" for model in MODELS),
                *(f"{what} {model} {method}" for what in ("train", "memory") for model in MODELS for method in METHODS)}
    assert set(parts) == expected
    # What needs CUDA is skipped, saying so; nothing failed.
    assert all(part["status"] == "skipped" and "CUDA" in part["reason"]
               for name, part in parts.items() if "llama-1b" in name)
    assert all(part["status"] in ("ok", "skipped") for part in parts.values())
    assert all(part["reason"] for part in parts.values() if part["status"] == "skipped")

    # The tiny model trained every method through the engine's recipe and saved what it trained.
    for method in METHODS:
        figures = parts[f"train tiny {method}"]["figures"]
        assert figures["steps"] == 1 and figures["saved"] and figures["device"] == "cpu"
        assert math.isfinite(figures["final_loss"]) and figures["tokens_per_second"] > 0
        assert 0 < figures["trainable_params"] <= figures["total_params"] and figures["predicted_peak_bytes"] > 0
    throughput = parts["throughput"]["figures"]
    assert all(throughput[key] > 0 for key in ("ratio_padded", "ratio_padding_free", "peak_memory_ratio"))
    assert all(peak > 0 for peak in throughput["tiny"]["peak_bytes"].values())
    chat = parts["chat"]["figures"]
    assert chat["chat_tokens_per_second"] > 0 and chat["plain_tokens_per_second"] > 0 and chat["tps_ratio"] > 0
    assert parts["doctor"]["figures"]["gpus"] == 0

    # The last line sums the file up.
    ok = sum(part["status"] == "ok" for part in parts.values())
    assert last["parts_ok"] == str(ok) == str(report["summary"]["parts_ok"]) and last["parts_failed"] == "0"
    assert last["parts_skipped"] == str(len(parts) - ok)
    assert float(last["peak_memory_ratio"]) == round(throughput["peak_memory_ratio"], 3)
