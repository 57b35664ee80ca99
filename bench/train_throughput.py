"""Training throughput: the engine against a plain transformers Trainer + peft script.

Both train the same model from the same seed on the same tokenised rows with the same
hyper-parameters. The engine runs its own set-up (``engine.train.recipe.setup`` and
``build_trainer``: its model loading, LoRA attachment, collator, callback and Trainer
subclass), once with padded batches and once padding-free. The plain script is what a
practitioner writes: ``AutoModelForCausalLM``, ``get_peft_model``, ``Trainer`` with
``DataCollatorForSeq2Seq``. Runs alternate, so a busy machine slows all alike, and
medians are compared. Throughput is non-padding tokens per second of ``trainer.train()``.

Datasets: the pirate sample (short rows of similar length) and
``../shared/data/code_alpaca_2k.json`` (real instruction data of very different lengths).
The model: a small Llama (4 layers, hidden 256) with the starter's 49k-token vocabulary,
built at run time, or ``--model starter`` / any model folder.

    python bench/train_throughput.py [--steps 12] [--rounds 2] [--model mini|starter|DIR]

Last line: ``ratio_padded=… ratio_padding_free=… max_loss_diff=…`` (engine / plain
tokens per second on the variable-length data; the largest gap between the engine's
padded loss curve and the plain script's over the measured steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CODE_ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
SETTINGS = dict(method="lora", rank=16, alpha=32, dropout=0.05, targets="all-linear", batch_size=8, max_length=512,
                lr=2e-4, seed=7, log_every=1, optimizer="adamw", lr_scheduler="linear")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model", default="mini", help="mini (built here), starter, or a model folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="throughput-") as scratch:
        os.environ["LORA_STUDIO_HOME"] = str(Path(scratch) / "home")
        return measure(args, Path(scratch))


def measure(args: argparse.Namespace, scratch: Path) -> int:
    from engine.paths import SAMPLE_DATASETS

    model = _model(args.model, scratch)
    datasets = {"pirate sample": SAMPLE_DATASETS / "pirate_persona.jsonl"}
    if CODE_ALPACA.is_file():
        datasets["code alpaca"] = CODE_ALPACA
    else:
        print(f"note: {CODE_ALPACA} not found; measuring the sample only")
    results: dict[str, dict[str, Any]] = {}
    for label, dataset in datasets.items():
        runs: dict[str, list[dict[str, Any]]] = {"engine padded": [], "engine padding-free": [], "plain": []}
        for round_number in range(args.rounds):
            for kind in runs:
                folder = scratch / f"{label}-{kind}-{round_number}".replace(" ", "_")
                runs[kind].append(_run(kind, model, dataset, args.steps, folder))
        results[label] = _summarise(label, runs)
    headline = results.get("code alpaca") or results["pirate sample"]
    print(f"ratio_padded={headline['ratio_padded']:.3f} ratio_padding_free={headline['ratio_padding_free']:.3f} "
          f"max_loss_diff={max(r['max_loss_diff'] for r in results.values()):.2e}")
    return 0


def _model(choice: str, scratch: Path) -> Path:
    if choice == "starter":
        from engine.models.store import resolve_model

        return resolve_model("starter")
    if choice != "mini":
        return Path(choice)
    return _mini_model(scratch / "mini")


def _mini_model(folder: Path) -> Path:
    """A 4-layer Llama with the starter's tokenizer (or the tests' tiny one when it is not installed)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.models.store import starter_gguf

    if starter_gguf() is not None:
        from engine.models.store import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model("starter"))
    else:
        from tiny_model import build_tiny_model

        tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(folder.parent / "tiny"))
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _run(kind: str, model: Path, dataset: Path, steps: int, folder: Path) -> dict[str, Any]:
    from engine.core.atomic import write_json
    from engine.run.config import RunConfig
    from engine.train import recipe

    folder.mkdir(parents=True)
    batching = "padding_free" if kind == "engine padding-free" else "padded"
    config = RunConfig(model=str(model), dataset=str(dataset), max_steps=steps, batching=batching, **SETTINGS)
    write_json(folder / "config.json", config.to_dict())
    run = recipe.Run(folder)
    ready = recipe.setup(run)
    if kind == "plain":
        trainer = _plain_trainer(model, ready.examples.train, ready.tokenizer, steps, folder)
    else:
        trainer, _callback = recipe.build_trainer(run, ready, lambda total_steps: None)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": seconds, "losses": losses}


def _plain_trainer(model: Path, rows: Any, tokenizer: Any, steps: int, folder: Path) -> Any:
    """The plain script: stock classes, the usual arguments, the same seed and rows."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(SETTINGS["seed"])
    base = AutoModelForCausalLM.from_pretrained(model, dtype="bfloat16" if _cuda() else "float32")
    peft_model = get_peft_model(base, LoraConfig(r=SETTINGS["rank"], lora_alpha=SETTINGS["alpha"],
                                                 lora_dropout=SETTINGS["dropout"], target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=str(folder / "plain"), max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
        learning_rate=SETTINGS["lr"], lr_scheduler_type="linear", optim="adamw_torch_fused", logging_steps=1,
        save_strategy="no", report_to="none", seed=SETTINGS["seed"], use_cpu=not _cuda(), disable_tqdm=True,
        dataloader_num_workers=0, remove_unused_columns=False, include_num_input_tokens_seen="non_padding",
        bf16=_cuda(),
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    return Trainer(model=peft_model, args=args, train_dataset=rows.remove_columns(["length"]),
                   data_collator=collator, processing_class=tokenizer)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _summarise(label: str, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    speed = {kind: statistics.median(r["tokens"] / r["seconds"] for r in results) for kind, results in runs.items()}
    plain, padded, free = runs["plain"][0]["losses"], runs["engine padded"][0]["losses"], \
        runs["engine padding-free"][0]["losses"]
    max_loss_diff = max(abs(a - b) for a, b in zip(padded, plain))
    free_loss_diff = max(abs(a - b) for a, b in zip(free, plain))
    summary = {"ratio_padded": speed["engine padded"] / speed["plain"],
               "ratio_padding_free": speed["engine padding-free"] / speed["plain"],
               "max_loss_diff": max_loss_diff, "padding_free_loss_diff": free_loss_diff}
    print(json.dumps({"dataset": label, "tokens_per_second": {k: round(v, 1) for k, v in speed.items()},
                      **{k: round(v, 6) for k, v in summary.items()}}))
    return summary


if __name__ == "__main__":
    sys.exit(main())
