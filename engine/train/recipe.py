"""The training recipe, in the order it runs: read the config, check it can run here,
load the data and the model, attach the method, train with the transformers Trainer,
save the adapter (or, for full fine-tuning, the model) into the library.

Everything the user should know is emitted as an event; the run ends with exactly
one ``RunFinished``. Started again on the same run directory it resumes from the
newest complete checkpoint. The same file runs alone or on every rank under
``torchrun`` / ``accelerate launch``, where rank 0 speaks and saves; ``engine.train.command``
takes the run folder and refuses what it must before this module (the stack) is imported.
"""

from __future__ import annotations

import errno
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.core.choices import RunStatus
from engine.core.telemetry import switch_off_telemetry
from engine.run.rundir import RunDir
from engine.run.checkpoints import checkpoint_folders, checkpoint_problem, checkpoint_step, clear_checkpoint_staging
from engine.core.units import gib
from engine.run.config import RunConfig
from engine.run.control import ControlReader
from engine.errors import REFUSED_PICKLE, StudioError, is_refused_pickle
from engine.run.events import Event, EventWriter, LogLine, RunFinished, RunStarted
from engine.run.priority import yield_cpu_to_the_desktop
from engine.train import distributed
# At import, not lazily: this brings in the whole training stack (transformers' Trainer, torch), which
# the warm-start standby imports this module for, and which the CPU memory cap must find loaded.
from engine.train.trainer import StudioTrainer, training_arguments


class Run:
    """State shared by the phases of one run: where events go, and the stop flag."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # Under torchrun every rank runs this file; only rank 0 speaks.
        self.is_main = distributed.is_main()
        self.writer = EventWriter(RunDir(run_dir).events) if self.is_main else None
        self.control = ControlReader(run_dir)

    def emit(self, event: Event) -> None:
        if self.writer is not None:
            self.writer.emit(event)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(LogLine(message=message, level=level))

    def stop_requested(self) -> bool:
        """Whether a stop was asked for: rank 0's reading, on every rank (call it on all ranks at once)."""
        return distributed.agree_on(self.control.poll()).get("command") == "stop"

    def stop_requested_here(self) -> bool:
        """This process's own reading, for work only this rank does."""
        return self.control.poll().get("command") == "stop"


@dataclass
class Examples:
    train: Any
    eval: Optional[Any]
    dataset_hash: str


def train_owned(run_dir: Path) -> int:
    """Train the run in RUN_DIR, which this process holds (``engine.train.command.main``); the exit code."""
    yield_cpu_to_the_desktop()
    # Belt and braces: every torch.load in this process (a resumed checkpoint's optimizer, scheduler and
    # RNG state are pickles) reads plain tensors only, even where a library leaves weights_only unset.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    switch_off_telemetry()  # before any library could send its own (TRL's trainers ping when built)
    finished = run_and_report(Run(run_dir))
    return 0 if finished.status != RunStatus.FAILED else 1


def run_and_report(run: Run) -> RunFinished:
    """Train, and end the run's events with exactly one RunFinished, whatever happened."""
    try:
        finished = train(run)
    except StudioError as exc:
        finished = RunFinished(status=RunStatus.FAILED, error=str(exc))
    except Exception as exc:  # reported as an event; the traceback goes to the run's log file
        traceback.print_exc()
        finished = RunFinished(status=RunStatus.FAILED, error=_describe_failure(exc))
    run.emit(finished)
    if run.writer is not None:
        run.writer.close()
    return finished


def _describe_failure(exc: BaseException) -> str:
    if is_refused_pickle(exc):
        return f"cannot resume from the run's checkpoint: {REFUSED_PICKLE}; delete that checkpoint folder"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if _disk_full(exc):
        where = getattr(exc, "filename", None) or "while writing"
        return f"the disk is full ({where}): free some space, then resume the run"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _disk_full(exc: Optional[BaseException]) -> bool:
    """ENOSPC, raised as it is or wrapped by a library (safetensors words it in its own error)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "no space left on device" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class Setup:
    """Everything a run trains with, ready for ``build_trainer``."""

    config: RunConfig
    model_path: Path
    device: str
    precision: str
    budget: int  # bytes this run may use, for the out-of-memory advice
    baseline: int  # bytes in use before the model loaded (the libraries, on a CPU)
    tokenizer: Any
    examples: Examples
    model: Any


def setup(run: Run) -> Optional[Setup]:
    """Read the config, check it can run here, load data and model and attach the method.
    None when a stop was asked for meanwhile."""
    config = RunConfig.load(RunDir(run.run_dir).config)
    if distributed.world_size() > 1:
        from accelerate import PartialState

        PartialState()  # joins the process group now: the ranks must wait for rank 0's data
        distributed.check_shared_folder(run.run_dir)  # several nodes must share the one folder
    from engine.models.store import resolve_model
    from engine.train import memory_guard, preflight

    resolved = preflight.check(config)
    budget = _memory_budget(config, resolved.device)
    baseline = 0 if resolved.device.startswith("cuda") else memory_guard.process_memory()
    run.log(f"Preparing model {config.model}")
    with distributed.main_first():
        model_path = resolve_model(config.model, progress=lambda done, total, msg: run.log(msg) if msg else None)
    preflight.check_model(config, model_path)
    if run.stop_requested():
        return None
    tokenizer = _load_tokenizer(model_path)
    examples = _load_examples(run, config, tokenizer)
    if examples is None or run.stop_requested():
        return None
    model = _load_and_attach(run, config, model_path, tokenizer, resolved.device, resolved.precision)
    if run.stop_requested():
        return None
    return Setup(config, model_path, resolved.device, resolved.precision, budget, baseline, tokenizer, examples,
                 model)


def train(run: Run) -> RunFinished:
    from engine.train import memory_guard

    ready = setup(run)
    if ready is None:
        return RunFinished(status=RunStatus.STOPPED)
    config, examples = ready.config, ready.examples
    resume_from = _last_checkpoint(run)
    trainable, total = parameter_counts(ready.model)

    def announce(total_steps: int) -> None:
        run.emit(RunStarted(
            run_dir=str(run.run_dir), model=config.model, method=config.method, device=ready.device,
            total_steps=total_steps, trainable_params=trainable, total_params=total,
            train_examples=len(examples.train), resumed_from_step=checkpoint_step(resume_from) or 0,
            predicted_peak_bytes=_predicted_peak(ready),
        ))

    trainer, callback = build_trainer(run, ready, announce)
    started = time.time()
    try:
        trainer.train(resume_from_checkpoint=resume_from)
    except Exception as exc:
        if not memory_guard.is_out_of_memory(exc):
            raise
        return _out_of_memory(run, ready, callback.step)
    step = trainer.state.global_step
    if examples.eval is not None and not callback.stop_requested and step % trainer.args.eval_steps:
        trainer.evaluate()  # the eval loss of what is saved, when the last step fell between evaluations
    final_loss = callback.loss_history[-1][1] if callback.loss_history else None

    if callback.nonfinite_loss is not None:
        return RunFinished(
            status=RunStatus.FAILED, step=step, final_loss=final_loss,
            error=f"the loss became {callback.nonfinite_loss} at step {step}; lower the learning rate "
                  f"(now {config.lr:g}) and start again",
        )
    status = RunStatus.STOPPED if callback.stop_requested else RunStatus.COMPLETED
    if callback.stop_requested and not callback.save_on_stop:
        run.log("Stopped without saving")
        return RunFinished(status=status, step=step, final_loss=final_loss)
    if not run.is_main:
        return RunFinished(status=status, step=step, final_loss=final_loss)

    from engine.train import saving

    meta = saving.run_meta(config, ready.model_path, ready.tokenizer, ready.device, ready.precision,
                           examples.dataset_hash, _loss_curve(trainer.state, config), step, final_loss,
                           time.time() - started, run.run_dir, trainer.state)
    if config.method == "full":
        saved = saving.save_model(config, run.run_dir, ready.model, ready.tokenizer, meta)
        run.log(f"Saved the fine-tuned model {saved.name} to the model store")
        return RunFinished(status=status, model=str(saved), step=step, final_loss=final_loss)
    adapter = saving.save_adapter(config, run.run_dir, ready.model, meta)
    run.log(f"Saved adapter {adapter.name}")
    return RunFinished(status=status, adapter=str(adapter), step=step, final_loss=final_loss)


def _predicted_peak(ready: Setup) -> Optional[int]:
    """The estimator's peak for this very run, for the memory plot to be read against."""
    from engine.memory.estimate import estimate_memory
    from engine.memory.planning import plan_for
    from engine.models.spec import load_model_spec

    kind = ready.device.split(":")[0]
    try:
        plan = plan_for(ready.config, kind, precision=ready.precision)
        estimate = estimate_memory(load_model_spec(ready.model_path), plan, kind)
    except StudioError:
        return None
    return ready.baseline + estimate.peak_allocated_bytes


def _memory_budget(config: RunConfig, device: str) -> int:
    """The memory this run may use, for the out-of-memory advice: its limit, else what the
    device has free before the model loads. A set limit is applied here."""
    from engine.core.units import parse_bytes
    from engine.train import memory_guard

    if config.memory_limit is not None:
        limit = parse_bytes(config.memory_limit)
        memory_guard.cap_memory(limit, device)
        # On the CPU the libraries already loaded count against the limit but not in the estimate.
        return limit - (0 if device.startswith("cuda") else memory_guard.process_memory())
    from engine.hardware import detect_devices

    info = next((d for d in detect_devices() if d.torch_device == device), None)
    return info.free_bytes if info else 0


def _out_of_memory(run: Run, ready: Setup, step: int) -> RunFinished:
    import gc

    from engine.train import memory_guard

    gc.collect()  # the failed step's tensors, so working out the advice has room
    config, train_set = ready.config, ready.examples.train
    lengths = train_set["length"] if "length" in train_set.column_names else None
    event = memory_guard.report(config, ready.model_path, ready.device, step, ready.budget, lengths)
    run.emit(event)
    limit = (f"limit {config.memory_limit}" if config.memory_limit
             else f"{gib(ready.budget)} free at the start")
    return RunFinished(status=RunStatus.FAILED, step=step, error=memory_guard.describe(event, limit))


def _load_tokenizer(model_path: Path) -> Any:
    from engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_examples(run: Run, config: RunConfig, tokenizer: Any) -> Optional[Examples]:
    """The training and validation sets and the dataset's hash; None when stopped meanwhile.

    Rows are tokenised into an Arrow file in the run folder and memory-mapped from there,
    so memory stays flat however large the dataset is. Under torchrun rank 0 writes it
    and the other ranks read what it wrote.
    """
    from datasets import Dataset

    from engine.data.dataset import DataOptions, dataset_fingerprint, open_dataset
    from engine.data.rendering import CHATML_TEMPLATE
    from engine.data.split import split_by_content
    from engine.data.trainable import all_copies, empty_validation
    from engine.data.write import SOURCE_COLUMNS
    from engine.train import preflight
    from engine.train.batching import with_lengths

    source = open_dataset(config.dataset, DataOptions(config.data_format, config.columns or {}, config.text_split))
    preflight.check_data_objective(config, source.format)
    if source.format != "text" and not getattr(tokenizer, "chat_template", None):
        # Set on the tokenizer, so the checkpoints and the adapter keep the template it was trained with.
        tokenizer.chat_template = CHATML_TEMPLATE
        run.log("The model has no chat template: training with ChatML, which is saved with the adapter")
    if config.is_preference:
        return _load_preferences(run, config, source)
    path = run.run_dir / "data" / "examples.arrow"
    with distributed.main_first():
        if run.is_main:
            _tokenise(run, config, source, tokenizer, path)
    if run.stop_requested():  # rank 0 may have stopped tokenising half-way: every rank stops
        return None
    stored = Dataset.from_file(str(path))
    # Split by content, so no copy of a held-out row trains (engine.data.split).
    train_rows, eval_rows = split_by_content(stored["source_hash"], config.val_fraction, config.seed)
    dataset_hash = dataset_fingerprint(config.dataset)
    examples = with_lengths(stored.remove_columns(list(SOURCE_COLUMNS)))
    if not len(eval_rows):
        if config.val_fraction > 0:  # asked for, but too few rows to spare one: as the parent's check says
            raise StudioError(empty_validation(source.name, len(examples), config.val_fraction)
                              if len(examples) < 2 else all_copies(source.name, len(examples)))
        if run.is_main:
            RunDir(run.run_dir).heldout.unlink(missing_ok=True)  # a record only where rows are held out
        return Examples(examples, None, dataset_hash)
    if run.is_main:
        _record_heldout(run, config, source, stored.select(eval_rows), len(train_rows), dataset_hash)
    return Examples(examples.select(train_rows), examples.select(eval_rows), dataset_hash)


def _load_preferences(run: Run, config: RunConfig, source: Any) -> Examples:
    """A preference run's rows, in TRL's conversational layout, split by content as SFT rows are.
    TRL's trainer tokenises them (its own way, which the Data page's preview repeats)."""
    import random

    from datasets import Dataset

    from engine.data.dataset import dataset_fingerprint
    from engine.data.preference import read_preferences
    from engine.data.split import split_by_content
    from engine.data.trainable import all_copies, empty_validation

    read = read_preferences(source, objective=config.objective, bad_rows=config.bad_rows)
    if read.bad_rows or read.identical:
        first = f"; the first is at {read.problems[0].where()}: {read.problems[0].reason}" if read.problems else ""
        run.log(f"Skipping {read.bad_rows:,} bad and {read.identical:,} identical pairs of {read.total_rows:,}{first}",
                level="warning")
    train_rows, eval_rows = split_by_content(read.hashes, config.val_fraction, config.seed)
    if config.val_fraction > 0 and not len(eval_rows):
        raise StudioError(empty_validation(source.name, len(read.rows), config.val_fraction)
                          if len(read.rows) < 2 else all_copies(source.name, len(read.rows)))
    if config.objective == "kto":
        # KTO reads its rows in order (engine.train.preference): shuffle them once, with the run's seed,
        # so a batch mixes good and bad answers however the file is sorted.
        train_rows = list(train_rows)
        random.Random(config.seed).shuffle(train_rows)
    rows = Dataset.from_list(read.rows)
    noun = "answers" if config.objective == "kto" else "pairs"
    run.log(f"Dataset {source.name}, read as {source.layout.title}: {len(train_rows):,} {noun} to learn from"
            + (f", {len(eval_rows):,} held out" if len(eval_rows) else ""))
    return Examples(rows.select(train_rows), rows.select(eval_rows) if len(eval_rows) else None,
                    dataset_fingerprint(config.dataset))


def _record_heldout(run: Run, config: RunConfig, source: Any, held_out: Any, train_examples: int,
                    dataset_hash: str) -> None:
    """Write the run's record of the rows it held out (``engine.data.heldout``), and say when
    copies held out together made the share differ from the count the Data page showed."""
    from engine.data.dataset import DataOptions
    from engine.data.heldout import write_heldout
    from engine.data.split import split_counts
    from engine.data.write import SOURCE_COLUMNS

    columns = held_out.select_columns(list(SOURCE_COLUMNS)).to_dict()
    rows = [{"row": row, "line": line, "file": file, "unit": unit, "hash": digest}
            for row, line, file, unit, digest in zip(*(columns[name] for name in SOURCE_COLUMNS))]
    options = DataOptions(source.format, dict(source.mapping), source.text_split or config.text_split)
    write_heldout(run.run_dir, dataset=str(config.dataset), options=options, sha256=dataset_hash, seed=config.seed,
                  val_fraction=config.val_fraction, train_examples=train_examples, rows=rows)
    expected = split_counts(train_examples + len(rows), config.val_fraction)[1]
    if len(rows) != expected:
        run.log(f"Held out {len(rows):,} rows rather than {expected:,}: copies of a row are held out together, "
                "so none of them is trained on")


def _tokenise(run: Run, config: RunConfig, source: Any, tokenizer: Any, path: Path) -> None:
    """Write the examples file (nothing when stopped meanwhile)."""
    from engine.data.trainable import bad_rows_stop, untrainable
    from engine.data.write import write_examples

    written = write_examples(source, tokenizer, config.max_length, path, train_on=config.train_on,
                             progress=_tokenising_progress(run), cancelled=run.stop_requested_here)
    if written is None:
        return
    stats = written.stats
    if not stats.examples:  # the words the parent's check (engine.data.trainable) refuses such data with
        raise StudioError(untrainable(source.name, written.counts, config.max_length))
    if written.bad_rows:
        first = written.problems[0]
        if config.bad_rows == "stop":
            raise StudioError(bad_rows_stop(first, bad=written.bad_rows, total=written.total_rows))
        bad = f"{written.bad_rows:,} bad row{'' if written.bad_rows == 1 else 's'}"
        run.log(f"Skipping {bad} of {written.total_rows:,}; the first is at {first.where()}: {first.reason}",
                level="warning")
    run.log(f"Dataset {source.name}, read as {source.layout.title}: {stats.trained_tokens:,} tokens to learn")
    # The counts the Data page showed for these settings, in the same words.
    run.log(written.row_counts(config.val_fraction).sentence())


def _tokenising_progress(run: Run) -> Callable[[float], None]:
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


def _load_and_attach(run: Run, config: RunConfig, model_path: Path, tokenizer: Any, device: str,
                     precision: str) -> Any:
    from transformers import set_seed

    from engine.train import loading, methods

    quantised = f", {config.quant.upper()} {'double-quantised ' if config.double_quant else ''}base" \
        if config.method == "qlora" else ""
    run.log(f"Loading {model_path.name} on {device} in {loading.weights_dtype(config, precision)}{quantised}")
    # Seeded before the adapter is made: its random initialisation is part of the run's identity.
    set_seed(config.seed)
    model = loading.load_model(model_path, config, precision, device)
    if config.from_adapter:
        from engine.train import preflight, preference

        start = preflight.start_adapter(config, model_path)
        run.log(f"Starting from adapter {config.from_adapter}: its own rank and targets train on")
        model = preference.start_from_adapter(model, config, start)
    else:
        model = methods.attach(model, config, tokenizer)
    trainable, total = parameter_counts(model)
    run.log(f"{config.method.upper()}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)")
    return model


def parameter_counts(model: Any) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return (sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters()))


def _loss_curve(state: Any, config: RunConfig) -> list[tuple[int, float]]:
    """The result's loss curve: every step of the run, from the trainer state, not only this
    process's steps (the callback's), so a resumed run keeps the steps before its checkpoint.
    A continued run ("train more") is a new result: its curve starts after ``schedule_start``."""
    return [(entry["step"], entry["loss"]) for entry in state.log_history
            if "loss" in entry and entry["step"] > config.schedule_start]


def _last_checkpoint(run: Run) -> Optional[str]:
    """The newest complete, undamaged checkpoint. Checkpoints are renamed into place only
    once written (``engine.train.trainer``); a folder that still lacks its trainer state or
    holds a truncated weights file was damaged afterwards and is skipped, with a warning."""
    RunDir(run.run_dir).checkpoints.mkdir(exist_ok=True)
    clear_checkpoint_staging(run.run_dir)  # a killed save's half-written folder
    for folder in checkpoint_folders(run.run_dir):
        problem = checkpoint_problem(folder)
        if problem is None:
            run.log(f"Resuming from {folder.name}")
            return str(folder)
        run.log(f"Skipping {folder.name}: {problem}", level="warning")
    return None


def build_trainer(run: Run, ready: Setup, on_train_begin: Callable[[int], None]) -> tuple[Any, Any]:
    """The Trainer for a set-up run, with the callback that reports it and obeys pause/stop."""
    from transformers import EarlyStoppingCallback

    from engine.train import pure_bf16, trackers
    from engine.train.batching import make_collator
    from engine.train.callback import EventCallback

    config, examples = ready.config, ready.examples
    if config.is_preference:
        return _preference_trainer(run, ready, on_train_begin)
    reporting = _trackers(run, config)
    args = training_arguments(config, run.run_dir, examples=len(examples.train), has_eval=examples.eval is not None,
                              device=ready.device, precision=ready.precision, report_to=reporting.report_to)
    callback = EventCallback(run.emit, run.control, ready.device, on_train_begin=on_train_begin)
    callbacks: list[Any] = [callback]
    if args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = StudioTrainer(
        model=ready.model,
        args=args,
        train_dataset=examples.train,
        eval_dataset=examples.eval,
        data_collator=make_collator(ready.tokenizer, config.batching),
        processing_class=ready.tokenizer,
        callbacks=callbacks,
        optimizer_cls_and_kwargs=pure_bf16.optimizer_cls_and_kwargs(config, ready.precision, args),
        schedule_start=config.schedule_start,
    )
    trackers.guard(trainer, reporting, _tracker_warning(run))
    return trainer, callback


def _trackers(run: Run, config: RunConfig) -> Any:
    """The experiment trackers this run reports to (``engine.train.trackers``), their environment set
    and what each does said in the log; one that cannot start is said to be off, and left out."""
    from engine.train import trackers

    reporting = trackers.prepare(config, run.run_dir, _tracker_warning(run))
    trackers.apply(reporting)
    for note in reporting.notes:
        run.log(f"Reporting to {note}")
    return reporting


def _tracker_warning(run: Run) -> Callable[[str], None]:
    return lambda message: run.log(message, level="warning")


def _preference_trainer(run: Run, ready: Setup, on_train_begin: Callable[[int], None]) -> tuple[Any, Any]:
    """TRL's trainer for the run's objective, with the same callback, optimizer and checkpoints."""
    from transformers import EarlyStoppingCallback

    from engine.train import preference, preflight, pure_bf16, trackers
    from engine.train.callback import EventCallback

    config, examples = ready.config, ready.examples
    reporting = _trackers(run, config)
    args = preference.arguments(config, run.run_dir, examples=len(examples.train), has_eval=examples.eval is not None,
                                device=ready.device, precision=ready.precision, report_to=reporting.report_to)
    callback = EventCallback(run.emit, run.control, ready.device, on_train_begin=on_train_begin)
    callbacks: list[Any] = [callback]
    if args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    reference = None
    if preference.needs_reference_copy(config):
        run.log("Loading a second copy of the model as the reference")
        start = preflight.start_adapter(config, ready.model_path) if config.from_adapter else None
        reference = preference.load_reference(config, ready.model_path, ready.precision, ready.device, start)
    trainer = preference.build(config, args, ready.model, ready.tokenizer, examples.train, examples.eval, callbacks,
                               pure_bf16.optimizer_cls_and_kwargs(config, ready.precision, args), reference)
    trackers.guard(trainer, reporting, _tracker_warning(run))
    return trainer, callback
