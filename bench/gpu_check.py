"""One command for a GPU: everything this project has never run on CUDA, in one pass.

On one 80 GB GPU it runs, in under 8 minutes (``--budget``):

- ``lora-studio doctor`` (its function, as the CLI calls it);
- LoRA, DoRA, QLoRA (NF4, double quantisation, paged 8-bit AdamW), full fine-tuning in pure
  bf16 and prompt tuning, a few steps each through the engine's own recipe (loading,
  method, Trainer, saving into a scratch library), on the starter and on a random model
  shaped like the catalog's Llama-3.2-1B (its real config.json; weights drawn here, in bf16);
- a memory calibration row for each (``bench/memory_calibration.py``'s ``measure_row``: the
  estimate against ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved`` of the same
  plan trained in a fresh process);
- the throughput and peak-memory ratios against a plain Trainer + peft script
  (``bench/train_throughput.py``), on its two mini models;
- chat tokens per second against plain ``generate`` (``bench/chat_speed.py``), on the starter.

It writes ``<out>/gpu-<date>.json`` (``gpu-check-cpu-<date>.json`` on a CPU): the host and
its library versions, every part with its figures, every skip with its reason, every failure
with its error line, and the calibration rows in ``memory_calibration``'s format, which
``tests/engine/memory/test_memory.py`` re-checks once the file is committed. The file is
rewritten after every part, so a run cut short keeps what it measured.

Each part runs under its own time limit, inside the run's budget, and a part that fails or
runs out of time is recorded and the next one starts; parts the budget left out can be run
again on their own with ``--only`` (``--only llama-1b``, ``--only throughput``). Without CUDA
the CUDA parts (the 1B model in bf16) are skipped, saying so, and the rest runs at a size two
CPU cores manage; ``--quick`` shrinks that to the tests' tiny model and a step or two, which
the suite's smoke test runs. What a machine lacks is skipped, saying so, not failed: the
starter (a GGUF package the set-up installs), bitsandbytes (QLoRA), pure-bf16 full
fine-tuning in an engine without it. The throughput compares on Code Alpaca from
``../shared`` when it is there; ``--data`` names a copy elsewhere.

    python bench/gpu_check.py [--quick] [--out DIR] [--budget SECONDS] [--only TEXT] [--data FILE] [--home DIR]

Last line: ``parts_ok=… parts_skipped=… parts_failed=… max_estimate_error=… lowest_estimate_error=…
ratio_padded=… ratio_padding_free=… peak_memory_ratio=… chat_tps_ratio=… seconds=…`` (estimate
errors on the allocator's peak, relative to the measurement, below zero when the estimate ran
low; ``none`` where nothing was measured). Exits 1 when a part failed.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

METHODS = ("lora", "dora", "qlora", "full", "prompt")
CATALOG_MODEL = "Llama-3.2-1B"  # the ~1B model whose shape the random one takes
# A part is not started with less than this left of the run's budget: it could not finish.
MIN_PART_S = 20
# Each part's own limit (seconds), within what is left of the run's budget.
LIMITS = {"doctor": 60, "model": 180, "train": 120, "memory": 150, "throughput": 240, "chat": 120}


# how big each part is, on CUDA and on a CPU ------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    models: tuple[str, ...]  # the models trained here, in order
    skipped_models: dict[str, str]  # the models not trained here, and why
    train: dict[str, Any]  # the recipe runs' RunConfig settings
    rows: dict[str, dict[str, Any]]  # plan settings of each model's calibration rows (method added per row)
    row_methods: tuple[str, ...]  # the methods with a calibration row
    throughput: dict[str, Any]
    chat: dict[str, Any]
    budget: float


def scale_for(cuda: bool, quick: bool) -> Scale:
    if cuda:
        return Scale(
            models=("starter", "llama-1b"), skipped_models={},
            train=dict(max_steps=4, batch_size=4, max_length=512),
            rows={"starter": dict(batch=8, seq=512), "llama-1b": dict(batch=4, seq=1024)},
            row_methods=METHODS,
            throughput=dict(models=("49k", "128k"), steps=12, rounds=2, memory_steps=2),
            chat=dict(model="starter", tokens=64, rounds=3, ttft_rounds=5),
            budget=460,  # 7.7 minutes: the parts' own limits stop anything that hangs past it
        )
    cuda_only = "needs CUDA: a 1B model in bf16 is past what a CPU trains in a check"
    if quick:
        return Scale(
            models=("tiny",), skipped_models={"starter": "--quick trains the tests' tiny model only",
                                               "llama-1b": cuda_only},
            train=dict(max_steps=1, batch_size=2, max_length=64),
            rows={},  # each row is a fresh process, some 30 s on two cores: more than the whole quick run
            row_methods=(),
            throughput=dict(models=("tiny",), steps=1, rounds=1, memory_steps=1, dataset="sample",
                            run_settings=dict(batch_size=2)),
            chat=dict(model="tiny", tokens=8, rounds=1, ttft_rounds=1),
            budget=150,
        )
    return Scale(
        models=("tiny", "starter"), skipped_models={"llama-1b": cuda_only},
        train=dict(max_steps=2, batch_size=1, max_length=64),  # the starter: some 20 tokens a second here
        rows={"tiny": dict(batch=4, seq=256), "starter": dict(batch=1, seq=128)},
        row_methods=METHODS,
        throughput=dict(models=("49k",), steps=3, rounds=1, memory_steps=1),
        chat=dict(model="starter", tokens=32, rounds=2, ttft_rounds=3),
        budget=1800,
    )


def has_pure_bf16() -> bool:
    """Whether this engine has pure-bf16 full fine-tuning (RunConfig.pure_bf16)."""
    from engine.run.config import RunConfig

    return "pure_bf16" in {item.name for item in fields(RunConfig)}


def method_settings(method: str, cuda: bool) -> dict[str, Any]:
    """A recipe run's settings for ``method``. On CUDA full fine-tuning trains in pure bf16, and
    QLoRA with paged 8-bit AdamW; a CPU computes in fp32 and has no paged memory, so there
    full fine-tuning keeps fp32 weights and QLoRA takes AdamW."""
    if method == "qlora":
        return dict(method="qlora", quant="nf4", double_quant=True,
                    optimizer="paged_adamw_8bit" if cuda else "adamw")
    if method == "full":
        return dict(method="full", lr=1e-5, **(dict(precision="bf16", pure_bf16="on") if cuda else {}))
    if method == "prompt":
        return dict(method="prompt", num_virtual_tokens=20, lr=1e-3)
    return dict(method=method)


def row_settings(method: str, base: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """A calibration row's plan settings: the recipe run's choices, at the row's size."""
    plan: dict[str, Any] = dict(method=method, precision="bf16" if cuda else "fp32", **base)
    if method == "qlora":
        plan.update(quant="nf4", double_quant=True, optimizer="paged_adamw_8bit" if cuda else "adamw")
        if cuda:
            plan["grad_checkpointing"] = True  # QLoRA's usual company, and the per-token term's test
    if method == "full" and cuda:
        plan["pure_bf16"] = True
    return plan


def method_skip(method: str, cuda: bool) -> Optional[str]:
    """Why ``method`` cannot be checked with this engine and these libraries, or None."""
    import importlib.util

    if method == "full" and cuda and not has_pure_bf16():
        return "this engine has no pure-bf16 full fine-tuning yet (RunConfig.pure_bf16, branch h21-bf16)"
    if method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed here (the 4-bit layers and paged optimizers are its)"
    return None


def unavailable_models(scale: Scale) -> dict[str, str]:
    """The models this scale skips, and the ones that cannot be had here: the starter comes
    with the project's set-up (a GGUF package), which a bare GPU machine may lack."""
    from engine.models.store import starter_gguf

    skipped = dict(scale.skipped_models)
    if "starter" in scale.models and starter_gguf() is None:
        skipped["starter"] = "the starter model is not installed here (make setup installs it)"
    return skipped


# recording parts ---------------------------------------------------------------------------------
class PartTimeout(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in the main thread once ``seconds`` have passed (a training step, a
    reply, a child process's wait: wherever Python next runs), and again every few seconds
    after, in case library code swallows the first."""
    def expire(signum: int, frame: Any) -> None:
        raise PartTimeout(f"over its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 5)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Check:
    """The run's record: parts in the order they ran, calibration rows, and the results file."""

    path: Path
    report: dict[str, Any]
    deadline: float
    only: Optional[str] = None
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.parts[name] = {"status": "skipped", "reason": reason}
        print(f"{name}: skipped ({reason})", flush=True)
        self.save()

    def wanted(self, name: str) -> bool:
        return not self.only or self.only in name

    def run(self, name: str, kind: str, action: Callable[[float], dict[str, Any]],
            needed: bool = False) -> Optional[dict[str, Any]]:
        """Run one part within its limit (``needed``: another part asked for needs it, whatever
        ``--only`` says); its figures, or None when it was skipped or failed."""
        if not (needed or self.wanted(name)):
            self.skip(name, f"not asked for (--only {self.only})")
            return None
        left = self.deadline - time.monotonic()
        if left < MIN_PART_S:
            self.skip(name, f"the run's time budget was spent ({left:.0f} s left)")
            return None
        limit = min(LIMITS[kind], left)
        print(f"{name}: running (limit {limit:.0f} s)", flush=True)
        started = time.monotonic()
        figures = None
        try:
            with time_limit(limit):
                figures = action(limit)
            self.parts[name] = {"status": "ok", "seconds": round(time.monotonic() - started, 1), "figures": figures}
            print(f"{name}: ok in {time.monotonic() - started:.1f} s {json.dumps(figures)[:400]}", flush=True)
        except Exception as exc:  # recorded; the next part starts whatever this one did
            self.parts[name] = {"status": "failed", "seconds": round(time.monotonic() - started, 1),
                                "error": error_line(exc), "detail": error_detail(exc)}
            print(f"{name}: FAILED {error_line(exc)}", flush=True)
            traceback.print_exc()
        finally:
            release_memory()
            self.save()
        return figures

    def status(self, name: str) -> str:
        return self.parts.get(name, {}).get("status", "missing")

    def save(self) -> None:
        from engine.core.atomic import write_json
        from memory_calibration import TOLERANCE

        body = {**self.report, "parts": self.parts, "summary": summary(self)}
        if self.rows:  # in memory_calibration's format: tests/engine/memory/test_memory.py re-checks them
            body.update(rows=self.rows, tolerance={metric: TOLERANCE[metric] for metric in self.rows[0]["measured"]})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, body)


def error_line(exc: BaseException) -> str:
    """The line that says what went wrong; for a message of many lines (a child process's
    output) its first and its last, where the child's own error is."""
    import subprocess

    from engine.errors import first_line

    if isinstance(exc, subprocess.TimeoutExpired):  # its message is the whole command line
        return f"TimeoutExpired: the child process ran past its {exc.timeout:.0f} s limit"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1:
        return f"{type(exc).__name__}: {lines[0][:200]} ... {lines[-1][:300]}"
    return f"{type(exc).__name__}: {first_line(exc, 400)}"


def error_detail(exc: BaseException) -> list[str]:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return [line for line in text.splitlines() if line.strip()][-20:]


def release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summary(check: Check) -> dict[str, Any]:
    statuses = [part["status"] for part in check.parts.values()]
    errors = [error for row in check.rows for metric, error in row["errors"].items()
              if metric in ("cuda_max_allocated", "cpu_allocated")]
    throughput = check.parts.get("throughput", {}).get("figures") or {}
    chat = check.parts.get("chat", {}).get("figures") or {}
    return {"parts_ok": statuses.count("ok"), "parts_skipped": statuses.count("skipped"),
            "parts_failed": statuses.count("failed"),
            "max_estimate_error": max((abs(error) for error in errors), default=None),
            "lowest_estimate_error": min(errors, default=None),
            "ratio_padded": throughput.get("ratio_padded"), "ratio_padding_free": throughput.get("ratio_padding_free"),
            "peak_memory_ratio": throughput.get("peak_memory_ratio"), "chat_tps_ratio": chat.get("tps_ratio")}


# the parts ---------------------------------------------------------------------------------------
def doctor(cuda: bool) -> dict[str, Any]:
    """``lora-studio doctor --json``, as the CLI calls it; on CUDA it must see the GPU too."""
    from engine.cli.doctor import cmd_doctor

    printed = io.StringIO()
    with redirect_stdout(printed):
        code = cmd_doctor(argparse.Namespace(json=True))
    if code != 0:
        raise RuntimeError(f"doctor exited {code}")
    report = json.loads(printed.getvalue())
    gpus = [device for device in report["devices"] if device["kind"] == "cuda"]
    if cuda and not gpus:
        raise RuntimeError("torch sees a CUDA GPU but doctor lists none")
    return {"devices": [f"{d['torch_device']} {d['name']}" for d in report["devices"]], "gpus": len(gpus),
            "gpu_bf16": all(d["bf16"] for d in gpus) if gpus else None,
            "gpu_total_bytes": gpus[0]["total_bytes"] if gpus else None,
            "starter_ready": bool(report["starter_model"] and report["starter_model"].get("ready")),
            "window_can_open": report["window"]["can_open"]}


def prepare_model(name: str, scratch: Path) -> dict[str, Any]:
    """The folder of a model the parts train: the starter, the tiny test model, or the 1B one."""
    if name == "starter":
        from engine.models.store import resolve_model

        folder = resolve_model("starter")
    elif name == "tiny":
        from tiny_model import build_tiny_model

        folder = build_tiny_model(scratch / "tiny")
    else:
        folder = build_catalog_model(scratch / name, CATALOG_MODEL)
    config = json.loads((folder / "config.json").read_text())
    weights = sum(file.stat().st_size for file in folder.glob("*.safetensors"))
    return {"path": str(folder), "vocab_size": config["vocab_size"], "layers": config["num_hidden_layers"],
            "hidden_size": config["hidden_size"], "weights_bytes": weights}


def build_catalog_model(folder: Path, catalog_name: str) -> Path:
    """A model with the catalog entry's exact shape and random bf16 weights, made on the GPU
    (no download), with the starter's tokenizer: its ids fit any larger vocabulary."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from engine.models.spec import CATALOG_DIR
    from train_throughput import tokenizer_folder

    settings = json.loads((CATALOG_DIR / f"{catalog_name}.json").read_text())
    settings = {key: value for key, value in settings.items() if not key.startswith("_")}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(folder.parent))
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    config.bos_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def train(model: Path, settings: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A few steps of the run ``settings`` describe through the engine's recipe, as the studio
    starts one (its preflight, loading, method, Trainer and saving), on the pirate sample."""
    import torch

    from engine.core.atomic import write_json
    from engine.paths import SAMPLE_DATASETS
    from engine.run.config import RunConfig
    from engine.run.events import RunStarted, StepMetrics, read_events
    from engine.run.rundir import RunDir
    from engine.train import recipe

    config = RunConfig(model=str(model), dataset=str(SAMPLE_DATASETS / "pirate_persona.jsonl"), rank=16, alpha=32,
                       log_every=1, seed=7, **settings)
    folder.mkdir(parents=True)
    write_json(RunDir(folder).config, config.to_dict())
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    finished = recipe.run_and_report(recipe.Run(folder))
    if finished.status != "completed":
        raise RuntimeError(f"the run {finished.status}: {finished.error}")
    events = read_events(RunDir(folder).events)
    started = next(event for event in events if isinstance(event, RunStarted))
    steps = [event for event in events if isinstance(event, StepMetrics)]
    speeds = [event.tokens_per_second for event in steps if event.tokens_per_second]
    figures = {"steps": finished.step, "first_loss": steps[0].loss, "final_loss": finished.final_loss,
               "tokens_per_second": statistics.median(speeds) if speeds else None, "device": started.device,
               "trainable_params": started.trainable_params, "total_params": started.total_params,
               "predicted_peak_bytes": started.predicted_peak_bytes,
               "saved": bool(finished.adapter or finished.model),
               **{key: value for key, value in settings.items() if key in ("optimizer", "pure_bf16", "precision")}}
    if cuda:
        figures.update(peak_allocated_bytes=torch.cuda.max_memory_allocated() - before,
                       peak_reserved_bytes=torch.cuda.max_memory_reserved())
    return figures


def memory_row(check: Check, name: str, folder: Path, plan: dict[str, Any], device: str,
               limit: float) -> dict[str, Any]:
    from memory_calibration import describe_row, measure_row

    row = measure_row(name, folder, plan, device, timeout=max(1.0, limit - 5))
    check.rows.append(row)
    print(describe_row(row), flush=True)
    return {"estimated_bytes": row["estimated_bytes"], "measured": row["measured"], "errors": row["errors"],
            **{key: row[key] for key in ("cuda_max_reserved_bytes", "estimated_reserved_bytes", "reserved_error")
               if key in row}}


def throughput(settings: dict[str, Any], tiny: Optional[Path], data: Optional[Path], scratch: Path) -> dict[str, Any]:
    """``bench/train_throughput.py``'s comparison, on its mini models (the tiny one with --quick)."""
    import train_throughput as bench

    models: dict[str, Path] = {}
    for name in settings["models"]:
        if name == "tiny":
            if tiny is None:
                raise RuntimeError("the tiny model was not built")
            models[name] = tiny
        else:
            models[name] = bench.mini_model(scratch / f"mini-{name}", bench.LLAMA3_VOCAB if name == "128k" else None)
    if settings.get("dataset") == "sample":  # short rows: the quick run tokenises them six times
        from engine.paths import SAMPLE_DATASETS

        sets = {"pirate sample": SAMPLE_DATASETS / "pirate_persona.jsonl"}
    else:
        sets = bench.datasets(False, data)
    run_settings = {**bench.SETTINGS, **settings.get("run_settings", {})}
    per_model = {}
    for name, model in models.items():
        results = bench.compare(model, sets, settings["steps"], settings["rounds"], settings["memory_steps"],
                                scratch / f"runs-{name}", run_settings)
        per_model[name] = bench.headline(results)
    print(bench.last_line(per_model, suffixed=len(per_model) > 1), flush=True)
    figures: dict[str, Any] = {"dataset": next(iter(sets)), "steps": settings["steps"], "rounds": settings["rounds"],
                               "batch_size": run_settings["batch_size"], **bench.worst(per_model)}
    for name, result in per_model.items():
        figures[name] = {key: result[key] for key in ("ratio_padded", "ratio_padding_free", "peak_memory_ratio",
                                                      "padding_free_memory_ratio", "max_loss_diff")}
        figures[name]["tokens_per_second"] = result["tokens_per_second"]
        figures[name]["peak_bytes"] = result["peak_bytes"]
    return figures


def chat(model: str, settings: dict[str, Any]) -> dict[str, Any]:
    """``bench/chat_speed.py``'s two paths on one loaded model: the Chat page's and plain generate."""
    from chat_speed import chat_generate, median, on_worker, plain_generate

    from engine.chat.session import ChatSession

    session = ChatSession(model)
    session.load()
    try:
        tokens = settings["tokens"]
        on_worker(plain_generate, session, tokens), on_worker(chat_generate, session, tokens)  # warm-up
        plain_runs, chat_runs = [], []
        for _ in range(settings["rounds"]):
            plain_runs.append(on_worker(plain_generate, session, tokens))
            chat_runs.append(on_worker(chat_generate, session, tokens))
        firsts: dict[str, list[dict[str, float]]] = {"plain": [], "chat": []}
        for _ in range(settings["ttft_rounds"]):
            firsts["plain"].append(on_worker(plain_generate, session, 1))
            firsts["chat"].append(on_worker(chat_generate, session, 1))
        plain_tps, chat_tps = median(plain_runs, "tps"), median(chat_runs, "tps")
        return {"device": session.device, "new_tokens": tokens, "chat_tokens_per_second": chat_tps,
                "plain_tokens_per_second": plain_tps, "tps_ratio": chat_tps / plain_tps if plain_tps else None,
                "chat_first_token_ms": median(firsts["chat"], "ttft") * 1000,
                "plain_first_token_ms": median(firsts["plain"], "ttft") * 1000}
    finally:
        session.close()


# the run -----------------------------------------------------------------------------------------
def check_all(check: Check, scale: Scale, cuda: bool, scratch: Path, data: Optional[Path]) -> None:
    check.run("doctor", "doctor", lambda limit: doctor(cuda))
    folders: dict[str, Path] = {}
    skipped = unavailable_models(scale)
    for model in ("tiny", "starter", "llama-1b"):
        if model in skipped:
            for name in [f"model {model}", *model_parts(model)]:
                check.skip(name, skipped[model])
        elif model in scale.models:
            folder = check_model(check, scale, model, cuda, scratch)
            if folder is not None:
                folders[model] = folder
        if model == scale.chat["model"]:  # before the larger model's parts, which may use up the budget
            if model in folders:
                check.run("chat", "chat", lambda limit: chat(str(folders[scale.chat["model"]]), scale.chat))
            else:
                check.skip("chat", skipped.get(model) or f"the {model} model was not prepared")
    check.run("throughput", "throughput",
              lambda limit: throughput(scale.throughput, folders.get("tiny"), data, scratch / "throughput"))


def model_parts(model: str) -> list[str]:
    return [f"{what} {model} {method}" for what in ("train", "memory") for method in METHODS]


def check_model(check: Check, scale: Scale, model: str, cuda: bool, scratch: Path) -> Optional[Path]:
    """Prepare ``model``, then train every method on it and measure a calibration row of each;
    its folder, or None when it could not be prepared."""
    users = model_parts(model) + ["chat"] * (model == scale.chat["model"])
    users += ["throughput"] * (model in scale.throughput["models"])
    prepared = check.run(f"model {model}", "model", lambda limit: prepare_model(model, scratch),
                         needed=any(check.wanted(user) for user in users))
    folder = Path(prepared["path"]) if prepared is not None else None

    def why_not(method: str) -> Optional[str]:
        if folder is None:
            return f"the model was not prepared ({check.status(f'model {model}')})"
        return method_skip(method, cuda)

    for method in METHODS:
        name, skip = f"train {model} {method}", why_not(method)
        settings = {**scale.train, **method_settings(method, cuda)}
        if skip:
            check.skip(name, skip)
        else:
            check.run(name, "train", lambda limit, s=settings, run=scratch / "runs" / f"{model}-{method}":
                      train(folder, s, run))
    for method in METHODS:
        name, skip = f"memory {model} {method}", why_not(method)
        if not skip and method not in scale.row_methods:
            skip = ("--quick measures no calibration row: each trains in a fresh process, some 30 s on two CPU "
                    "cores (bench/memory_calibration.py measures the CPU's)")
        if skip:
            check.skip(name, skip)
        else:
            plan = row_settings(method, scale.rows[model], cuda)
            device = "cuda" if cuda else "cpu"
            check.run(name, "memory", lambda limit, p=plan: memory_row(check, model, folder, p, device, limit))
    return folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the tests' tiny model, a step or two (the CPU smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where the results file goes")
    parser.add_argument("--budget", type=float, help="seconds for the whole run (460 on CUDA)")
    parser.add_argument("--only", help="run only the parts whose name holds this text (e.g. 'llama-1b')")
    parser.add_argument("--data", type=Path, help="the throughput dataset (default: ../shared Code Alpaca)")
    parser.add_argument("--home", type=Path, help="a LORA_STUDIO_HOME to reuse (default: a scratch one)")
    args = parser.parse_args(argv)
    if args.data is not None and not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        os.environ["LORA_STUDIO_HOME"] = str(args.home or Path(scratch) / "home")
        import torch

        from memory_calibration import host_description

        cuda = torch.cuda.is_available()
        scale = scale_for(cuda, args.quick)
        budget = args.budget or scale.budget
        today = date.today().isoformat()
        path = args.out / (f"gpu-{today}.json" if cuda else f"gpu-check-cpu-{today}.json")
        report = {"kind": "gpu_check", "date": today, "device": "cuda" if cuda else "cpu", "quick": args.quick,
                  "budget_s": budget, "host": host_description()}
        check = Check(path, report, deadline=began + budget, only=args.only)
        check_all(check, scale, cuda, Path(scratch), args.data)
        check.report["seconds"] = round(time.monotonic() - began, 1)
        check.save()
    print(f"wrote {path}")
    for name, part in check.parts.items():
        if part["status"] == "failed" or "budget" in part.get("reason", ""):
            print(f"{name}: {part.get('error') or part['reason']}")
    figures = summary(check)
    print(" ".join(f"{key}={_show(value)}" for key, value in figures.items())
          + f" seconds={time.monotonic() - began:.0f}")
    return 1 if figures["parts_failed"] else 0


def _show(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
