"""The LoRA training recipe, in the order it runs: read the config, load the model and
data, attach the adapter, train with the transformers Trainer, save into the library.

Everything the user should know is emitted as an event; the run ends with exactly
one ``RunFinished``. Started again on the same run directory it resumes from the
last checkpoint.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from engine.config import RunConfig
from engine.control import ControlReader
from engine.errors import StudioError
from engine.events import EVENTS_FILE, Event, EventWriter, LogLine, RunFinished, RunStarted

CHECKPOINTS = "checkpoints"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


class _Run:
    """State shared by the phases of one run: where events go, and the stop flag."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # Under torchrun every rank runs this file; only rank 0 speaks.
        self.is_main = os.environ.get("RANK", "0") == "0"
        self.writer = EventWriter(run_dir / EVENTS_FILE) if self.is_main else None
        self.control = ControlReader(run_dir)

    def emit(self, event: Event) -> None:
        if self.writer is not None:
            self.writer.emit(event)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogLine(message=message, level=level))

    def stop_requested(self) -> bool:
        return self.control.command == "stop"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.train RUN_DIR", file=sys.stderr)
        return 2
    _yield_cpu_to_the_desktop()
    run = _Run(Path(argv[0]).resolve())
    try:
        finished = train(run)
    except StudioError as exc:
        finished = RunFinished(status="failed", error=str(exc))
    except Exception as exc:  # reported as an event; the traceback goes to the run's log file
        traceback.print_exc()
        finished = RunFinished(status="failed", error=_describe_failure(exc))
    run.emit(finished)
    if run.writer is not None:
        run.writer.close()
    return 0 if finished.status != "failed" else 1


def _yield_cpu_to_the_desktop() -> None:
    """Run at a lower CPU priority: training takes every cycle that is free, but the
    studio's window (and the rest of the desktop) gets the CPU first when it needs it."""
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass  # not permitted here; training still runs, at normal priority


def _describe_failure(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "out of memory" in text.lower():
        return f"out of memory: {text}. Lower the batch size or max length, or the rank."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def train(run: _Run) -> RunFinished:
    config = RunConfig.load(run.run_dir / "config.json")
    from engine.hardware import best_device
    from engine.models import resolve_model

    device = _pick_device(config, best_device())
    dtype_name = _pick_precision(config, device)
    run.log(f"Preparing model {config.model}")
    model_path = resolve_model(config.model, progress=lambda done, total, msg: run.log(msg) if msg else None)
    if run.stop_requested():
        return RunFinished(status="stopped", error=None)

    tokenizer = _load_tokenizer(model_path)
    loaded = _load_examples(run, config, tokenizer)
    if loaded is None or run.stop_requested():
        return RunFinished(status="stopped")
    train_set, eval_set, dataset_hash = loaded

    run.log(f"Loading {model_path.name} on {device} in {dtype_name}")
    model = _load_model(model_path, dtype_name)
    model = _attach_lora(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    run.log(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    if run.stop_requested():
        return RunFinished(status="stopped")

    resume_from = _last_checkpoint(run)

    def announce(total_steps: int) -> None:
        run.emit(RunStarted(
            run_dir=str(run.run_dir), model=config.model, method=config.method, device=device,
            total_steps=total_steps, trainable_params=trainable, total_params=total,
            train_examples=len(train_set), resumed_from_step=_checkpoint_step(resume_from),
        ))

    trainer, callback = _build_trainer(run, config, model, tokenizer, train_set, eval_set, device, dtype_name,
                                       announce)
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    step = trainer.state.global_step
    if eval_set is not None and not callback.stop_requested and step % trainer.args.eval_steps:
        trainer.evaluate()  # the eval loss of the adapter as saved, when the last step fell between evaluations
    final_loss = callback.loss_history[-1][1] if callback.loss_history else None

    if callback.nonfinite_loss is not None:
        return RunFinished(
            status="failed", step=step, final_loss=final_loss,
            error=f"the loss became {callback.nonfinite_loss} at step {step}; lower the learning rate "
                  f"(now {config.lr:g}) and start again",
        )
    status = "stopped" if callback.stop_requested else "completed"
    if callback.stop_requested and not callback.save_on_stop:
        run.log("Stopped without saving")
        return RunFinished(status=status, step=step, final_loss=final_loss)

    meta = _adapter_meta(config, model_path, tokenizer, device, dataset_hash, callback.loss_history,
                         step, final_loss, time.time() - started, run.run_dir)
    eval_history = [[entry["step"], entry["eval_loss"]] for entry in trainer.state.log_history if "eval_loss" in entry]
    if eval_history:
        meta.update(eval_history=eval_history, final_eval_loss=eval_history[-1][1])
    adapter = _save_to_library(config, run.run_dir, model, meta)
    run.log(f"Saved adapter {adapter.name}")
    return RunFinished(status=status, adapter=str(adapter), step=step, final_loss=final_loss)


def _pick_device(config: RunConfig, best: Any) -> str:
    if config.device == "auto":
        return best.torch_device
    return config.device


def _pick_precision(config: RunConfig, device: str) -> str:
    on_gpu = device.startswith("cuda")
    if config.precision == "auto":
        if on_gpu:
            import torch

            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if config.precision in ("fp16", "bf16") and not on_gpu:
        raise StudioError(f"{config.precision} mixed precision needs a GPU; on {device} use fp32 (or auto)")
    return config.precision


def _load_tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_examples(run: _Run, config: RunConfig, tokenizer: Any) -> Optional[tuple[Any, Optional[Any], str]]:
    """The training and validation sets and the dataset's hash; None when stopped meanwhile.

    Rows are tokenised into an Arrow file in the run folder and memory-mapped from there,
    so memory stays flat however large the dataset is.
    """
    from datasets import Dataset

    from engine.data import (CHATML_TEMPLATE, DataOptions, dataset_fingerprint, open_dataset, split_indices,
                             write_examples)

    source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))
    if source.format != "text" and not getattr(tokenizer, "chat_template", None):
        # Set on the tokenizer, so the checkpoints and the adapter keep the template it was trained with.
        tokenizer.chat_template = CHATML_TEMPLATE
        run.log("The model has no chat template: training with ChatML, which is saved with the adapter")
    written = write_examples(source, tokenizer, config.max_length, run.run_dir / "data" / "examples.arrow",
                             train_on=config.train_on, progress=_tokenising_progress(run),
                             cancelled=run.stop_requested)
    if written is None:
        return None
    if written.bad_rows:
        first = written.problems[0]
        bad = f"{written.bad_rows} of {written.total_rows} rows are bad; first at {first.where()}: {first.reason}"
        if config.bad_rows == "stop":
            raise StudioError(f"{bad}. Fix the file, or choose to train on the good rows")
        run.log(f"Skipping {bad}", level="warning")
    stats = written.stats
    run.log(f"Dataset {source.name}: {source.layout.title}, {stats.examples} examples, {stats.truncated} truncated "
            f"to {config.max_length} tokens, {stats.trained_tokens:,} trained tokens")
    if not stats.examples:
        raise StudioError(f"no training examples left in {config.dataset} after tokenising; "
                          f"raise max length (now {config.max_length})")
    examples = Dataset.from_file(str(written.path))
    train_rows, eval_rows = split_indices(len(examples), config.val_fraction, config.seed)
    if not len(eval_rows):
        return examples, None, dataset_fingerprint(config.dataset)
    run.log(f"Holding out {len(eval_rows)} examples to measure the eval loss")
    return examples.select(train_rows), examples.select(eval_rows), dataset_fingerprint(config.dataset)


def _tokenising_progress(run: _Run) -> Callable[[float], None]:
    """A log line at each tenth of a long tokenising pass; short ones pass silently."""
    started = time.monotonic()
    shown = 0

    def report(fraction: float) -> None:
        nonlocal shown
        tenth = int(fraction * 10)
        if tenth > shown and time.monotonic() - started > 2:
            shown = tenth
            run.log(f"Tokenising the dataset: {tenth * 10}%")

    return report


def _load_model(model_path: Path, dtype_name: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # Weights stay in fp32 under mixed precision: the Trainer's autocast does the 16-bit math
    # and the optimizer keeps full-precision master weights for the adapter.
    dtype = {"fp32": torch.float32, "bf16": torch.float32, "fp16": torch.float32}[dtype_name]
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)


def lora_target_modules(model: Any, preset: str) -> Any:
    """Module names for a target preset, checked against the model's own modules."""
    if preset == "all-linear":
        return "all-linear"
    wanted = ("q_proj", "v_proj") if preset == "q,v" else ATTENTION_PROJECTIONS
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    found = [name for name in wanted if name in present]
    if not found:
        raise StudioError(f"this architecture has no {', '.join(wanted)} modules; use targets all-linear")
    return found


def _attach_lora(model: Any, config: RunConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=lora_target_modules(model, config.targets),
        use_dora=config.method == "dora",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _log_every(config: RunConfig, examples: int) -> int:
    if config.log_every:
        return config.log_every
    if config.max_steps:
        total = config.max_steps
    else:
        per_epoch = -(-examples // (config.batch_size * config.grad_accum))
        total = max(1, int(per_epoch * config.epochs))
    # About a hundred points per curve: enough to see, few enough device syncs.
    return max(1, total // 100)


def _last_checkpoint(run: _Run) -> Optional[str]:
    """The newest complete checkpoint. The Trainer writes ``trainer_state.json`` last, so a
    checkpoint without it was cut short by a crash and is skipped, not resumed from."""
    checkpoints = run.run_dir / CHECKPOINTS
    checkpoints.mkdir(exist_ok=True)
    for folder in sorted(checkpoints.glob("checkpoint-*"), key=lambda p: _checkpoint_step(str(p)), reverse=True):
        if (folder / "trainer_state.json").is_file():
            run.log(f"Resuming from {folder.name}")
            return str(folder)
        run.log(f"Skipping {folder.name}: it was not completely written", level="warning")
    return None


def _build_trainer(run: _Run, config: RunConfig, model: Any, tokenizer: Any, train_set: Any, eval_set: Optional[Any],
                   device: str, dtype_name: str, on_train_begin: Callable[[int], None]) -> tuple[Any, Any]:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from engine.train.callback import EventCallback

    args = TrainingArguments(
        output_dir=str(run.run_dir / CHECKPOINTS),
        max_steps=config.max_steps or -1,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        warmup_steps=config.warmup_steps,
        logging_steps=_log_every(config, len(train_set)),
        logging_first_step=True,
        save_strategy="steps" if config.save_every else "no",
        save_steps=config.save_every or 500,
        eval_strategy="steps" if eval_set is not None else "no",
        # About ten evaluations a run unless asked otherwise.
        eval_steps=config.eval_every or 10 * _log_every(config, len(train_set)),
        per_device_eval_batch_size=config.batch_size,
        report_to="none",
        seed=config.seed,
        bf16=dtype_name == "bf16",
        fp16=dtype_name == "fp16",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
    )
    callback = EventCallback(run.emit, run.control, device, on_train_begin=on_train_begin)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    return trainer, callback


def _checkpoint_step(path: Optional[str]) -> int:
    if not path:
        return 0
    try:
        return int(Path(path).name.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def _adapter_meta(config: RunConfig, model_path: Path, tokenizer: Any, device: str, dataset_hash: str,
                  loss_history: list[tuple[int, float]], step: int, final_loss: Optional[float],
                  duration_s: float, run_dir: Path) -> dict[str, Any]:
    from engine.hardware import detect_devices, versions
    from engine.models import model_fingerprint

    device_info = next((d for d in detect_devices() if d.torch_device == device), None)
    return {
        "base_model": config.model,
        "base_model_path": str(model_path),
        "base_model_fingerprint": model_fingerprint(model_path),
        "method": config.method,
        "rank": config.rank,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "targets": config.targets,
        "learning_rate": config.lr,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "max_length": config.max_length,
        "max_steps": config.max_steps,
        "epochs": config.epochs,
        "seed": config.seed,
        "dataset": str(Path(config.dataset).resolve()) if Path(config.dataset).exists() else config.dataset,
        "dataset_sha256": dataset_hash,
        "steps": step,
        "final_loss": final_loss,
        "loss_history": [[s, loss] for s, loss in loss_history],
        "duration_s": round(duration_s, 2),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": device_info.name if device_info else device,
        "chat_template": tokenizer.chat_template,
        "train_on": config.train_on,
        "val_fraction": config.val_fraction,
        "run_dir": str(run_dir),
        "versions": versions(),
    }


def _model_card(name: str, meta: dict[str, Any]) -> str:
    loss = f"{meta['final_loss']:.4f}" if meta.get("final_loss") is not None else "n/a"
    return (
        f"# {name}\n\n"
        f"A {meta['method'].upper()} adapter for `{meta['base_model']}`, trained with LoRA Studio.\n\n"
        f"| setting | value |\n| --- | --- |\n"
        f"| rank / alpha | {meta['rank']} / {meta['alpha']} |\n"
        f"| targets | {meta['targets']} |\n"
        f"| learning rate | {meta['learning_rate']:g} |\n"
        f"| steps | {meta['steps']} |\n"
        f"| final training loss | {loss} |\n"
        f"| dataset | `{Path(meta['dataset']).name}` (sha256 {meta['dataset_sha256'][:12]}) |\n"
        f"| hardware | {meta['hardware']} |\n\n"
        "Load it with stock PEFT:\n\n"
        "```python\nfrom peft import PeftModel\nmodel = PeftModel.from_pretrained(base_model, \"path/to/this/folder\")\n```\n"
    )


def _save_to_library(config: RunConfig, run_dir: Path, model: Any, meta: dict[str, Any]) -> Path:
    from engine.library import save_adapter

    name = config.name or run_dir.name
    return save_adapter(name, lambda folder: model.save_pretrained(folder), meta, lambda final: _model_card(final, meta))
