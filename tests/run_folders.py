"""Run folders as a training run leaves them, written with the real event writer."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from engine.run.rundir import RunDir
from engine.run.events import EvalMetrics, EventWriter, RunFinished, RunStarted, StepMetrics
from engine.paths import runs_dir

T0 = 1_750_000_000.0


def started(t: float, total: int = 10, resumed_from: int = 0) -> RunStarted:
    return RunStarted(time=t, run_dir="", model="tiny", method="lora", device="cpu", total_steps=total,
                      trainable_params=10, total_params=100, train_examples=8, resumed_from_step=resumed_from)


def step(t: float, number: int, loss: float, lr: float = 1e-3) -> StepMetrics:
    return StepMetrics(time=t, step=number, total_steps=10, epoch=number / 10, loss=loss, learning_rate=lr)


def write_run(name: str, events: list, *, config: dict | None = None) -> Path:
    folder = runs_dir() / name
    folder.mkdir()
    RunDir(folder).config.write_text(json.dumps(config or {"model": "tiny", "dataset": "/d/pirate.jsonl"}),
                                        encoding="utf-8")
    writer = EventWriter(RunDir(folder).events)
    for event in events:
        writer.emit(event)
    writer.close()
    return folder


def completed_run(name: str = "20260101-100000-pirate-lora", steps: int = 5, *,
                  config: dict | None = None) -> Path:
    """A run whose loss falls by 0.5 a step from 2.5, with one eval at the end; 30 s long."""
    events = [started(T0, total=steps)]
    events += [step(T0 + i, i, 3.0 - 0.5 * i, lr=1e-3 * i) for i in range(1, steps + 1)]
    events += [EvalMetrics(time=T0 + steps, step=steps, eval_loss=1.0),
               RunFinished(time=T0 + 30, status="completed", step=steps, final_loss=3.0 - 0.5 * steps)]
    return write_run(name, events, config=config)


@contextmanager
def training_process(run_dir: Path) -> Iterator[subprocess.Popen]:
    """A live process that the run's pid file points at and that names the run the way a
    training child does (``... engine.train RUN_DIR``): the run counts as running meanwhile."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "engine.train",
                                str(Path(run_dir).resolve())])
    (Path(run_dir) / "pid").write_text(str(process.pid))
    try:
        yield process
    finally:
        process.kill()
        process.wait()
