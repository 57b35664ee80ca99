"""What a candidate cost: to train (wall time, tokens/s, peak memory measured, trainable parameters,
read from the run folder that made it) and to deploy (its weights' size on disk, and chat tokens/s
with the adapter and merged when the evaluation measured them).

Everything here is read from files that may be gone (a run folder deleted to save space) or edited:
what cannot be read is None, shown as unknown, never an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.adapters.library import read_adapter_meta
from engine.core.atomic import read_json_object
from engine.core.fields import number_field, text_field
from engine.errors import StudioError
from engine.jobs.history import read_record
from engine.paths import runs_dir
from engine.run.events import RunStarted, StepMetrics, read_events
from engine.run.rundir import RunDir

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


@dataclass(frozen=True)
class TrainingCost:
    wall_s: Optional[float]  # time spent training, over all the run's sessions
    tokens_per_s: Optional[float]  # mean of the steps' throughput
    peak_memory_bytes: Optional[int]  # the most memory a step measured (StepMetrics.memory_allocated)
    trainable_params: Optional[int]
    method: Optional[str]
    run_dir: Optional[str]


@dataclass(frozen=True)
class DeploymentCost:
    size_bytes: Optional[int]  # the weights' files on disk
    adapter_tokens_per_s: Optional[float]  # chat speed with the adapter swapped in over the base
    merged_tokens_per_s: Optional[float]  # chat speed with it merged into the base


@dataclass(frozen=True)
class CandidateCost:
    training: TrainingCost
    deployment: DeploymentCost


NO_TRAINING = TrainingCost(None, None, None, None, None, None)


def candidate_costs(candidate: dict[str, Any]) -> CandidateCost:
    """The costs of one candidate of a results document (its ``path``, and its ``speed`` when the
    evaluation measured chat speed); the base, which has no folder, has none."""
    path = candidate.get("path")
    folder = Path(path) if isinstance(path, str) and path else None
    speed = candidate.get("speed") if isinstance(candidate.get("speed"), dict) else {}
    deployment = DeploymentCost(weights_size(folder), number_field(speed, "adapter_tokens_per_s"),
                                number_field(speed, "merged_tokens_per_s"))
    return CandidateCost(training_cost(folder) if folder is not None else NO_TRAINING, deployment)


def weights_size(folder: Optional[Path]) -> Optional[int]:
    """The bytes of the safetensors files in ``folder``: an adapter's weights, or a full model's shards."""
    if folder is None:
        return None
    try:
        files = [f for f in folder.glob("*.safetensors") if f.is_file()]
        return sum(f.stat().st_size for f in files) if files else None
    except OSError:
        return None


def run_folder(folder: Path, meta: dict[str, Any]) -> Optional[Path]:
    """The run that made ``folder``: ``run_dir`` in its studio.json, or the run of that name in this
    home's runs folder (a home moved whole keeps its runs' names); a run's checkpoint is in its run."""
    recorded = text_field(meta, "run_dir")
    tries = [Path(recorded), runs_dir() / Path(recorded).name] if recorded else []
    if folder.parent.name == "checkpoints":
        tries.append(folder.parent.parent)
    return next((run for run in tries if RunDir(run).config.is_file()), None)


def training_cost(folder: Path) -> TrainingCost:
    """What training ``folder`` (an adapter, a checkpoint or a fine-tuned model) cost, as far as its
    studio.json and its run's events say. A checkpoint's costs run up to its own step."""
    try:
        meta = read_adapter_meta(folder)
        run = run_folder(folder, meta)
        events = read_events(RunDir(run).events) if run is not None else []
    except (OSError, StudioError):
        return NO_TRAINING
    checkpoint = _CHECKPOINT.fullmatch(folder.name) if run is not None and folder.parent.name == "checkpoints" else None
    last_step = int(checkpoint[1]) if checkpoint else None
    sessions: list[float] = []  # each session's training time, as its last step measured it
    throughput: list[float] = []
    peak: Optional[int] = None
    trainable: Optional[int] = None
    for event in events:
        if isinstance(event, RunStarted):
            trainable = event.trainable_params
            sessions.append(0.0)
        elif isinstance(event, StepMetrics) and (last_step is None or event.step <= last_step):
            if not sessions:
                sessions.append(0.0)
            sessions[-1] = max(sessions[-1], event.elapsed_s)
            if event.tokens_per_second is not None:
                throughput.append(event.tokens_per_second)
            if event.memory_allocated is not None:
                peak = max(peak or 0, event.memory_allocated)
    if last_step is not None:  # a checkpoint: the steps' own clock, up to its step
        wall = sum(sessions) if sessions else None
    else:  # the run's time as the runs history counts it (every session, resumes too), else the adapter's record
        record = read_record(run) if run is not None else None
        wall = record.duration_s if record is not None and record.duration_s is not None \
            else number_field(meta, "duration_s")
    return TrainingCost(
        wall_s=wall,
        tokens_per_s=sum(throughput) / len(throughput) if throughput else None,
        peak_memory_bytes=peak,
        trainable_params=trainable,
        method=text_field(meta, "method") or (text_field(read_json_object(RunDir(run).config) or {}, "method")
                                              if run is not None else None),
        run_dir=str(run) if run is not None else None,
    )
