"""The window's longest stall while a worker thread makes garbage fast, with the studio's
UI-thread garbage collection (``studio.garbage``) against Python's automatic collection, measured
in the same run.

    python bench/gc_pause.py [--seconds 8] [--rows 2000000]

A worker thread builds dataset-like rows (a dict of strings and a list each, kept) and reference
cycles (dropped), as reading a big dataset or loading a model does, while the UI thread's event
loop runs a 5 ms timer; the longest gap between its ticks is the longest stall a user would see.
Each mode runs in a child process of its own (``QT_QPA_PLATFORM=offscreen``), so one mode's heap
does not weigh on the other. The worker's row rate says what the policy costs the worker. The last
line holds the headline figures as ``name=value`` pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import gc, json, sys, threading, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

mode, seconds, rows = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
app = QApplication([])
if mode == "ui-thread":
    from studio.garbage import collect_on_ui_thread
    collect_on_ui_thread(app)

class Cycle:
    def __init__(self):
        self.me = self

kept, made = [], [0]
def work():
    started = time.perf_counter()
    for i in range(rows):
        kept.append({"instruction": f"row {i}", "output": str(i) * 3, "tokens": [i, i + 1, i + 2]})
        Cycle()
        made[0] = i + 1
        if time.perf_counter() - started > seconds:
            break
    made.append(time.perf_counter() - started)

gaps, last = [], [time.perf_counter()]
def tick():
    now = time.perf_counter()
    gaps.append(now - last[0])
    last[0] = now

timer = QTimer()
timer.setInterval(5)
timer.timeout.connect(tick)
timer.start()
worker = threading.Thread(target=work)
def finish():
    if worker.is_alive():
        return
    gaps.sort()
    print(json.dumps({"worst_ms": gaps[-1] * 1000, "p99_ms": gaps[int(len(gaps) * 0.99)] * 1000,
                      "rows_per_s": made[0] / made[1], "rows": made[0]}))
    app.quit()
check = QTimer()
check.timeout.connect(finish)
check.start(50)
worker.start()
app.exec()
"""


def run(mode: str, seconds: float, rows: int) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, str(seconds), str(rows)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=seconds * 10 + 60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the worker makes rows, at most")
    parser.add_argument("--rows", type=int, default=2_000_000, help="how many rows the worker makes, at most")
    options = parser.parse_args()
    results = {mode: run(mode, options.seconds, options.rows) for mode in ("automatic", "ui-thread")}
    for mode, figures in results.items():
        print(f"{mode:>10}: worst stall {figures['worst_ms']:.1f} ms, 99th percentile {figures['p99_ms']:.1f} ms, "
              f"{figures['rows_per_s']:,.0f} rows/s ({figures['rows']:,} rows)")
    auto, ours = results["automatic"], results["ui-thread"]
    print(f"worst_stall_ms={ours['worst_ms']:.1f} baseline_worst_stall_ms={auto['worst_ms']:.1f} "
          f"stall_ratio={ours['worst_ms'] / auto['worst_ms']:.2f} "
          f"worker_speed_ratio={ours['rows_per_s'] / auto['rows_per_s']:.2f}")


if __name__ == "__main__":
    main()
