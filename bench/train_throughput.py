"""Training throughput and peak memory: the engine against a plain transformers Trainer + peft script.

Both train the same model from the same seed on the same tokenised rows with the same
hyper-parameters. The engine runs its own set-up (``engine.train.recipe.setup`` and
``build_trainer``: its model loading, LoRA attachment, collator, callback and Trainer
subclass), once with padded batches and once padding-free. The plain script is what a
practitioner writes: ``AutoModelForCausalLM``, ``get_peft_model``, ``Trainer`` with
``DataCollatorForSeq2Seq``. Runs alternate, so a busy machine slows all alike, and
medians are compared. Throughput is non-padding tokens per second of ``trainer.train()``.

Peak memory comes from one more run of each kind (``--memory-steps`` steps over the same
batches), from before the model loads to the end of training: on CUDA
``torch.cuda.max_memory_allocated`` after a reset, less what was allocated before; on a CPU
the peak of live tensor bytes from the torch profiler's allocator events
(``bench/memory_calibration.py``'s ``profiled_peak``), with the loaded weights copied into
allocator memory, as a GPU holds them. ``peak_memory_ratio`` is the engine's padded run over
the plain script's: the same rows in the same batches.

Datasets: ``../shared/data/code_alpaca_2k.json`` (real instruction data of very different
lengths, which the targets are set on; ``--data`` names another copy), and with ``--sample``
(or without Code Alpaca) the pirate sample (short rows of similar length). Models: two small Llamas (4 layers, hidden
256) built at run time with the starter's tokenizer, one with its 49k-token vocabulary and
one with Llama 3's 128,256 (the logits' share of memory grows with the vocabulary), or
``--model starter`` / any model folder.

    python bench/train_throughput.py [--steps N] [--rounds N] [--memory-steps N] [--sample] [--data FILE]
                                     [--model mini|starter|DIR]

Last line: ``ratio_padded=… ratio_padding_free=… peak_memory_ratio=…`` for the worse model
(the lower throughput ratios, the higher memory ratio: the targets must hold for every
model), then, with two models, the same three per model suffixed with its vocabulary
(``ratio_padded_49k=… peak_memory_ratio_128k=…``), then ``max_loss_diff=…`` (the largest gap
between the engine's padded loss curve and the plain script's over the measured steps).
Throughput and memory are the engine's over the plain script's, on Code Alpaca when present.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CODE_ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
SETTINGS = dict(method="lora", rank=16, alpha=32, dropout=0.05, targets="all-linear", batch_size=8, max_length=512,
                lr=2e-4, seed=7, log_every=1, optimizer="adamw", lr_scheduler="linear")
KINDS = ("engine padded", "engine padding-free", "plain")
LLAMA3_VOCAB = 128256


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="steps of each timed run (12 on CUDA, 3 on a CPU)")
    parser.add_argument("--rounds", type=int, help="timed runs of each kind (2 on CUDA, 1 on a CPU)")
    parser.add_argument("--memory-steps", type=int,
                        help="steps of each memory run, 0 for none (2 on CUDA, 1 on a CPU: the first batch)")
    parser.add_argument("--sample", action="store_true", help="also measure the pirate sample")
    parser.add_argument("--data", type=Path, help="the variable-length dataset (default: ../shared Code Alpaca)")
    parser.add_argument("--model", default="mini", help="mini (two built here), starter, or a model folder")
    args = parser.parse_args()
    # A step of the 128k mini model at batch 8 takes some 20 s on two busy CPU cores: there the
    # defaults keep the whole run to several minutes, and its ratios are indicative only.
    cuda = _cuda()
    args.steps = args.steps or (12 if cuda else 3)
    args.rounds = args.rounds or (2 if cuda else 1)
    args.memory_steps = (2 if cuda else 1) if args.memory_steps is None else args.memory_steps
    with tempfile.TemporaryDirectory(prefix="throughput-") as scratch:
        os.environ["LORA_STUDIO_HOME"] = str(Path(scratch) / "home")
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, scratch: Path) -> int:
    models = model_folders(args.model, scratch)
    sets = datasets(args.sample, args.data)
    per_model = {}
    for name, model in models.items():
        print(f"model {name}: {model}", flush=True)
        results = compare(model, sets, args.steps, args.rounds, args.memory_steps, scratch / f"runs-{name}")
        per_model[name] = headline(results)
    print(last_line(per_model, suffixed=len(per_model) > 1))
    return 0


def datasets(with_sample: bool, data: Optional[Path] = None) -> dict[str, Path]:
    """``data`` or Code Alpaca when present, first (the headline); the pirate sample with
    ``with_sample`` or without either."""
    from engine.paths import SAMPLE_DATASETS

    chosen = {}
    if data is not None:
        chosen[data.stem.replace("_", " ")] = data
    elif CODE_ALPACA.is_file():
        chosen["code alpaca"] = CODE_ALPACA
    else:
        print(f"note: {CODE_ALPACA} not found; measuring the pirate sample")
    if with_sample or not chosen:
        chosen["pirate sample"] = SAMPLE_DATASETS / "pirate_persona.jsonl"
    return chosen


def model_folders(choice: str, scratch: Path) -> dict[str, Path]:
    """The models by name: the two minis (named by vocabulary), the starter, or one folder."""
    if choice == "starter":
        from engine.models.store import resolve_model

        return {"starter": resolve_model("starter")}
    if choice != "mini":
        return {Path(choice).name: Path(choice)}
    folders = {}
    for vocab in (None, LLAMA3_VOCAB):
        folder = mini_model(scratch / f"mini-{vocab or 'starter'}", vocab)
        folders[vocab_label(json.loads((folder / "config.json").read_text())["vocab_size"])] = folder
    return folders


def vocab_label(vocab: int) -> str:
    return f"{round(vocab / 1000)}k" if vocab >= 1000 else str(vocab)


def mini_model(folder: Path, vocab_size: Optional[int] = None) -> Path:
    """A 4-layer Llama with the starter's tokenizer (or the tests' tiny one when it is not
    installed) and the tokenizer's vocabulary, or ``vocab_size`` rows of embeddings and logits
    (more than the tokenizer has: the extra rows are never read, but the logits are that wide)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder(folder.parent))
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=256, intermediate_size=768,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def tokenizer_folder(scratch: Path) -> Path:
    """The starter's folder, for its tokenizer, or the tests' tiny model's (built in ``scratch``)
    where the starter is not installed."""
    from engine.models.store import resolve_model, starter_gguf

    if starter_gguf() is not None:
        return resolve_model("starter")
    from tiny_model import build_tiny_model

    return build_tiny_model(scratch / "tiny")


def compare(model: Path, sets: dict[str, Path], steps: int, rounds: int, memory_steps: int, scratch: Path,
            settings: dict[str, Any] = SETTINGS) -> dict[str, dict[str, Any]]:
    """Timed runs of every kind in turn, then one memory run of each: a summary per dataset.
    ``settings``: the runs' (the engine's and the plain script's alike), SETTINGS unless changed."""
    results: dict[str, dict[str, Any]] = {}
    for label, dataset in sets.items():
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for round_number in range(rounds):
            for kind in KINDS:
                folder = _folder(scratch, label, kind, round_number)
                runs[kind].append(timed_run(kind, model, dataset, steps, folder, settings))
        peaks = {kind: peak_memory(kind, model, dataset, memory_steps, _folder(scratch, label, kind, "memory"),
                                   settings) for kind in KINDS} if memory_steps else {}
        results[label] = _summarise(label, runs, peaks)
    return results


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary the targets are read from: the first dataset's (``datasets`` puts it first)."""
    return next(iter(results.values()))


def worst(per_model: dict[str, dict[str, Any]]) -> dict[str, Optional[float]]:
    """The figures the targets are held to: over the models, the lower throughput ratios and the
    higher memory ratio (None without memory runs)."""
    return {"ratio_padded": min(s["ratio_padded"] for s in per_model.values()),
            "ratio_padding_free": min(s["ratio_padding_free"] for s in per_model.values()),
            "peak_memory_ratio": _max_or_none(s.get("peak_memory_ratio") for s in per_model.values())}


def last_line(per_model: dict[str, dict[str, Any]], suffixed: bool) -> str:
    def show(value: Optional[float]) -> str:
        return "none" if value is None else f"{value:.3f}"

    headline = worst(per_model)
    pairs = [f"{name}={show(value)}" for name, value in headline.items()]
    if suffixed:
        pairs += [f"{name}_{model}={show(summary.get(name))}" for model, summary in per_model.items()
                  for name in headline]
    pairs.append(f"max_loss_diff={max(s['max_loss_diff'] for s in per_model.values()):.2e}")
    return " ".join(pairs)


def _max_or_none(values: Any) -> Optional[float]:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _folder(scratch: Path, label: str, kind: str, run: Any) -> Path:
    return scratch / f"{label}-{kind}-{run}".replace(" ", "_")


def _new_run(kind: str, model: Path, dataset: Path, steps: int, folder: Path, settings: dict[str, Any]) -> Any:
    from engine.core.atomic import write_json
    from engine.run.config import RunConfig
    from engine.train import recipe

    folder.mkdir(parents=True)
    batching = "padding_free" if kind == "engine padding-free" else "padded"
    config = RunConfig(model=str(model), dataset=str(dataset), max_steps=steps, batching=batching, **settings)
    write_json(folder / "config.json", config.to_dict())
    return recipe.Run(folder)


def timed_run(kind: str, model: Path, dataset: Path, steps: int, folder: Path,
              settings: dict[str, Any] = SETTINGS) -> dict[str, Any]:
    from engine.train import recipe

    run = _new_run(kind, model, dataset, steps, folder, settings)
    ready = recipe.setup(run)
    if kind == "plain":
        trainer = _plain_trainer(model, ready.examples.train, ready.tokenizer, steps, folder, settings)
    else:
        trainer, _callback = recipe.build_trainer(run, ready, lambda total_steps: None)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": seconds, "losses": losses}


def peak_memory(kind: str, model: Path, dataset: Path, steps: int, folder: Path,
                settings: dict[str, Any] = SETTINGS) -> int:
    """Peak bytes of one run of ``kind``, from loading the model to the end of training."""
    from engine.train import recipe

    run = _new_run(kind, model, dataset, steps, folder, settings)
    if kind == "plain":
        ready = recipe.setup(run)  # for its rows; the plain script loads a model of its own
        rows, tokenizer = ready.examples.train, ready.tokenizer
        del ready
        return peak_bytes(lambda: _plain_trainer(model, rows, tokenizer, steps, folder, settings,
                                                   own_weights=True).train())

    def engine_run() -> None:
        ready = recipe.setup(run)
        _own_weights(ready.model)
        trainer, _callback = recipe.build_trainer(run, ready, lambda total_steps: None)
        trainer.train()

    return peak_bytes(engine_run)


def peak_bytes(action: Callable[[], Any]) -> int:
    """The most bytes of tensors alive at once while ``action`` runs, beyond those alive before."""
    import torch

    gc.collect()
    if not torch.cuda.is_available():
        from memory_calibration import profiled_peak

        return profiled_peak(action)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    action()
    return torch.cuda.max_memory_allocated() - before


def _own_weights(model: Any) -> None:
    """On a CPU, the loaded weights into allocator memory, where the profiler counts them."""
    if not _cuda():
        from memory_calibration import own_tensors

        own_tensors(model)


def _plain_trainer(model: Path, rows: Any, tokenizer: Any, steps: int, folder: Path, settings: dict[str, Any],
                   own_weights: bool = False) -> Any:
    """The plain script: stock classes, the usual arguments, the same seed and rows."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(settings["seed"])
    base = AutoModelForCausalLM.from_pretrained(model, dtype="bfloat16" if _cuda() else "float32")
    if own_weights:
        _own_weights(base)
    peft_model = get_peft_model(base, LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"],
                                                 lora_dropout=settings["dropout"], target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(folder / "plain"), max_steps=steps, per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["lr"], lr_scheduler_type="linear", optim="adamw_torch_fused", logging_steps=1,
        save_strategy="no", report_to="none", seed=settings["seed"], use_cpu=not _cuda(), disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, include_num_input_tokens_seen="non_padding",
        bf16=_cuda(),
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=peft_model, args=args, train_dataset=rows.remove_columns(["length"]),
                   data_collator=collator, processing_class=tokenizer)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _summarise(label: str, runs: dict[str, list[dict[str, Any]]], peaks: dict[str, int]) -> dict[str, Any]:
    speed = {kind: statistics.median(r["tokens"] / r["seconds"] for r in results) for kind, results in runs.items()}
    plain, padded, free = runs["plain"][0]["losses"], runs["engine padded"][0]["losses"], \
        runs["engine padding-free"][0]["losses"]
    max_loss_diff = max(abs(a - b) for a, b in zip(padded, plain))
    free_loss_diff = max(abs(a - b) for a, b in zip(free, plain))
    summary = {"ratio_padded": speed["engine padded"] / speed["plain"],
               "ratio_padding_free": speed["engine padding-free"] / speed["plain"],
               "max_loss_diff": max_loss_diff, "padding_free_loss_diff": free_loss_diff}
    if peaks:
        summary["peak_memory_ratio"] = peaks["engine padded"] / peaks["plain"]
        summary["padding_free_memory_ratio"] = peaks["engine padding-free"] / peaks["plain"]
    print(json.dumps({"dataset": label, "tokens_per_second": {k: round(v, 1) for k, v in speed.items()},
                      **({"peak_mib": {k: round(v / 2**20, 1) for k, v in peaks.items()}} if peaks else {}),
                      **{k: round(v, 6) for k, v in summary.items()}}), flush=True)
    return {**summary, "tokens_per_second": speed, "peak_bytes": peaks}


if __name__ == "__main__":
    sys.exit(main())
