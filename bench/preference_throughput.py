"""DPO throughput and loss curve: the engine against a plain TRL DPOTrainer script.

Both train the same model (a small Llama built here: 4 layers, hidden 256, the tiny test
tokenizer) from the same seed, with LoRA r16 on all linear layers, on the same pairs with the
same settings. The engine runs its own set-up (``engine.train.recipe.setup`` and
``build_trainer``: its data reading and split, model loading, LoRA attachment, callback and
TRL trainer under ``StudioTrainer``). The plain script is what a practitioner writes:
``AutoModelForCausalLM``, ``DPOConfig``, ``DPOTrainer`` with a ``peft_config``. Runs alternate,
so a busy machine slows both alike, and medians are compared. Throughput is the non-padding
tokens of chosen and rejected sequences per second of ``trainer.train()``.

Pairs: from Code Alpaca (``../shared/data/code_alpaca_2k.json``, or ``--data FILE``): each
instruction's own answer is chosen over the answer to the next instruction.

    python bench/preference_throughput.py [--steps N] [--rounds N] [--pairs N] [--data FILE]

Last line: ``ratio=… max_loss_diff=…`` (engine tokens/s over the plain script's; the largest gap
between the two loss curves). Targets: ratio >= 0.95, max_loss_diff <= 1e-3.
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
SETTINGS = dict(method="lora", objective="dpo", beta=0.1, rank=16, alpha=32, dropout=0.05, targets="all-linear",
                batch_size=4, max_length=256, lr=5e-5, seed=7, log_every=1, optimizer="adamw", lr_scheduler="linear",
                val_fraction=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="steps of each timed run (20 on CUDA, 6 on a CPU)")
    parser.add_argument("--rounds", type=int, help="timed runs of each kind (3 on CUDA, 2 on a CPU)")
    parser.add_argument("--pairs", type=int, default=400, help="pairs made from the data")
    parser.add_argument("--data", type=Path, default=CODE_ALPACA, help="Code Alpaca JSON (instruction/input/output)")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    args.steps = args.steps or (20 if cuda else 6)
    args.rounds = args.rounds or (3 if cuda else 2)
    with tempfile.TemporaryDirectory(prefix="pref-throughput-") as scratch:
        os.environ["LORA_STUDIO_HOME"] = str(Path(scratch) / "home")
        return measure(args, Path(scratch), "cuda" if cuda else "cpu")


def build_model(folder: Path) -> Path:
    """The tiny test tokenizer over a bigger Llama: big enough that a step is mostly model work."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tiny_model import build_tiny_model

    build_tiny_model(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_pairs(data: Path, count: int, path: Path) -> Path:
    rows = json.loads(data.read_text(encoding="utf-8"))[:count + 1]
    rows = [row for row in rows if row["output"].strip()]

    def prompt(row: dict) -> str:
        return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")

    with open(path, "w", encoding="utf-8") as handle:
        for row, other in zip(rows, rows[1:]):
            if not row["output"].strip() or row["output"].strip() == other["output"].strip():
                continue  # a pair the engine would skip (no answer, or the same answer twice)
            handle.write(json.dumps({"prompt": [{"role": "user", "content": prompt(row)}],
                                     "chosen": [{"role": "assistant", "content": row["output"]}],
                                     "rejected": [{"role": "assistant", "content": other["output"]}]}) + "\n")
    return path


def engine_run(model: Path, pairs: Path, steps: int, folder: Path) -> dict[str, Any]:
    from engine.core.atomic import write_json
    from engine.run.config import RunConfig
    from engine.run.rundir import RunDir
    from engine.train import recipe

    folder.mkdir(parents=True)
    config = RunConfig(model=str(model), dataset=str(pairs), max_steps=steps, **SETTINGS)
    write_json(RunDir(folder).config, config.to_dict())
    run = recipe.Run(folder)
    ready = recipe.setup(run)
    trainer, _ = recipe.build_trainer(run, ready, lambda total: None)
    return _timed(trainer)


def plain_run(model_path: Path, pairs: Path, steps: int, folder: Path, device: str) -> dict[str, Any]:
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype="float32", attn_implementation="sdpa")
    config = DPOConfig(output_dir=str(folder), max_steps=steps, per_device_train_batch_size=SETTINGS["batch_size"],
                       learning_rate=SETTINGS["lr"], lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
                       max_grad_norm=1.0, optim="adamw_torch_fused", seed=SETTINGS["seed"], logging_steps=1,
                       max_length=SETTINGS["max_length"], beta=SETTINGS["beta"], gradient_checkpointing=False,
                       bf16=False, use_cpu=device == "cpu", report_to="none", save_strategy="no",
                       disable_tqdm=True, include_num_input_tokens_seen="non_padding")
    lora = LoraConfig(r=SETTINGS["rank"], lora_alpha=SETTINGS["alpha"], lora_dropout=SETTINGS["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
    dataset = load_dataset("json", data_files=str(pairs), split="train")
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora)
    return _timed(trainer)


def _timed(trainer: Any) -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    trainer.train()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"tokens_per_second": trainer.state.num_input_tokens_seen / seconds, "losses": losses}


def measure(args: argparse.Namespace, scratch: Path, device: str) -> int:
    from engine.train.trainer import training_arguments  # noqa: F401 - the stack loads before any timing

    model = build_model(scratch / "model")
    pairs = make_pairs(args.data, args.pairs, scratch / "pairs.jsonl")
    results: dict[str, list[dict[str, Any]]] = {"engine": [], "plain": []}
    for round_number in range(args.rounds):
        results["engine"].append(engine_run(model, pairs, args.steps, scratch / f"engine-{round_number}"))
        results["plain"].append(plain_run(model, pairs, args.steps, scratch / f"plain-{round_number}", device))
    speeds = {kind: statistics.median(r["tokens_per_second"] for r in runs) for kind, runs in results.items()}
    engine_losses, plain_losses = results["engine"][0]["losses"], results["plain"][0]["losses"]
    if len(engine_losses) != len(plain_losses):
        raise SystemExit(f"loss curves of different lengths: {len(engine_losses)} and {len(plain_losses)}")
    diff = max(abs(a - b) for a, b in zip(engine_losses, plain_losses))
    print(json.dumps({"device": device, "steps": args.steps, "rounds": args.rounds, "pairs": args.pairs,
                      "tokens_per_second": {k: round(v, 1) for k, v in speeds.items()},
                      "engine_losses": [round(x, 6) for x in engine_losses],
                      "plain_losses": [round(x, 6) for x in plain_losses]}))
    print(f"ratio={speeds['engine'] / speeds['plain']:.3f} max_loss_diff={diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
