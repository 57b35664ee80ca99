"""The run configuration: the one object the studio edits, the CLI reads and
``config.json`` in a run directory stores.

``validate`` refuses what is wrong whatever the machine (a rank of 0, early stopping
without a validation split); what depends on the machine or the model (fp16 on a CPU,
prefix tuning on an architecture without key/value caches) is checked by
``engine.train.preflight`` before a run starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from engine.core.choices import (Batching, DpoLoss, Method, Objective, Optimizer, PrecisionChoice, PureBf16, Quant,
                                 Scheduler, BAD_ROWS, BATCHING, COMPUTE_DTYPES, DATASET_FORMATS, DPO_LOSSES,
                                 LORA_METHODS, METHOD_LABELS, METHODS, OBJECTIVE_LABELS, OBJECTIVES, OPTIMIZERS,
                                 PRECISION_CHOICES, PREFERENCE_METHODS, PREFERENCE_OBJECTIVES, PROMPT_INITS,
                                 PROMPT_METHODS, PURE_BF16_CHOICES, QUANTS, SCHEDULERS, TARGET_PRESETS, TEXT_SPLITS,
                                 TRACKERS, TRAIN_ON, Tracker, pure_bf16_problem)
from engine.core.checks import (MAX_BATCH, MAX_LENGTH, MAX_RANK, MAX_SEED, MAX_STEPS, MAX_VIRTUAL_TOKENS, fraction,
                                in_range, positive, shown, text, whole)
from engine.core.names import is_valid_name
from engine.errors import StudioError

MAX_VAL_FRACTION = 0.5
# A module name as peft matches it: the last part of a dotted path, e.g. q_proj or gate_up_proj.
# Matched whole (fullmatch): "q_proj\n" is no module name.
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Beyond these no run learns anything (the studio's spin boxes stop well below them).
_MAX_ALPHA = 65536.0
_MAX_EPOCHS = 10_000.0
_MAX_GRAD_NORM = 1e6
_MAX_PROMPT_TEXT = 100_000
_MAX_BETA = 100.0  # preference objectives' beta: 0.01 to 1 in practice
_MAX_PREFERENCE_WEIGHT = 100.0  # KTO's desirable / undesirable weights
_MAX_CONFIG_BYTES = 1 << 20  # a run's config.json is a few KiB; its longest field is the prompt init text


def check_val_fraction(value: Any) -> float:
    """The share of rows held out for validation: 0 (none) up to ``MAX_VAL_FRACTION``."""
    return in_range("validation share", value, 0, MAX_VAL_FRACTION)


@dataclass
class RunConfig:
    model: str
    dataset: str
    method: Method = "lora"
    # What it learns from: supervised replies, or preferences (engine.train.preference) ---------
    objective: Objective = "sft"
    beta: float = 0.1  # how far the trained model may move from the reference (DPO, KTO) or the odds weight (ORPO)
    dpo_loss: DpoLoss = "sigmoid"
    # DPO against a uniform reference (the reference's log-probabilities read as 0): no
    # reference forward pass, and no reference copy for full fine-tuning.
    reference_free: bool = False
    label_smoothing: float = 0.0  # robust DPO: the share of pairs thought mislabelled, below 0.5
    # DPO: the weight of a supervised loss on the chosen answers beside DPO's (RPO; LLaMA-Factory's
    # pref_ftx). DPO alone may lower the chosen answers' likelihood along with the rejected ones';
    # this keeps the model writing what was chosen. 0 is plain DPO.
    sft_weight: float = 0.0
    simpo_gamma: float = 0.5  # SimPO: the reward margin it aims for between chosen and rejected
    desirable_weight: float = 1.0  # KTO: the weight of the answers labelled good
    undesirable_weight: float = 1.0  # KTO: the weight of the answers labelled bad
    # Start from a trained adapter (a library name or a PEFT folder), e.g. SFT then DPO; it
    # is also the reference a preference run is measured against.
    from_adapter: Optional[str] = None
    # LoRA family ------------------------------------------------------------------------------
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    use_rslora: bool = False  # scale by alpha/sqrt(rank) instead of alpha/rank
    # A preset (q,v / attention / all-linear) or the model's own module names, comma-separated.
    targets: str = "all-linear"
    # QLoRA: the frozen base in 4 bits (nf4, fp4) or 8 bits (int8) ------------------------------
    quant: Quant = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"  # what the 4-bit layers compute in; auto follows the precision
    # Prompt tuning, prefix tuning, P-tuning --------------------------------------------------
    num_virtual_tokens: int = 20
    prompt_init: str = "random"  # prompt tuning only: random vectors, or the embeddings of a text
    prompt_init_text: Optional[str] = None
    prefix_projection: bool = False  # prefix tuning: train through a reparametrising MLP
    # How long --------------------------------------------------------------------------------
    max_steps: Optional[int] = None
    epochs: float = 1.0
    # The optimizer and its schedule ----------------------------------------------------------
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lr: float = 2e-4
    optimizer: Optimizer = "adamw"
    lr_scheduler: Scheduler = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 turns clipping off
    grad_checkpointing: bool = False
    batching: Batching = "padded"  # padded batches, or each batch's rows packed into one without padding
    group_by_length: bool = False  # batch rows of similar length together (less padding)
    # Evaluation, checkpoints, logs -----------------------------------------------------------
    save_every: int = 0
    eval_every: int = 0
    log_every: int = 0
    keep_checkpoints: int = 3  # the newest N (and the best, with early stopping); 0 keeps all
    early_stopping_patience: int = 0  # stop after N evaluations without a better eval loss; 0 never
    # Experiment trackers to report to beside the studio's own events (engine.train.trackers):
    # their files go into the run folder; nothing leaves the machine unless mlflow_uri is a
    # server's address or the user is logged in to Weights & Biases.
    report_to: list[Tracker] = field(default_factory=list)
    mlflow_uri: Optional[str] = None  # None: a local store in RUN_DIR/mlruns
    seed: int = 42
    name: Optional[str] = None
    precision: PrecisionChoice = "auto"
    # Full fine-tuning in bf16 without fp32 master weights: bf16 weights, gradients and AdamW
    # states with Kahan-compensated updates, about half the memory. auto: on for full
    # fine-tuning whenever the precision resolves to bf16 (engine.core.choices.resolve_pure_bf16).
    pure_bf16: PureBf16 = "auto"
    device: str = "auto"
    # Cap this run's memory (e.g. "6GiB") to leave room for other programs; None: all there is.
    memory_limit: Optional[str] = None
    # "Train more": the step a continued run's new learning-rate schedule starts from.
    schedule_start: int = 0
    # Many GPUs (see the README's FSDP / DeepSpeed section): an FSDP config ({} for its defaults)
    # or a DeepSpeed JSON file, handed to the Trainer as they are.
    fsdp: Optional[dict[str, Any]] = None
    deepspeed: Optional[str] = None
    # How to read the dataset: None/empty detect the format and columns (see engine.data.formats).
    data_format: Optional[str] = None
    columns: Optional[dict[str, str]] = None
    text_split: str = "auto"
    train_on: str = "assistant"  # the loss on the assistant's replies only, or on every token
    val_fraction: float = 0.0  # share of the rows held out to measure the eval loss
    # When the run completes with an adapter, score it against the base on the held-out rows
    # (engine.eval.after_run), started by the studio or the CLI that ran it, never by the
    # training child. Applies only with a validation share: with none, nothing is held out.
    evaluate_at_end: bool = True
    bad_rows: str = "skip"  # train on the good rows, or stop when any row is bad

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudioError(f"unknown run setting(s): {', '.join(unknown)}")
        missing = [name for name in ("model", "dataset") if name not in data]
        if missing:
            raise StudioError(f"run config is missing {', '.join(missing)}")
        config = cls(**data)
        config.validate()
        return config

    @classmethod
    def load(cls, path: Path) -> "RunConfig":
        try:
            if Path(path).stat().st_size > _MAX_CONFIG_BYTES:
                raise StudioError(f"run config {path} is over {_MAX_CONFIG_BYTES // 1024} KiB: no run config is that long")
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StudioError(f"run config not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise StudioError(f"run config {path} is not valid JSON: {exc}") from None
        except RecursionError:  # "[[[[..." nested deeper than the parser goes
            raise StudioError(f"run config {path} is nested too deeply to be a run config") from None
        if not isinstance(data, dict):
            raise StudioError(f"run config {path} must be a JSON object")
        return cls.from_dict(data)

    # what kind of run -------------------------------------------------------------------------
    @property
    def is_preference(self) -> bool:
        return self.objective in PREFERENCE_OBJECTIVES

    @property
    def uses_lora(self) -> bool:
        return self.method in LORA_METHODS

    @property
    def uses_prompt(self) -> bool:
        return self.method in PROMPT_METHODS

    @property
    def target_modules(self) -> Optional[list[str]]:
        """The module names given instead of a preset, or None for a preset."""
        if self.targets in TARGET_PRESETS:
            return None
        return [name.strip() for name in self.targets.split(",") if name.strip()]

    # validation -------------------------------------------------------------------------------
    def validate(self) -> None:
        self._validate_types()
        self._validate_choices()
        self._validate_numbers()
        self._validate_method_settings()
        self._validate_objective()
        self._validate_schedule()
        self._validate_data_settings()
        self._validate_trackers()
        if self.name is not None and not is_valid_name(self.name):
            raise StudioError(
                f"adapter name {self.name!r} may only use letters, digits, '.', '_' and '-' (at most 80)"
            )

    def _validate_choices(self) -> None:
        for label, value, allowed in (
            ("method", self.method, METHODS), ("precision", self.precision, PRECISION_CHOICES),
            ("quantisation", self.quant, QUANTS), ("compute dtype", self.compute_dtype, COMPUTE_DTYPES),
            ("optimizer", self.optimizer, OPTIMIZERS), ("learning-rate schedule", self.lr_scheduler, SCHEDULERS),
            ("batching", self.batching, BATCHING), ("prompt init", self.prompt_init, PROMPT_INITS),
            ("pure bf16 setting", self.pure_bf16, PURE_BF16_CHOICES), ("objective", self.objective, OBJECTIVES),
            ("DPO loss", self.dpo_loss, DPO_LOSSES),
        ):
            if value not in allowed:
                raise StudioError(f"unknown {label} {value!r}; choose one of {', '.join(allowed)}")
        if not self.targets.strip():
            raise StudioError("targets must be q,v, attention, all-linear or module names such as q_proj,v_proj")
        modules = self.target_modules
        if modules is not None:
            bad = [name for name in modules if not _MODULE_RE.fullmatch(name)]
            if bad or not modules:
                raise StudioError(f"unknown targets {self.targets!r}; choose one of {', '.join(TARGET_PRESETS)} "
                                  "or give module names such as q_proj,v_proj")

    def _validate_types(self) -> None:
        """Every field of the type its annotation gives, before any rule reads one: an edited
        config.json may hold "16" for a rank, a list for a path or a name with a line break."""
        hints = get_type_hints(RunConfig)
        for item in fields(self):
            if item.name not in ("name", "prompt_init_text"):  # the name rule, and a text of many lines (below)
                _check_type(item.name.replace("_", " "), getattr(self, item.name), hints[item.name])
        if self.prompt_init_text is not None:
            text("prompt init text", self.prompt_init_text, limit=_MAX_PROMPT_TEXT, lines=True)

    def _validate_numbers(self) -> None:
        _count("rank", self.rank, MAX_RANK)
        positive("alpha", self.alpha, float)
        in_range("alpha", self.alpha, high=_MAX_ALPHA)
        _count("batch size", self.batch_size, MAX_BATCH)
        _count("gradient accumulation", self.grad_accum, MAX_BATCH)
        _count("max length", self.max_length, MAX_LENGTH)
        # No ceiling: a learning rate that blows the loss up is stopped by the training's own guard.
        positive("learning rate", self.lr, float)
        _count("virtual tokens", self.num_virtual_tokens, MAX_VIRTUAL_TOKENS)
        if self.max_steps is not None:
            _count("max steps", self.max_steps, MAX_STEPS)
        positive("epochs", self.epochs, float)
        in_range("epochs", self.epochs, high=_MAX_EPOCHS)
        fraction("dropout", self.dropout, high_open=True)
        fraction("weight decay", self.weight_decay)
        in_range("max grad norm", self.max_grad_norm, 0, _MAX_GRAD_NORM)
        for name in ("save_every", "eval_every", "log_every", "warmup_steps", "keep_checkpoints",
                     "early_stopping_patience", "schedule_start"):
            whole(name.replace("_", " "), getattr(self, name), 0, MAX_STEPS)
        whole("seed", self.seed, 0, MAX_SEED)
        if self.memory_limit is not None:
            from engine.core.units import parse_bytes

            parse_bytes(self.memory_limit)

    def _validate_method_settings(self) -> None:
        if self.use_rslora and not self.uses_lora:
            raise StudioError(f"rsLoRA scales a LoRA update; {self.method} has none: turn rsLoRA off")
        if self.method == "prompt" and self.prompt_init == "text" and not (self.prompt_init_text or "").strip():
            raise StudioError("prompt tuning from a text needs the text: give prompt_init_text, or init random")
        problem = pure_bf16_problem(self.pure_bf16, self.method, self.precision)
        if problem:
            raise StudioError(problem)
        if self.uses_prompt and self.batching == "padding_free":
            raise StudioError(f"{self.method} tuning puts virtual tokens in front of every row, which padding-free "
                              "batching cannot do: use padded batches")

    def _validate_objective(self) -> None:
        positive("beta", self.beta, float)
        in_range("beta", self.beta, high=_MAX_BETA)
        in_range("label smoothing", self.label_smoothing, 0, 0.5)
        if self.label_smoothing >= 0.5:
            raise StudioError("label smoothing is the share of pairs thought mislabelled: give a value below 0.5")
        in_range("SimPO gamma", self.simpo_gamma, 0, _MAX_BETA)
        in_range("SFT weight", self.sft_weight, 0, _MAX_PREFERENCE_WEIGHT)
        for name in ("desirable_weight", "undesirable_weight"):
            positive(name.replace("_", " "), getattr(self, name), float)
            in_range(name.replace("_", " "), getattr(self, name), high=_MAX_PREFERENCE_WEIGHT)
        if self.from_adapter is not None:
            text("from adapter", self.from_adapter)
        if not self.is_preference:
            return
        label = OBJECTIVE_LABELS[self.objective]
        if self.method not in PREFERENCE_METHODS:
            raise StudioError(f"{label} trains LoRA, DoRA, QLoRA or full fine-tuning, not "
                              f"{METHOD_LABELS[self.method]}: pick one of those methods")
        if self.reference_free and self.objective != "dpo":
            raise StudioError(f"reference-free is a DPO setting; {label} has "
                              f"{'no reference to drop' if self.objective in ('orpo', 'simpo') else 'its own reference'}"
                              ": turn reference-free off")
        if self.label_smoothing and not (self.objective == "dpo" and self.dpo_loss == "robust"):
            raise StudioError("label smoothing applies to DPO's robust loss only: set it to 0, or pick dpo_loss robust")
        if self.sft_weight and self.objective != "dpo":
            raise StudioError(f"the SFT weight adds a supervised loss to DPO's; {label} "
                              f"{'has its own' if self.objective in ('orpo', 'simpo') else 'has none'}: set it to 0")
        if self.batching == "padding_free":
            raise StudioError(f"{label} batches each prompt with its answers, which padding-free batching cannot "
                              "do: use padded batches")
        if self.train_on != "assistant":
            raise StudioError(f"{label} learns from the answers only: set train on to assistant")

    def _validate_schedule(self) -> None:
        if self.early_stopping_patience and not self.val_fraction:
            raise StudioError("early stopping watches the eval loss: hold out a validation share "
                              "(val_fraction) or turn early stopping off")
        if self.max_steps is not None and self.schedule_start >= self.max_steps:
            raise StudioError(f"the run already has {self.schedule_start} steps: ask for more than that "
                              f"(max steps is {self.max_steps})")
        if self.deepspeed is not None and not isinstance(self.deepspeed, str):
            raise StudioError("deepspeed must be the path of a DeepSpeed JSON config")
        if self.fsdp is not None and not isinstance(self.fsdp, dict):
            raise StudioError("fsdp must be a JSON object of FSDP settings ({} for the defaults)")
        if self.fsdp is not None and self.deepspeed is not None:
            raise StudioError("choose FSDP or DeepSpeed, not both")

    def _validate_trackers(self) -> None:
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise StudioError(f"unknown tracker {unknown[0]!r}; choose among {', '.join(TRACKERS)}")
        if len(set(self.report_to)) != len(self.report_to):
            raise StudioError(f"report_to names a tracker twice: {', '.join(self.report_to)}")
        if self.mlflow_uri is None:
            return
        if "mlflow" not in self.report_to:
            raise StudioError("an MLflow tracking URI is for reporting to MLflow: add mlflow to report_to, "
                              "or leave the URI out")
        if not self.mlflow_uri.strip() or any(character.isspace() for character in self.mlflow_uri):
            raise StudioError(f"MLflow tracking URI {self.mlflow_uri!r} must be an address or a path without spaces")
        address = urlsplit(self.mlflow_uri)
        if address.scheme in ("http", "https") and not address.hostname:
            raise StudioError(f"MLflow tracking URI {self.mlflow_uri!r} names no server: give e.g. "
                              "http://localhost:5000")

    def _validate_data_settings(self) -> None:
        for name, value, allowed in (("data format", self.data_format, (None, *DATASET_FORMATS)),
                                     ("text split", self.text_split, TEXT_SPLITS),
                                     ("train on", self.train_on, TRAIN_ON), ("bad rows", self.bad_rows, BAD_ROWS)):
            if value not in allowed:
                raise StudioError(f"unknown {name} {value!r}; choose one of "
                                  f"{', '.join(str(a) for a in allowed if a is not None)}")
        if self.columns is not None and not (
                isinstance(self.columns, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items())):
            raise StudioError("columns must map field names to column names, e.g. {\"question\": \"prompt\"}")
        check_val_fraction(self.val_fraction)


def _count(name: str, value: Any, high: int) -> None:
    """A positive whole number up to ``high``."""
    positive(name, value)  # "must be a positive number" for "16" or nan
    whole(name, value, 1, high)  # and for 16.0 or true, "must be a whole number"


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Refuse ``value`` unless it is of the type ``hint`` (a field's annotation) names. Numbers are
    left to their own rules (``_validate_numbers``: type and range at once), and choices (Literals)
    need only be text here: ``_validate_choices`` says which ones there are."""
    if get_origin(hint) is Union:  # Optional[X]
        if value is None:
            return
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    origin = get_origin(hint)
    if hint is bool and not isinstance(value, bool):
        raise StudioError(f"{name} must be true or false, got {shown(value)}")
    if hint is str or origin is Literal:
        text(name, value)
    if origin is list:
        if not isinstance(value, list):
            raise StudioError(f"{name} must be a JSON list, got {shown(value)}")
        for item in value:
            text(f"an item of {name}", item)
    if origin is dict:
        if not isinstance(value, dict):
            raise StudioError(f"{name} must be a JSON object, got {shown(value)}")
        for key, item in value.items():
            text(f"a key of {name}", key)
            if get_args(hint)[1] is str:
                text(f"{name} {key!r}", item)
