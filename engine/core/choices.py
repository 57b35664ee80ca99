"""The vocabulary of choices: every allowed value of a setting, defined once.

``RunConfig``, the memory ``Plan``, the CLI's ``choices=`` and the studio's combo boxes all
read these. Each is a ``Literal`` type (for annotations) and the tuple of its values, in the
order the studio lists them.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal, get_args

Method = Literal["lora", "dora", "qlora", "full", "prompt", "prefix", "ptuning"]
METHODS: tuple[str, ...] = get_args(Method)
LORA_METHODS = ("lora", "dora", "qlora")  # the methods that train low-rank updates of linear layers
PROMPT_METHODS = ("prompt", "prefix", "ptuning")  # the methods that train virtual tokens
METHOD_LABELS = {"lora": "LoRA", "dora": "DoRA", "qlora": "QLoRA", "full": "full fine-tuning",
                 "prompt": "prompt tuning", "prefix": "prefix tuning", "ptuning": "P-tuning"}

# What a run learns from: supervised replies (SFT), or preferences between answers, each run
# with TRL's trainer of that name (engine.train.preference). SimPO is TRL's CPO trainer with
# its SimPO loss. Every objective trains over LoRA, DoRA, QLoRA or full fine-tuning.
Objective = Literal["sft", "dpo", "orpo", "kto", "simpo"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
PREFERENCE_OBJECTIVES = ("dpo", "orpo", "kto", "simpo")
PAIRED_OBJECTIVES = ("dpo", "orpo", "simpo")  # these read chosen / rejected pairs; KTO reads one labelled answer
REFERENCE_OBJECTIVES = ("dpo", "kto")  # these compare against a frozen reference model; ORPO and SimPO do not
OBJECTIVE_LABELS = {"sft": "supervised (SFT)", "dpo": "DPO", "orpo": "ORPO", "kto": "KTO", "simpo": "SimPO"}
PREFERENCE_METHODS = ("lora", "dora", "qlora", "full")  # what a preference objective can train
# DPO's losses offered (TRL's loss_type): the paper's sigmoid, IPO, hinge (SLiC), and robust DPO
# (which reads the label smoothing as the share of pairs thought mislabelled).
DpoLoss = Literal["sigmoid", "ipo", "hinge", "robust"]
DPO_LOSSES: tuple[str, ...] = get_args(DpoLoss)

TargetPreset = Literal["q,v", "attention", "all-linear"]
TARGET_PRESETS: tuple[str, ...] = get_args(TargetPreset)

# What a run computes in once ``auto`` is resolved (engine.memory.planning.run_precision).
Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
PrecisionChoice = Literal["auto", Precision]  # what a user may ask for
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionChoice)
COMPUTE_DTYPES = ("auto", "bf16", "fp16", "fp32")  # what QLoRA's 4-bit layers compute in
# Full fine-tuning with bf16 weights, gradients and optimizer states (engine.train.pure_bf16).
PureBf16 = Literal["auto", "on", "off"]
PURE_BF16_CHOICES: tuple[str, ...] = get_args(PureBf16)

Quant = Literal["nf4", "fp4", "int8"]  # 4-bit NormalFloat or FloatingPoint (QLoRA), or LLM.int8 loading
QUANTS: tuple[str, ...] = get_args(Quant)

Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

Scheduler = Literal["constant", "linear", "cosine"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)

Batching = Literal["padded", "padding_free"]
BATCHING: tuple[str, ...] = get_args(Batching)

# The experiment trackers a run can report to, through the Trainer's report_to
# (engine.train.trackers owns where each writes and what each may send).
Tracker = Literal["tensorboard", "mlflow", "wandb"]
TRACKERS: tuple[str, ...] = get_args(Tracker)
TRACKER_LABELS = {"tensorboard": "TensorBoard", "mlflow": "MLflow", "wandb": "Weights & Biases"}

PROMPT_INITS = ("random", "text")
BAD_ROWS = ("skip", "stop")  # train on the good rows, or stop at the first bad one

# Datasets: the row layouts engine.data.formats reads, and how plain text is split.
DatasetFormat = Literal["messages", "sharegpt", "alpaca", "prompt_completion", "qa", "text",
                        "preference", "preference_conversations", "sharegpt_preference", "unpaired_preference"]
DATASET_FORMATS: tuple[str, ...] = get_args(DatasetFormat)
# The preference layouts (engine.data.preference): prompt / chosen / rejected (strings or message
# lists); whole chosen / rejected conversations sharing a prefix (HH-RLHF); ShareGPT conversations
# with chosen / rejected turns; and KTO's prompt / completion / label.
PAIRED_FORMATS = ("preference", "preference_conversations", "sharegpt_preference")
PREFERENCE_FORMATS = (*PAIRED_FORMATS, "unpaired_preference")
SFT_FORMATS = tuple(name for name in DATASET_FORMATS if name not in PREFERENCE_FORMATS)
TRAIN_ON = ("assistant", "all")  # the loss on the replies only, or on every token
TEXT_SPLITS = ("auto", "lines", "chunks")


def resolve_precision(requested: str, device_kind: str, bf16: bool) -> str:
    """What a run asking for ``requested`` computes in on a ``device_kind`` device (``bf16``:
    whether it computes bf16 natively). ``auto`` takes 16-bit mixed precision only on CUDA,
    bf16 where the GPU has it (Ampere and later) and fp16 with loss scaling before; CPUs and
    Apple GPUs train in fp32, which autocast would not speed up there."""
    if requested != "auto":
        return requested
    if device_kind == "cuda":
        return "bf16" if bf16 else "fp16"
    return "fp32"


def resolve_pure_bf16(requested: str, method: str, precision: str) -> bool:
    """Whether a run trains in pure bf16 (bf16 weights, gradients and optimizer states, no fp32
    masters): ``auto`` wherever it can, that is full fine-tuning whose precision resolved to bf16.
    ``on`` anywhere else is refused before this is asked (``pure_bf16_problem``)."""
    return requested != "off" and method == "full" and precision == "bf16"


def pure_bf16_problem(requested: str, method: str, precision: str) -> str | None:
    """Why pure bf16 cannot be ``requested`` with this method and precision (as asked, or as
    resolved on the machine), or None. One rule for the config's check and the preflight's."""
    if requested != "on":
        return None
    if method != "full":
        return (f"pure bf16 applies to full fine-tuning only ({METHOD_LABELS.get(method, method)} trains fp32 "
                "weights beside a frozen base): set pure_bf16 to auto or off")
    if precision not in ("bf16", "auto"):
        return (f"pure bf16 trains in bf16 and this run computes in {precision}: set the precision to bf16, "
                "or pure_bf16 to auto or off")
    return None


class RunStatus(str, Enum):
    """Where a run stands. Compares equal to its value, and is written to JSON as that string."""

    RUNNING = "running"
    COMPLETED = "completed"  # it trained every step it was asked for
    STOPPED = "stopped"  # the user stopped it; what it learnt so far was saved
    FAILED = "failed"  # an error ended it (out of memory, bad data...)
    INTERRUPTED = "interrupted"  # its process died without a word (killed, the machine went down)

    def __str__(self) -> str:
        return self.value


# Runs that ended as asked, whose adapter can be trained further (Train more).
ENDED_WELL = (RunStatus.COMPLETED, RunStatus.STOPPED)
