"""Calibrates the memory estimate against real training steps.

Each grid point (method x batch x length x gradient checkpointing x optimizer, on the
tiny test model and, when installed, the starter) trains two steps the way
``engine/train/recipe.py`` does (its model loading and method attachment, its Trainer and
loss, its optimizer and autocast choice for pure bf16, the same collator), in a fresh process,
and records the measured peak beside
``engine.memory.estimate.estimate_memory`` in ``bench/results/<host>-<date>.json`` with the
hardware and library versions. Tests re-check every recorded row on any machine.

What is measured:

- on CUDA: ``torch.cuda.max_memory_allocated`` (metric ``cuda_max_allocated``) against
  the estimate's ``peak_allocated_bytes``, and ``max_memory_reserved`` beside it;
- on a CPU-only machine: ``cpu_allocated``, the peak of live tensor bytes from the torch
  profiler's allocator events: the CPU counterpart of ``max_memory_allocated``, held to the
  same rule. Beside it each row records the growth of the process's resident memory, from
  just before the model loads to the high-water mark during training (``cpu_rss_growth``).
  glibc is told to return freed blocks to the system at once (``MALLOC_MMAP_THRESHOLD_``)
  and a first minute run warms up what libraries set up once, so resident memory follows
  live tensors; it still holds some 4 MiB of host bookkeeping (the Trainer, the dataset,
  Python objects) that no tensor accounts for and a GPU would not hold, hence its looser
  tolerance both ways.

The rule for the allocator metrics: no row estimated more than ``NEVER_LOW`` below what was
measured (an estimate that runs low is the one that lets auto-fit pick a plan that runs out
of memory), none more than ``TOLERANCE`` above, and the median within ``NEVER_LOW``.

    .venv/bin/python bench/memory_calibration.py [--quick] [--no-starter] [--out bench/results]
    .venv/bin/python bench/memory_calibration.py --preference --no-starter   # DPO, KTO, ORPO, SimPO rows

Preference points are runs set up and built by the engine itself (``engine.train.recipe.setup`` and
``build_trainer``: its model loading, the adapter it starts from, the reference it keeps, its TRL
trainer), fed pre-tokenised pairs of the point's length, into ``bench/results/<host>-preference-<date>.json``.

Last line: ``median_error=... max_error=... max_low=... rows=...`` for the allocator metric
(relative to measured; ``max_low`` the largest underestimate, 0 if none), on the CPU
``rss_median_error`` and ``rss_max_error`` beside them, and ``estimate_ms``, the time of one estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Relative error allowed per metric; tests/test_memory.py applies the same numbers.
TOLERANCE = {"cuda_max_allocated": 0.10, "cpu_allocated": 0.10, "cpu_rss_growth": 0.15}
NEVER_LOW = 0.05  # the allocator metrics' bound below the measurement; tests/engine/memory applies it too
STEPS = 2  # step 1 creates the optimizer states; step 2 runs forward and backward beside them


# the grid -------------------------------------------------------------------------------------
def grid(cuda: bool, starter: bool, quick: bool) -> list[dict[str, Any]]:
    """Points as (model, plan settings). The tiny model's hidden size is 64, so its rows use long
    sequences to make activations, not interpreter state, the bulk of what is measured."""
    points = []
    tiny = [
        dict(method="lora", batch=8, seq=512), dict(method="lora", batch=4, seq=1024),
        dict(method="lora", batch=8, seq=512, grad_checkpointing=True),
        dict(method="lora", batch=8, seq=512, targets="q,v"),
        dict(method="lora", batch=1, seq=1024, lora_dropout=0.0),
        dict(method="dora", batch=4, seq=512),
        dict(method="full", batch=8, seq=512), dict(method="full", batch=4, seq=1024, grad_checkpointing=True),
        dict(method="full", batch=8, seq=512, optimizer="sgd"),
        dict(method="lora", batch=4, seq=512, attention="eager"),
        dict(method="qlora", batch=8, seq=512), dict(method="qlora", batch=4, seq=1024, quant="int8"),
        dict(method="prompt", batch=8, seq=512), dict(method="prefix", batch=8, seq=512),
        dict(method="ptuning", batch=8, seq=512),
        # Full fine-tuning in bf16 over fp32 masters, and in pure bf16: the same batch, about half the memory.
        dict(method="full", batch=8, seq=512, precision="bf16"),
        dict(method="full", batch=8, seq=512, precision="bf16", pure_bf16=True),
    ]
    # QLoRA's per-token terms at several batch x length points, in the 16-bit compute a GPU
    # runs (the CPU's bf16 autocast), beside LoRA at the same points.
    sixteen_bit = [
        dict(method="lora", batch=8, seq=512, grad_checkpointing=True),
        dict(method="qlora", batch=4, seq=512), dict(method="qlora", batch=8, seq=512),
        dict(method="qlora", batch=4, seq=512, grad_checkpointing=True),
        dict(method="qlora", batch=8, seq=512, grad_checkpointing=True),
        dict(method="qlora", batch=8, seq=1024, grad_checkpointing=True),
        dict(method="qlora", batch=4, seq=1024, quant="int8", grad_checkpointing=True),
    ]
    # Two CPU cores train the starter at some 20 tokens a second: its points stay short.
    starter_points = [
        dict(method="lora", batch=2, seq=128), dict(method="lora", batch=1, seq=256, grad_checkpointing=True),
        dict(method="full", batch=1, seq=128), dict(method="dora", batch=1, seq=128, targets="attention"),
    ]
    if cuda:  # two cores without AVX512-BF16 take some 13 minutes over this point
        starter_points.append(dict(method="full", batch=1, seq=128, precision="bf16", pure_bf16=True))
    if quick:
        tiny, starter_points, sixteen_bit = tiny[:3], starter_points[:1], sixteen_bit[:1]
    if cuda:  # bf16 autocast, and the 8-bit optimizers bitsandbytes provides there
        tiny += [dict(method="lora", batch=8, seq=512, optimizer="adamw_8bit"),
                 dict(method="full", batch=8, seq=512, optimizer="paged_adamw_8bit")]
    precision = "bf16" if cuda else "fp32"
    points += [{"model": "tiny", "plan": {"precision": precision, **p}} for p in tiny]
    if not cuda:  # on a GPU every point already computes in bf16
        points += [{"model": "tiny", "plan": {"precision": "bf16", **p}} for p in sixteen_bit]
    if starter:
        points += [{"model": "starter", "plan": {"precision": precision, **p}} for p in starter_points]
    return points


def preference_grid(cuda: bool) -> list[dict[str, Any]]:
    """Preference objectives on the tiny model, each run by its TRL trainer. The tiny vocabulary
    (some 400 tokens) leaves the fused head's fixed tile and the layers' activations to be
    measured; the same model widened to an 8192-token vocabulary (``tiny-wide``) makes the
    vocabulary-sized terms the bulk: ORPO's and SimPO's full logits, the head's CPU temporaries."""
    precision = "bf16" if cuda else "fp32"
    tiny = [
        dict(objective="dpo", method="lora", batch=4, seq=512),
        dict(objective="dpo", method="lora", batch=4, seq=512, grad_checkpointing=True),
        dict(objective="dpo", method="full", batch=4, seq=512),
        dict(objective="kto", method="lora", batch=8, seq=512),
        dict(objective="kto", method="full", batch=4, seq=512),
        dict(objective="orpo", method="lora", batch=4, seq=512),
        dict(objective="simpo", method="lora", batch=4, seq=512),
        # SFT -> DPO: the adapter the run starts from is also its reference, a frozen copy of it. At a
        # high rank and a short batch that copy is some 7% of the peak; the same run on a new adapter has none.
        dict(objective="dpo", method="lora", batch=1, seq=64, rank=256, from_adapter=True),
        dict(objective="dpo", method="lora", batch=1, seq=64, rank=256),
    ]
    wide = [dict(objective="dpo", method="lora", batch=2, seq=512), dict(objective="orpo", method="lora", batch=2, seq=512),
            dict(objective="simpo", method="lora", batch=2, seq=512)]
    points = [{"model": "tiny", "plan": {"precision": precision, **p}} for p in tiny]
    if not cuda:  # the 16-bit compute a GPU runs, in the CPU's bf16 autocast
        points.append({"model": "tiny", "plan": {"precision": "bf16", "objective": "dpo", "method": "lora",
                                                 "batch": 4, "seq": 512}})
    # QLoRA: TRL casts the adapters to bf16 and the engine back to fp32, over the 4-bit base (which
    # computes in fp32 off a GPU: engine.train.preflight).
    points.append({"model": "tiny", "plan": {"precision": precision, "objective": "dpo", "method": "qlora",
                                             "batch": 4, "seq": 512}})
    # Full fine-tuning in bf16 over fp32 masters: the reference copy is loaded as the policy is, in fp32.
    points.append({"model": "tiny", "plan": {"precision": "bf16", "objective": "dpo", "method": "full",
                                             "batch": 4, "seq": 512}})
    points += [{"model": "tiny-wide", "plan": {"precision": precision, **p}} for p in wide]
    return points


# one point, in its own process -------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_high_water_mark() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS


def _rows(vocab: int, batch: int, seq: int) -> list[dict[str, list[int]]]:
    """STEPS batches; each has one row of the full length and shorter ones, so the collator pads
    as it does on real data (the longest row sets the batch's length)."""
    import random

    rng = random.Random(0)
    rows = []
    for index in range(STEPS * batch):
        length = seq if index % batch == 0 else max(1, seq - 1 - rng.randrange(seq // 4))
        ids = [rng.randrange(4, vocab) for _ in range(length)]
        rows.append({"input_ids": ids, "attention_mask": [1] * length, "labels": list(ids)})
    return rows


def run_point(model_dir: str, plan_settings: dict[str, Any]) -> dict[str, Any]:
    """Train STEPS steps and measure; a first, minute run of the same kind warms up what the
    libraries set up once per process (thread pools, kernels, the autograd engine), so that
    resident memory grows by what the measured run itself holds."""
    import gc

    import torch

    from engine.memory.plan import Plan

    plan = Plan(**plan_settings)
    if plan.from_adapter:
        _save_start_adapter(model_dir, plan)
    _train(model_dir, Plan(**{**plan_settings, "batch": 2 if plan.objective == "kto" else 1, "seq": 16}), measure=False)
    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    baseline = _status_kib("VmRSS")
    seconds = _train(model_dir, plan, measure=True)
    result = {"rss_growth_bytes": _status_kib("VmHWM") - baseline, "seconds": round(seconds, 2)}
    if cuda:
        result["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    else:
        result["cpu_allocated_bytes"] = profiled_peak(
            lambda: _train(model_dir, plan, measure=False, own_weights=True))
    return result


def profiled_peak(action: Callable[[], Any]) -> int:
    """The peak of live tensor bytes while ``action`` runs, from the torch profiler's allocator
    events: on the CPU, the counterpart of torch.cuda.max_memory_allocated. Only tensors
    allocated inside ``action`` count (the profiler sees no earlier allocation)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        action()
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace.json"
        profiler.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    return max(event["args"]["Total Allocated"] for event in events if event.get("name") == "[memory]")


def _train(model_dir: str, plan: Any, measure: bool, own_weights: bool = False) -> float:
    """Train STEPS steps of ``plan`` as the recipe does; with ``measure`` the high-water mark
    is reset once the model is loaded, since loading maps the weights file: not training memory.

    Weights loaded from safetensors are views of the mapped file, which the profiler's
    allocator events never see; ``own_weights`` copies them into allocator memory first
    (the same bytes, now counted, as they are on a GPU)."""
    if plan.is_preference:
        return _train_preference(model_dir, plan, measure, own_weights)
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, TrainingArguments

    from engine.run.config import RunConfig
    from engine.train import loading, methods, pure_bf16
    from engine.train.trainer import OPTIMIZERS, StudioTrainer

    class InOrder(StudioTrainer):  # the engine's Trainer and loss; batches in dataset order, padded as built
        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SequentialSampler:
            return SequentialSampler(self.train_dataset)

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The engine's own loading and method: a 16-bit or 4-bit frozen base, fp32 adapters.
    config = RunConfig(model=model_dir, dataset="-", method=plan.method, rank=plan.rank, alpha=2 * plan.rank,
                       dropout=plan.lora_dropout, targets=plan.targets, quant=plan.quant, double_quant=plan.double_quant,
                       num_virtual_tokens=plan.num_virtual_tokens, prefix_projection=plan.prefix_projection,
                       optimizer=plan.optimizer, pure_bf16="on" if plan.pure_bf16 else "off")
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    model = loading.load_model(Path(model_dir), config, plan.precision, device)
    if own_weights:
        own_tensors(model)
    if plan.attention == "eager":
        model.set_attn_implementation("eager")
    model = methods.attach(model, config, tokenizer)
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=STEPS, per_device_train_batch_size=plan.batch,
            gradient_accumulation_steps=plan.grad_accum, learning_rate=1e-4, logging_steps=1, save_strategy="no",
            report_to="none", bf16=plan.precision == "bf16" and not plan.pure_bf16, fp16=plan.precision == "fp16",
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0,
            remove_unused_columns=False, optim=OPTIMIZERS[plan.optimizer], **{checkpointing: plan.grad_checkpointing},
            gradient_checkpointing_kwargs={"use_reentrant": False} if plan.grad_checkpointing else None,
        )
        trainer = InOrder(
            model=model, args=args, train_dataset=Dataset.from_list(_rows(model.config.vocab_size, plan.batch, plan.seq)),
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            processing_class=tokenizer,
            optimizer_cls_and_kwargs=pure_bf16.optimizer_cls_and_kwargs(config, plan.precision, args),
        )
        if measure:
            _reset_high_water_mark()
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def _preference_rows(vocab: int, plan: Any) -> list[dict[str, Any]]:
    """STEPS micro-batches of token ids in the layout each TRL trainer reads after its own
    tokenisation. Every prompt takes a quarter of the length; in each micro-batch the first
    example's prompt and answer fill ``plan.seq`` exactly and the others' answers are shorter,
    so the collator pads every row to ``plan.seq`` as the longest pair of real data makes it.
    KTO's KL batch pairs each prompt with the previous example's answer (TRL rotates them
    within the micro-batch), so its longest row is ``plan.seq`` too."""
    import random

    rng = random.Random(0)
    prompt_length = max(1, plan.seq // 4)
    longest = plan.seq - prompt_length
    rows = []
    for index in range(STEPS * plan.batch):
        first = index % plan.batch == 0
        prompt = [rng.randrange(4, vocab) for _ in range(prompt_length)]
        lengths = [longest if first else max(1, longest - 1 - rng.randrange(longest // 4 + 1)),
                   max(1, longest - 1 - rng.randrange(longest // 4 + 1))]
        chosen, rejected = ([rng.randrange(4, vocab) for _ in range(n)] for n in lengths)
        rows.append((prompt, chosen, rejected))
    if plan.objective == "dpo":
        return [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in rows]
    if plan.objective == "kto":
        examples = [{"prompt_ids": p, "completion_ids": c, "label": i % 2 == 0} for i, (p, c, _r) in enumerate(rows)]
        for start in range(0, len(examples), plan.batch):
            block = examples[start:start + plan.batch]
            answers = [example["completion_ids"] for example in block]
            for example, answer in zip(block, answers[-1:] + answers[:-1]):
                example["KL_completion_ids"] = answer
        return examples
    # ORPO and CPO/SimPO: their own tokenisation's columns, labels masking the prompt.
    return [{"prompt_input_ids": p, "prompt_attention_mask": [1] * len(p),
             **{f"{side}_{key}": value for side, answer in (("chosen", c), ("rejected", r)) for key, value in
                (("input_ids", p + answer), ("attention_mask", [1] * (len(p) + len(answer))),
                 ("labels", [-100] * len(p) + answer))}} for p, c, r in rows]


def _start_adapter() -> Path:
    """Where a from-adapter point's starting adapter is saved: in the point's own studio home."""
    return Path(os.environ["LORA_STUDIO_HOME"]) / "start-adapter"


def _preference_config(model_dir: str, plan: Any, dataset: Path) -> Any:
    """The run configuration of a preference point: the plan's settings, STEPS steps."""
    from engine.run.config import RunConfig

    return RunConfig(
        model=model_dir, dataset=str(dataset), objective=plan.objective, reference_free=plan.reference_free,
        method=plan.method, rank=plan.rank, alpha=2 * plan.rank, dropout=plan.lora_dropout, targets=plan.targets,
        quant=plan.quant, double_quant=plan.double_quant, batch_size=plan.batch, grad_accum=plan.grad_accum,
        max_length=plan.seq, max_steps=STEPS, lr=1e-4, log_every=1, optimizer=plan.optimizer,
        grad_checkpointing=plan.grad_checkpointing, precision=plan.precision,
        pure_bf16="on" if plan.pure_bf16 else "off", val_fraction=0.0,
        from_adapter=str(_start_adapter()) if plan.from_adapter else None)


def _save_start_adapter(model_dir: str, plan: Any) -> None:
    """An adapter of the plan's rank and layers on this base, as an SFT run leaves one: the
    adapter a from-adapter point goes on training (and measures against)."""
    import torch
    from transformers import AutoTokenizer

    from engine.train import loading, methods

    config = _preference_config(model_dir, plan, Path("-"))
    model = methods.attach(loading.load_model(Path(model_dir), config, plan.precision, "cpu"), config,
                           AutoTokenizer.from_pretrained(model_dir))
    with torch.no_grad():  # a trained adapter is no longer the identity
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.01)
    model.save_pretrained(str(_start_adapter()))


def _own_loaded_weights() -> None:
    """Every model the engine loads from here on owns its weights (``own_tensors``): the policy,
    and full fine-tuning's reference copy, which ``build_trainer`` loads itself."""
    from engine.train import loading

    if getattr(loading.load_model, "owns_weights", False):
        return
    load_model = loading.load_model

    def owning(*args: Any, **kwargs: Any) -> Any:
        model = load_model(*args, **kwargs)
        own_tensors(model)
        return model

    owning.owns_weights = True  # type: ignore[attr-defined]
    loading.load_model = owning


def _train_preference(model_dir: str, plan: Any, measure: bool, own_weights: bool) -> float:
    """Train STEPS steps of a preference point through the engine: a run folder with the point's
    configuration, set up (``recipe.setup``: model, method or starting adapter) and built
    (``recipe.build_trainer``: the reference it keeps, TRL's trainer for the objective) as a real
    run is. Its rows are then the point's pre-tokenised pairs (``_preference_rows``), read in
    order so every micro-batch pads to ``plan.seq``."""
    from datasets import Dataset

    from engine.core.atomic import write_json
    from engine.run.rundir import RunDir
    from engine.train import recipe

    if own_weights:
        _own_loaded_weights()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        dataset = work / "pairs.jsonl"  # what TRL tokenises while it is built; the point's rows replace it
        dataset.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"Yes, {i}.", "rejected": "No."})
                                   + "\n" for i in range(8)), encoding="utf-8")
        run_dir = work / "run"
        run_dir.mkdir()
        write_json(RunDir(run_dir).config, _preference_config(model_dir, plan, dataset).to_dict())
        run = recipe.Run(run_dir)
        ready = recipe.setup(run)
        trainer, _callback = recipe.build_trainer(run, ready, lambda total_steps: None)
        trainer.args.train_sampling_strategy = "sequential"
        trainer.train_dataset = Dataset.from_list(_preference_rows(len(ready.tokenizer), plan))
        if measure:
            _reset_high_water_mark()
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        run.writer.close()
        return seconds


def own_tensors(model: Any) -> None:
    """Copy the model's weights and buffers into allocator memory: loaded from safetensors they
    are views of the mapped file, which the profiler's allocator events never see (on a GPU
    they are allocator memory already)."""
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            # Quantising already made allocator copies of the linears (and bitsandbytes' 8-bit
            # weights keep references to their data); the embeddings, norms and head still map the file.
            if type(tensor).__name__ not in ("Params4bit", "Int8Params"):
                tensor.data = tensor.data.clone()


def measure_in_child(model_dir: Path, plan: dict[str, Any], timeout: float = 900) -> dict[str, Any]:
    # Freed blocks go straight back to the system, so resident memory tracks live tensors.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
           "MALLOC_ARENA_MAX": "2", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as home:
        env["LORA_STUDIO_HOME"] = home  # the engine's runs (preference points) get a library of their own
        done = subprocess.run([sys.executable, __file__, "--point",
                               json.dumps({"model_dir": str(model_dir), "plan": plan})],
                              capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"grid point {plan} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# the run -----------------------------------------------------------------------------------------
def host_description() -> dict[str, Any]:
    import torch

    from engine.hardware import best_device, versions

    device = best_device()
    return {"device": device.kind, "name": device.name, "total_bytes": device.total_bytes,
            "compute_capability": device.compute_capability, "driver": device.driver,
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "versions": versions()}


def host_kind(host: dict[str, Any]) -> str:
    if host["device"] == "cpu":
        return "cpu"
    return "".join(ch if ch.isalnum() else "-" for ch in host["name"].lower()).strip("-")


def model_folders(work: Path, want_starter: bool) -> dict[str, Path]:
    from tiny_model import build_tiny_model

    folders = {"tiny": build_tiny_model(work / "tiny"), "tiny-wide": build_tiny_model(work / "tiny-wide", vocab_size=8192)}
    if want_starter:
        from engine.models import store as models

        if models.starter_gguf() is not None:
            folders["starter"] = models.resolve_model(models.STARTER)
    return folders


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few points only")
    parser.add_argument("--no-starter", action="store_true", help="skip the starter model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--preference", action="store_true",
                        help="the preference objectives' points (DPO, KTO, ORPO, SimPO), recorded in their own file")
    parser.add_argument("--point", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.point:
        point = json.loads(args.point)
        print(json.dumps(run_point(point["model_dir"], point["plan"])))
        return 0

    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    headline = "cuda_max_allocated" if cuda else "cpu_allocated"
    host = host_description()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        folders = model_folders(Path(work), not args.no_starter)
        points = preference_grid(cuda) if args.preference else grid(cuda, "starter" in folders, args.quick)
        for point in points:
            rows.append(measure_row(point["model"], folders[point["model"]], point["plan"], device))
            print(describe_row(rows[-1]), flush=True)
    report = {"host": host, "device": device, "steps": STEPS, "date": date.today().isoformat(),
              "tolerance": {metric: TOLERANCE[metric] for metric in rows[0]["measured"]}, "never_low": NEVER_LOW,
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    kind = host_kind(host) + ("-preference" if args.preference else "")
    path = args.out / f"{kind}-{date.today().isoformat()}.json"
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    errors = [row["errors"][headline] for row in rows]
    summary = (f"median_error={statistics.median(map(abs, errors)):.3f} max_error={max(map(abs, errors)):.3f} "
               f"max_low={max(0.0, -min(errors)):.3f} rows={len(rows)}")
    if not cuda and not args.preference:
        rss = [abs(row["errors"]["cpu_rss_growth"]) for row in rows]
        summary += f" rss_median_error={statistics.median(rss):.3f} rss_max_error={max(rss):.3f}"
    print(summary + f" estimate_ms={estimate_milliseconds():.3f}")
    return 0


def measure_row(name: str, folder: Path, plan_settings: dict[str, Any], device: str,
                timeout: float = 900) -> dict[str, Any]:
    """One calibration row: the estimate for ``plan_settings`` on the model in ``folder`` beside
    what a fresh process measures while training it (``measure_in_child``). Errors are relative
    to the measurement: below zero, the estimate ran low. On CUDA the estimate less the CUDA
    context is also held against ``max_memory_reserved`` (``reserved_error``)."""
    from engine.memory.estimate import estimate_memory
    from engine.memory.plan import Plan
    from engine.models.spec import spec_from_config

    config = json.loads((folder / "config.json").read_text())
    plan = Plan(**plan_settings)
    estimate = estimate_memory(spec_from_config(config, name), plan, device)
    raw = measure_in_child(folder, plan_settings, timeout)
    measured = _measurements(raw, plan.is_preference)
    row = {"model": name, "config": config, "plan": asdict(plan), "device": device,
           "estimated_bytes": estimate.peak_allocated_bytes, "peak_moment": estimate.peak_moment,
           "measured": measured, "errors": {metric: round((estimate.peak_allocated_bytes - value) / value, 4)
                                            for metric, value in measured.items()},
           "seconds": raw["seconds"]}
    if "cuda_max_reserved_bytes" in raw:
        reserved, estimated = raw["cuda_max_reserved_bytes"], estimate.device_bytes - estimate.items["cuda_context"]
        row.update(cuda_max_reserved_bytes=reserved, estimated_reserved_bytes=estimated,
                   reserved_error=round((estimated - reserved) / reserved, 4))
    return row


def describe_row(row: dict[str, Any]) -> str:
    from engine.memory.plan import Plan

    estimated = row["estimated_bytes"] / 2**20
    return (f"{row['model']:8} {Plan(**row['plan']).describe():84} estimated {estimated:8.1f} MiB; "
            + ", ".join(f"{metric} {value / 2**20:.1f} MiB ({row['errors'][metric]:+.1%})"
                        for metric, value in row["measured"].items()))


def estimate_milliseconds(repeats: int = 1000) -> float:
    """How long one estimate takes (the studio redraws its memory bar on every change)."""
    from engine.memory.estimate import estimate_memory
    from engine.memory.plan import Plan
    from engine.models.spec import load_model_spec

    spec, plan = load_model_spec("Llama-3.1-70B"), Plan(method="qlora", grad_checkpointing=True)
    started = time.perf_counter()
    for _ in range(repeats):
        estimate_memory(spec, plan)
    return (time.perf_counter() - started) * 1000 / repeats


def _measurements(raw: dict[str, Any], preference: bool = False) -> dict[str, int]:
    """The measured peaks by metric name, the headline metric first. Preference rows record no
    resident memory: TRL's fused head allocates its tile buffer at the full 32768-entry width
    and writes only the vocabulary's columns, so the pages it never touches never become
    resident (on the tiny model some 500 of its 512 MiB), while the allocator counts them as a
    GPU's would."""
    if "cuda_max_allocated_bytes" in raw:
        return {"cuda_max_allocated": raw["cuda_max_allocated_bytes"]}
    if preference:
        return {"cpu_allocated": raw["cpu_allocated_bytes"]}
    return {"cpu_allocated": raw["cpu_allocated_bytes"], "cpu_rss_growth": raw["rss_growth_bytes"]}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
