"""The Train page's settings form: every run setting, each with a tooltip that says what it
does and when to change it, in a simple mode (a preset and the handful that matter) or an
advanced one (everything).

The form speaks RunConfig field names: ``values()`` gives them, ``apply()`` takes them,
so presets, remembered per-model settings, an auto-fit plan and "train more" all go
through the same two calls.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.core.choices import (DPO_LOSSES, LORA_METHODS, METHOD_LABELS, METHODS, OBJECTIVE_LABELS, OBJECTIVES,
                                 PREFERENCE_OBJECTIVES, PROMPT_METHODS, TARGET_PRESETS, TRACKER_LABELS, TRACKERS)
from engine.errors import StudioError
from engine.run.config import RunConfig

# What may stand in a learning-rate box while it is typed: digits, a point, an exponent.
_NUMBER_PREFIX = re.compile(r"\d*\.?\d*(?:[eE][-+]?\d*)?")
CUSTOM_TARGETS = "custom"
NEW_ADAPTER = "None: a new adapter on the base"
MAX_LENGTH_RANGE = (16, 1_048_576)  # tokens; the Data page's max length is the same setting

TIPS = {
    "objective": "What the run learns from. Supervised (SFT) learns to write the replies in your data. The others "
                 "learn which of two answers is better, from preference pairs (a chosen and a rejected answer, e.g. "
                 "made in Compare): DPO is the standard one and compares against the model it starts from; ORPO "
                 "learns the chosen answers and the preference in one pass, with no reference model (less memory); "
                 "SimPO needs no reference either and scores answers by their average word likelihood; KTO learns "
                 "from single answers marked good or bad, no pairs needed. The usual recipe: SFT first, then DPO "
                 "from that adapter.",
    "from_adapter": "Go on training an adapter from the library instead of a new one on the bare base: the usual "
                    "recipe trains SFT first, then DPO from that adapter. The run keeps the adapter's method, rank "
                    "and layers, and a preference run measures its progress against the adapter as it was.",
    "beta": "How far training may move the model from where it started. Low values (0.01-0.1) let it change more to "
            "favour the chosen answers; higher ones (0.3-0.5) keep it closer to the start, safer against drifting "
            "into odd text. 0.1 is the usual value for DPO, KTO and ORPO (where it weighs the preference against "
            "learning the chosen answers); SimPO's paper uses about 2.",
    "dpo_loss": "The formula DPO trains with. Sigmoid is the original DPO and the usual choice. IPO keeps the model "
                "from overfitting when the pairs are few or very clear-cut. Hinge (SLiC) stops pushing a pair once "
                "its chosen answer leads by enough. Robust expects some pairs to be the wrong way round (say how "
                "many with the label smoothing).",
    "reference_free": "Score the answers without a reference model: each is measured against a flat baseline "
                      "instead of the model the run started from. Saves the reference's pass over every batch "
                      "(faster) and, for full fine-tuning, its copy in memory; the model may drift further. "
                      "DPO only.",
    "label_smoothing": "Robust DPO: the share of your pairs you think are the wrong way round (the 'chosen' answer "
                       "is really the worse), from 0 to below 0.5; e.g. 0.1 when about one pair in ten may be "
                       "mislabelled. Training then does not follow the doubtful pairs blindly.",
    "sft_weight": "DPO: also learn to write the chosen answers, with this weight beside DPO's own loss (RPO). "
                  "DPO alone can lower the chosen answers' likelihood along with the rejected ones' while it "
                  "widens the gap between them, and then the model writes neither; this keeps it writing what you "
                  "chose. 0 is plain DPO; 0.5-1 when the chosen answers are what you want the model to say.",
    "simpo_gamma": "SimPO: how much higher the chosen answer's score should be than the rejected one's (the target "
                   "margin, gamma). Higher asks for a clearer preference; 0.5 is the usual start, the paper goes "
                   "up to about 1.5.",
    "desirable_weight": "KTO: how much the answers marked good count. When your data has many more bad answers "
                        "than good ones, raise this so both kinds count about equally (KTO's authors advise "
                        "weight x count of good between 1 and 4/3 times weight x count of bad).",
    "undesirable_weight": "KTO: how much the answers marked bad count. When your data has many more good answers "
                          "than bad ones, raise this so both kinds count about equally.",
    "preset": "A starting point: Quick try trains a small adapter in minutes; Balanced suits most tasks; "
              "Best quality trains a larger adapter for longer with a validation split and early stopping. "
              "Change any setting afterwards in Advanced mode.",
    "mode": "Simple shows the handful of settings that matter most; Advanced shows every one.",
    "method": "LoRA learns a small low-rank update beside each frozen weight matrix: the usual choice. QLoRA does the "
              "same over a 4-bit copy of the base, for models that do not fit otherwise. DoRA also learns each "
              "column's magnitude (a little better at low ranks, slower). Full fine-tuning trains every weight and "
              "needs the most memory. Prompt tuning, prefix tuning and P-tuning learn a few virtual tokens: tiny "
              "files, weaker changes.",
    "rank": "The size of the low-rank update (r). Higher ranks can learn more but use more memory and overfit small "
            "datasets sooner. 8-16 suits a change of style or tone; try 32-64 to teach a new task.",
    "alpha": "Scales the update by alpha / rank. Keep it about twice the rank, and change it together with the rank so "
             "the same learning rate keeps working.",
    "dropout": "Randomly drops part of the adapter's input while training, against overfitting. 0.05-0.1 for small "
               "datasets; 0 for large ones (and a little faster).",
    "rslora": "Rank-stabilised LoRA scales by alpha / sqrt(rank): high ranks (64+) then learn as fast as low ones. "
              "Turn it on when you raise the rank a lot.",
    "targets": "Which layers get an adapter. All linear layers learn the most; attention only, or q and v only, "
               "make smaller, faster adapters. Custom picks the model's own module names.",
    "quant": "How the frozen base is stored: NF4 (4-bit NormalFloat, the QLoRA default and usually best), FP4, or "
             "8-bit. Lower bits use less memory and are a little less exact.",
    "double_quant": "Also quantises the 4-bit blocks' scales, saving about 0.4 bits per weight (some 3 GB on a 65B "
                    "model) at no measurable cost. Leave it on.",
    "compute_dtype": "The precision the 4-bit layers compute in. Auto follows the run's precision (bf16 on recent "
                     "GPUs, fp32 on a CPU).",
    "virtual_tokens": "How many trainable virtual tokens go in front of every example. 10-30 is typical; more can "
                      "learn more but lengthen every sequence.",
    "prompt_init": "Start the virtual tokens at random, or from the embeddings of a text that describes the task "
                   "(often learns faster).",
    "prompt_text": "The text whose token embeddings start the virtual tokens, e.g. 'Answer like a pirate'.",
    "prefix_projection": "Train the prefix through a small MLP (the original paper's reparametrisation): steadier "
                         "training, more memory while training, the same size saved.",
    "lr": "How far each step moves what trains. LoRA takes higher rates than full fine-tuning: about 1e-4 to 2e-4 for "
          "large models, up to 1e-3 for small ones; prompt tuning often uses 0.3. Lower it when the loss jumps "
          "around or climbs.",
    "scheduler": "How the learning rate changes after the warm-up: constant, falling linearly to zero, or falling "
                 "along a cosine. Linear or cosine usually end a little better than constant.",
    "warmup": "Steps over which the learning rate rises from zero to its value: steadies the first steps. About 3-10% "
              "of the run.",
    "optimizer": "AdamW is the standard. 8-bit AdamW keeps its state in a quarter of the memory with about the same "
                 "results; the paged variants also let it spill out of GPU memory under pressure. SGD keeps no "
                 "state at all but trains less well.",
    "weight_decay": "Pulls the trained weights towards zero at every step, against overfitting. 0 is common for "
                    "LoRA; 0.01-0.1 for full fine-tuning.",
    "max_grad_norm": "Clips each step's gradient to this size, so one odd batch cannot wreck the run. 1.0 is the "
                     "usual value; 0 turns clipping off.",
    "seed": "Fixes the random start of the adapter, the data order and dropout: the same seed and settings give the "
            "same run.",
    "steps": "How many optimizer steps to take; each looks at one batch (times the accumulation). Raise it while the "
             "loss is still falling at the end; lower it when replies start copying the dataset word for word.",
    "epochs": "How many passes over the whole dataset. 1-3 is typical; more passes over a small dataset make the model "
              "memorise it.",
    "batch": "Examples per forward pass. Larger batches give a smoother loss curve but need more memory: lower it first "
             "when a run runs out of memory, and raise the accumulation to keep the effective batch.",
    "grad_accum": "Adds up the gradients of this many batches before each step: the effective batch is batch x "
                  "accumulation, at the memory cost of one batch. Raise it when the batch you want does not fit.",
    "max_length": "The longest example in tokens; longer ones are cut. Memory grows with it: lower it to fit in memory, "
                  "raise it when your conversations are long and get cut. The Data page shows and sets the same value, "
                  "with how many rows it cuts.",
    "grad_checkpointing": "Recomputes each layer in the backward pass instead of keeping its activations: much less "
                          "memory for about a third more time. Turn it on when long examples do not fit.",
    "batching": "Padded batches pad every row to the longest in its batch. Padding-free lays the rows end to end "
                "with each row kept to itself: nothing is spent on padding, which is faster when lengths vary.",
    "group_by_length": "Puts rows of similar length in the same batch, so padded batches waste less. Slightly less "
                       "random order; harmless for most data.",
    "precision": "The number format training computes in. Auto picks bf16 on GPUs that have it, fp16 (with loss "
                 "scaling) on older GPUs, and fp32 on a CPU.",
    "pure_bf16": "Full fine-tuning only: train the weights themselves in bf16, with bf16 gradients and AdamW states "
                 "(Kahan-compensated so small updates are not rounded away), instead of fp32 master weights under "
                 "bf16 autocast: about half the memory, with the same loss curve. Auto: on whenever the run trains "
                 "in bf16.",
    "eval_every": "Measure the loss on the held-out rows every N steps (set the validation share on the Data page). "
                  "Auto: about ten times a run.",
    "early_stopping": "Stop when the eval loss has not improved for this many evaluations, and keep the best "
                      "adapter. Needs a validation share. Off: train to the end.",
    "save_every": "Write a resumable checkpoint every N steps, so a crash or a stop loses little work. The end of "
                  "every run is checkpointed anyway.",
    "keep_checkpoints": "How many of the newest checkpoints to keep on disk (the best one is always kept). 0 keeps "
                        "them all.",
    "evaluate_at_end": "When the run completes, its adapter and the base answer the rows held out for validation "
                       "(up to 100), and the finished run says how the score changed, e.g. ROUGE-L 0.21 → 0.58 on "
                       "30 held-out rows. It takes about as long as two chat replies per row; Stop ends it.",
    "name": "The adapter's name in the library: letters, digits, '.', '_' and '-'. Left empty, it is named after the "
            "date, the dataset and the method.",
    "report_to": "Also report the run to the experiment trackers you use; the studio's own curves work either way. "
                 "Their files go into the run's folder (Home ▸ Open folder). Nothing is sent anywhere unless you give "
                 "MLflow a server's address or are logged in to Weights & Biases. A tracker that cannot start is "
                 "turned off, and the run's log says why.",
    "tensorboard": "TensorBoard event files in the run's folder, under tensorboard/. Open them with "
                   "tensorboard --logdir RUN_FOLDER/tensorboard. Nothing is sent anywhere.",
    "mlflow": "An MLflow run with the settings and the curves: in a local store in the run's folder, under mlruns/ "
              "(open it with mlflow ui --backend-store-uri RUN_FOLDER/mlruns), or on the server named below.",
    "wandb": "A Weights & Biases run, written offline into the run's folder under wandb/ (wandb sync uploads it "
             "later). Sent to W&B as it trains only if you are logged in (wandb login, or WANDB_API_KEY).",
    "mlflow_uri": "Empty: MLflow writes a local store in the run's folder and nothing is sent. An address such as "
                  "http://localhost:5000 sends the run to that MLflow server; if it does not answer when the run "
                  "starts, MLflow is turned off for the run, which trains on.",
}

# Each setting's label on the form and its key in TIPS, by the RunConfig field it sets (and the
# preset, which is no field): the form and the run window, which lists a run's settings, both
# name settings from here.
SETTINGS: dict[str, tuple[str, str]] = {
    "preset": ("Preset", "preset"),
    "objective": ("Objective", "objective"),
    "from_adapter": ("Start from adapter", "from_adapter"),
    "beta": ("Beta", "beta"),
    "dpo_loss": ("DPO loss", "dpo_loss"),
    "reference_free": ("Reference", "reference_free"),
    "label_smoothing": ("Label smoothing", "label_smoothing"),
    "sft_weight": ("SFT weight", "sft_weight"),
    "simpo_gamma": ("Target margin", "simpo_gamma"),
    "desirable_weight": ("Good answers' weight", "desirable_weight"),
    "undesirable_weight": ("Bad answers' weight", "undesirable_weight"),
    "method": ("Method", "method"),
    "rank": ("LoRA rank", "rank"),
    "alpha": ("LoRA alpha", "alpha"),
    "dropout": ("LoRA dropout", "dropout"),
    "use_rslora": ("Scaling", "rslora"),
    "targets": ("Target layers", "targets"),
    "quant": ("Base in", "quant"),
    "double_quant": ("Scales", "double_quant"),
    "compute_dtype": ("Compute in", "compute_dtype"),
    "num_virtual_tokens": ("Virtual tokens", "virtual_tokens"),
    "prompt_init": ("Start from", "prompt_init"),
    "prompt_init_text": ("Init text", "prompt_text"),
    "prefix_projection": ("Prefix", "prefix_projection"),
    "lr": ("Learning rate", "lr"),
    "max_steps": ("Steps", "steps"),
    "epochs": ("Epochs", "epochs"),
    "batch_size": ("Batch size", "batch"),
    "grad_accum": ("Accumulation", "grad_accum"),
    "max_length": ("Max length", "max_length"),
    "lr_scheduler": ("Schedule", "scheduler"),
    "warmup_steps": ("Warm-up", "warmup"),
    "optimizer": ("Optimizer", "optimizer"),
    "weight_decay": ("Weight decay", "weight_decay"),
    "max_grad_norm": ("Max grad norm", "max_grad_norm"),
    "seed": ("Seed", "seed"),
    "precision": ("Precision", "precision"),
    "pure_bf16": ("Pure bf16", "pure_bf16"),
    "batching": ("Batches", "batching"),
    "group_by_length": ("Order", "group_by_length"),
    "grad_checkpointing": ("Activations", "grad_checkpointing"),
    "eval_every": ("Evaluate every", "eval_every"),
    "early_stopping_patience": ("Early stopping", "early_stopping"),
    "save_every": ("Checkpoints", "save_every"),
    "keep_checkpoints": ("Keep", "keep_checkpoints"),
    "name": ("Adapter name", "name"),
    "report_to": ("Report to", "report_to"),
    "mlflow_uri": ("MLflow server", "mlflow_uri"),
    # On the Train page beside the validation share it needs, not in this form.
    "evaluate_at_end": ("Evaluate at the end", "evaluate_at_end"),
}


def setting_label(field: str) -> str:
    """A RunConfig field as the user reads it: the form's label, else the field in plain words."""
    if field in SETTINGS:
        return SETTINGS[field][0]
    return field.replace("_", " ").capitalize()


def setting_tip(field: str) -> str:
    """What a RunConfig field does, as the form's tooltip says it; empty for fields the form lacks."""
    return TIPS[SETTINGS[field][1]] if field in SETTINGS else ""


# Settings every preset sets; the rest keep their values.
PRESETS: dict[str, dict[str, Any]] = {
    # The first-run demo: a style change of a small model, in minutes on a CPU.
    "quick": dict(method="lora", rank=16, alpha=32.0, dropout=0.05, use_rslora=False, targets="all-linear", lr=1e-3,
                  max_steps=60, lr_scheduler="linear", warmup_steps=0, max_length=256, batch_size=4, grad_accum=1,
                  early_stopping_patience=0),
    "balanced": dict(method="lora", rank=16, alpha=32.0, dropout=0.05, use_rslora=False, targets="all-linear",
                     lr=2e-4, max_steps=None,
                     epochs=2.0, lr_scheduler="cosine", warmup_steps=10, max_length=1024, batch_size=4, grad_accum=4,
                     early_stopping_patience=0),
    "best": dict(method="lora", rank=64, alpha=64.0, use_rslora=True, dropout=0.05, targets="all-linear", lr=1e-4,
                 max_steps=None, epochs=3.0, lr_scheduler="cosine", warmup_steps=30, max_length=2048, batch_size=4,
                 grad_accum=8, eval_every=0, early_stopping_patience=3),
}
# Fields where None means something (train by epochs, an automatic name, no init text, a new adapter).
_NULLABLE = ("max_steps", "name", "prompt_init_text", "from_adapter", "mlflow_uri")
# The objectives that read each of their settings (TRL's trainers read only their own). Whether a
# setting is allowed at all with what else is chosen is RunConfig.validate's to say (``refusal``).
OBJECTIVE_SETTINGS = {"beta": PREFERENCE_OBJECTIVES, "dpo_loss": ("dpo",), "reference_free": ("dpo",),
                      "label_smoothing": ("dpo",), "sft_weight": ("dpo",), "simpo_gamma": ("simpo",), "desirable_weight": ("kto",),
                      "undesirable_weight": ("kto",)}
# What a run continuing an adapter takes from it (its studio.json), whatever the form said.
ADAPTER_SHAPE = ("method", "rank", "alpha", "dropout", "use_rslora", "targets")
DPO_LOSS_TITLES = {"sigmoid": "Sigmoid (DPO)", "ipo": "IPO", "hinge": "Hinge (SLiC)", "robust": "Robust"}


def refusal(**settings: Any) -> Optional[str]:
    """Why a run with these settings (the rest left at their defaults) would be refused, in
    RunConfig.validate's own words, or None: the form greys out what the config's rules forbid
    rather than restating them."""
    return _refusal(tuple(sorted(settings.items())))


@functools.lru_cache(maxsize=256)
def _refusal(settings: tuple[tuple[str, Any], ...]) -> Optional[str]:
    # Asked a dozen times per change of the form: the few combinations there are, validated once.
    try:
        RunConfig(model="-", dataset="-", **dict(settings)).validate()
    except StudioError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class AdapterChoice:
    """A library adapter a run can go on training."""

    name: str
    shape: dict[str, Any]  # the settings it fixes (``ADAPTER_SHAPE``), from its studio.json
    about: str  # what it is, in a line: "LoRA, rank 8, on starter, trained by DPO"
    base_model: Optional[str]  # the model it was trained on, as its run named it


def library_adapters() -> list[AdapterChoice]:
    """The library's adapters a run can go on training (LoRA, DoRA, QLoRA; not damaged).
    Metadata only: a few milliseconds, on the UI thread."""
    from engine.adapters.library import list_adapters, read_adapter_meta

    found = []
    for record in list_adapters():
        if record.damaged or record.method not in LORA_METHODS:
            continue
        meta = read_adapter_meta(Path(record.path))
        # Only what the config would take: a studio.json edited by hand may hold anything.
        shape = {key: meta[key] for key in ADAPTER_SHAPE
                 if key in meta and _hashable(meta[key]) and refusal(**{key: meta[key]}) is None}
        shape["method"] = record.method
        if record.rank:
            shape["rank"] = record.rank
        about = f"{METHOD_LABELS[record.method]}" + (f", rank {record.rank}" if record.rank else "")
        if record.base_model:
            about += f", on {record.base_model}"
        if isinstance(meta.get("objective"), str) and meta["objective"] in OBJECTIVE_LABELS:
            about += f", trained by {OBJECTIVE_LABELS[meta['objective']]}"
        found.append(AdapterChoice(record.name, shape, about, record.base_model))
    return found


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))
PRESET_TITLES = {"quick": "Quick try", "balanced": "Balanced", "best": "Best quality", "custom": "Custom"}


class ScientificSpinBox(QDoubleSpinBox):
    """A spin box that shows and accepts values like 1e-3, for learning rates."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 (Qt's name)
        return f"{value:g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int) -> tuple[QValidator.State, str, int]:
        stripped = text.strip()
        if not _NUMBER_PREFIX.fullmatch(stripped):
            return QValidator.State.Invalid, text, pos
        try:
            value = float(stripped)
        except ValueError:
            # Part-typed numbers such as "1e" or "2." are on their way to being valid.
            return QValidator.State.Intermediate, text, pos
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos

    def stepBy(self, steps: int) -> None:  # noqa: N802
        # Step by factors of about two (1e-3 -> 2e-3 -> 5e-3), the way learning rates are tuned.
        ladder = (1.0, 2.0, 5.0)
        value = self.value()
        exponent = 0
        while value >= 10:
            value /= 10
            exponent += 1
        while value < 1:
            value *= 10
            exponent -= 1
        position = min(range(len(ladder)), key=lambda i: abs(ladder[i] - value)) + steps
        exponent += position // len(ladder)
        self.setValue(ladder[position % len(ladder)] * 10.0 ** exponent)


def _combo(choices: list[tuple[str, Any]]) -> QComboBox:
    combo = QComboBox()
    for text, data in choices:
        combo.addItem(text, data)
    return combo


def _spin(low: int, high: int, value: int, *, step: int = 1, special: str = "", suffix: str = "") -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setSingleStep(step)
    if special:
        spin.setSpecialValueText(special)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def _double(low: float, high: float, value: float, decimals: int, step: float) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setValue(value)
    return spin


def _set_combo(combo: QComboBox, data: Any) -> None:
    index = combo.findData(data)
    if index >= 0:
        combo.setCurrentIndex(index)


class SettingsForm(QWidget):
    """Every setting of a run but the model and the dataset."""

    changed = Signal()
    chooseModulesRequested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._applying = False
        self._build_widgets()
        self._build_layout()
        self._connect()
        self.set_simple(True)
        self._update_visibility()

    # ------------------------------------------------------------------ widgets
    def _build_widgets(self) -> None:
        self.simple_radio = QRadioButton("Simple")
        self.advanced_radio = QRadioButton("Advanced")
        self.simple_radio.setChecked(True)
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self.simple_radio)
        self._mode_group.addButton(self.advanced_radio)
        self.preset_combo = _combo([(PRESET_TITLES[key], key) for key in (*PRESETS, "custom")])
        _set_combo(self.preset_combo, "custom")

        self.objective_combo = _combo([(OBJECTIVE_LABELS[o], o) for o in OBJECTIVES])
        self.adapter_combo = _combo([(NEW_ADAPTER, None)])
        self._adapters: dict[str, AdapterChoice] = {}  # by name: the library adapters listed
        self.beta_spin = _double(0.001, 100.0, 0.1, 3, 0.05)
        self.dpo_loss_combo = _combo([(DPO_LOSS_TITLES[loss], loss) for loss in DPO_LOSSES])
        self.reference_free_check = QCheckBox("Reference-free: no reference model")
        self.label_smoothing_spin = _double(0.0, 0.49, 0.0, 2, 0.05)
        self.sft_weight_spin = _double(0.0, 100.0, 0.0, 2, 0.1)
        self.simpo_gamma_spin = _double(0.0, 100.0, 0.5, 2, 0.1)
        self.desirable_spin = _double(0.01, 100.0, 1.0, 2, 0.1)
        self.undesirable_spin = _double(0.01, 100.0, 1.0, 2, 0.1)

        self.method_combo = _combo([(METHOD_LABELS[m], m) for m in METHODS])
        self.rank_spin = _spin(1, 4096, 16)
        self.alpha_spin = _double(0.5, 8192, 32.0, 1, 1.0)
        self.dropout_spin = _double(0.0, 0.9, 0.05, 2, 0.05)
        self.rslora_check = QCheckBox("rsLoRA: scale by alpha / √rank")
        self.targets_combo = _combo([("All linear layers", "all-linear"), ("Attention", "attention"),
                                     ("q and v only", "q,v"), ("Custom modules…", CUSTOM_TARGETS)])
        self.modules_edit = QLineEdit()
        self.modules_edit.setPlaceholderText("q_proj,v_proj,gate_proj")
        self.modules_button = QPushButton("Choose…")
        self.modules_button.setToolTip("Pick from the model's own linear layers")
        self.quant_combo = _combo([("4-bit NF4", "nf4"), ("4-bit FP4", "fp4"), ("8-bit", "int8")])
        self.double_quant_check = QCheckBox("Double quantisation")
        self.double_quant_check.setChecked(True)
        self.compute_combo = _combo([("Auto", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")])
        self.virtual_spin = _spin(1, 4096, 20)
        self.prompt_init_combo = _combo([("Random", "random"), ("From a text", "text")])
        self.prompt_text_edit = QLineEdit()
        self.prompt_text_edit.setPlaceholderText("Answer like a pirate")
        self.prefix_projection_check = QCheckBox("Reparametrise through an MLP")

        self.lr_spin = ScientificSpinBox()
        self.lr_spin.setDecimals(8)
        self.lr_spin.setRange(1e-7, 1.0)
        self.lr_spin.setValue(1e-3)
        self.scheduler_combo = _combo([("Linear", "linear"), ("Cosine", "cosine"), ("Constant", "constant")])
        self.warmup_spin = _spin(0, 1_000_000, 0, suffix=" steps")
        self.optimizer_combo = _combo([("AdamW", "adamw"), ("8-bit AdamW", "adamw_8bit"),
                                       ("Paged 8-bit AdamW", "paged_adamw_8bit"),
                                       ("Paged AdamW (32-bit)", "paged_adamw_32bit"), ("SGD", "sgd")])
        self.weight_decay_spin = _double(0.0, 1.0, 0.0, 3, 0.01)
        self.grad_norm_spin = _double(0.0, 1000.0, 1.0, 2, 0.1)
        self.grad_norm_spin.setSpecialValueText("off")
        self.seed_spin = _spin(0, 2 ** 31 - 1, 42)

        self.by_steps_radio = QRadioButton("Steps")
        self.by_epochs_radio = QRadioButton("Epochs")
        self.by_steps_radio.setChecked(True)
        self._length_group = QButtonGroup(self)
        self._length_group.addButton(self.by_steps_radio)
        self._length_group.addButton(self.by_epochs_radio)
        self.steps_spin = _spin(1, 10_000_000, 60)
        self.epochs_spin = _double(0.1, 100.0, 1.0, 1, 0.5)
        self.batch_spin = _spin(1, 4096, 4)
        self.accum_spin = _spin(1, 4096, 1)
        self.max_length_spin = _spin(*MAX_LENGTH_RANGE, 256, step=64, suffix=" tokens")

        self.checkpointing_check = QCheckBox("Gradient checkpointing")
        self.batching_combo = _combo([("Padded", "padded"), ("Padding-free", "padding_free")])
        self.group_check = QCheckBox("Group rows of similar length")
        self.precision_combo = _combo([("Auto", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")])
        self.pure_bf16_combo = _combo([("Auto", "auto"), ("On", "on"), ("Off", "off")])

        self.eval_every_spin = _spin(0, 1_000_000, 0, step=10, special="auto", suffix=" steps")
        self.early_stop_spin = _spin(0, 1000, 0, special="off", suffix=" evaluations")
        self.save_every_spin = _spin(0, 1_000_000, 0, step=50, special="at the end only", suffix=" steps")
        self.keep_spin = _spin(0, 1000, 3, special="all")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("automatic")

        # "&&": a lone "&" in a button's text marks its shortcut letter, which would eat W&B's.
        self.tracker_checks = {name: QCheckBox(TRACKER_LABELS[name].replace("&", "&&")) for name in TRACKERS}
        self.mlflow_uri_edit = QLineEdit()
        self.mlflow_uri_edit.setPlaceholderText("local store in the run's folder")

    def _labelled(self, form: QFormLayout, field: str, widget: QWidget) -> None:
        text, tip = SETTINGS[field]
        label = QLabel(text)
        label.setBuddy(widget)
        widget.setAccessibleName(text)
        widget.setToolTip(TIPS[tip])
        label.setToolTip(TIPS[tip])
        form.addRow(label, widget)

    def _row(self, *widgets: QWidget, stretch_first: bool = True) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        for index, widget in enumerate(widgets):
            layout.addWidget(widget, 1 if (index == 0 and stretch_first) else 0)
        return row

    def _build_layout(self) -> None:
        mode_row = self._row(self.simple_radio, self.advanced_radio, stretch_first=False)
        mode_row.layout().addStretch(1)
        for button in (self.simple_radio, self.advanced_radio):
            button.setToolTip(TIPS["mode"])

        self.objective_box = QGroupBox("Objective")
        self.objective_form = QFormLayout(self.objective_box)
        f = self.objective_form
        self._labelled(f, "objective", self.objective_combo)
        self._labelled(f, "from_adapter", self.adapter_combo)
        for widget, name in self._objective_widgets().items():
            self._labelled(f, name, widget)

        self.method_box = QGroupBox("Method")
        self.method_form = QFormLayout(self.method_box)
        f = self.method_form
        self._labelled(f, "preset", self.preset_combo)
        self._labelled(f, "method", self.method_combo)
        self._labelled(f, "rank", self.rank_spin)
        self._labelled(f, "alpha", self.alpha_spin)
        self._labelled(f, "dropout", self.dropout_spin)
        self._labelled(f, "use_rslora", self.rslora_check)
        self._labelled(f, "targets", self.targets_combo)
        self.modules_row = self._row(self.modules_edit, self.modules_button)
        self.modules_edit.setToolTip(TIPS["targets"])
        self.modules_edit.setAccessibleName("Target modules")
        f.addRow("Modules", self.modules_row)
        self._labelled(f, "quant", self.quant_combo)
        self._labelled(f, "double_quant", self.double_quant_check)
        self._labelled(f, "compute_dtype", self.compute_combo)
        self._labelled(f, "num_virtual_tokens", self.virtual_spin)
        self._labelled(f, "prompt_init", self.prompt_init_combo)
        self._labelled(f, "prompt_init_text", self.prompt_text_edit)
        self._labelled(f, "prefix_projection", self.prefix_projection_check)

        self.training_box = QGroupBox("Training")
        self.training_form = QFormLayout(self.training_box)
        f = self.training_form
        self._labelled(f, "lr", self.lr_spin)
        length_row = self._row(self.by_steps_radio, self.steps_spin, self.by_epochs_radio, self.epochs_spin,
                               stretch_first=False)
        for widget, tip in ((self.by_steps_radio, "steps"), (self.steps_spin, "steps"),
                            (self.by_epochs_radio, "epochs"), (self.epochs_spin, "epochs")):
            widget.setToolTip(TIPS[tip])
        self.steps_spin.setAccessibleName("Train for steps")
        self.epochs_spin.setAccessibleName("Train for epochs")
        f.addRow("Train for", length_row)
        self._labelled(f, "batch_size", self.batch_spin)
        self._labelled(f, "grad_accum", self.accum_spin)
        self._labelled(f, "max_length", self.max_length_spin)
        self._labelled(f, "lr_scheduler", self.scheduler_combo)
        self._labelled(f, "warmup_steps", self.warmup_spin)
        self._labelled(f, "optimizer", self.optimizer_combo)
        self._labelled(f, "weight_decay", self.weight_decay_spin)
        self._labelled(f, "max_grad_norm", self.grad_norm_spin)
        self._labelled(f, "seed", self.seed_spin)

        self.memory_box = QGroupBox("Speed and memory")
        self.memory_form = QFormLayout(self.memory_box)
        f = self.memory_form
        self._labelled(f, "precision", self.precision_combo)
        self._labelled(f, "pure_bf16", self.pure_bf16_combo)
        self._labelled(f, "batching", self.batching_combo)
        self._labelled(f, "group_by_length", self.group_check)
        self._labelled(f, "grad_checkpointing", self.checkpointing_check)

        self.output_box = QGroupBox("Evaluation and saving")
        self.output_form = QFormLayout(self.output_box)
        f = self.output_form
        self._labelled(f, "eval_every", self.eval_every_spin)
        self._labelled(f, "early_stopping_patience", self.early_stop_spin)
        self._labelled(f, "save_every", self.save_every_spin)
        self._labelled(f, "keep_checkpoints", self.keep_spin)
        self._labelled(f, "name", self.name_edit)

        self.trackers_box = QGroupBox("Experiment trackers")
        self.trackers_form = QFormLayout(self.trackers_box)
        f = self.trackers_form
        self.trackers_row = self._row(*self.tracker_checks.values(), stretch_first=False)
        self.trackers_row.layout().addStretch(1)
        for name, check in self.tracker_checks.items():
            check.setToolTip(TIPS[name])
        self._labelled(f, "report_to", self.trackers_row)
        self._labelled(f, "mlflow_uri", self.mlflow_uri_edit)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(mode_row)
        for box in (self.objective_box, self.method_box, self.training_box, self.memory_box, self.output_box,
                    self.trackers_box):
            layout.addWidget(box)

    # ------------------------------------------------------------------ behaviour
    def _connect(self) -> None:
        self.simple_radio.toggled.connect(lambda simple: self.set_simple(simple))
        self.preset_combo.activated.connect(lambda _i: self.apply_preset(self.preset_combo.currentData()))
        self.modules_button.clicked.connect(self.chooseModulesRequested)
        # Before the change is announced: the adapter's method and rank are in place by then.
        self.adapter_combo.currentIndexChanged.connect(lambda _i: None if self._applying else self._take_adapter_shape())
        for widget in self._value_widgets():
            signal = _change_signal(widget)
            signal.connect(self._on_change)

    def _value_widgets(self) -> list[QWidget]:
        return [self.objective_combo, self.adapter_combo, self.beta_spin, self.dpo_loss_combo,
                self.reference_free_check, self.label_smoothing_spin, self.sft_weight_spin, self.simpo_gamma_spin,
                self.desirable_spin,
                self.undesirable_spin, self.method_combo, self.rank_spin, self.alpha_spin, self.dropout_spin, self.rslora_check,
                self.targets_combo, self.modules_edit, self.quant_combo, self.double_quant_check, self.compute_combo,
                self.virtual_spin, self.prompt_init_combo, self.prompt_text_edit, self.prefix_projection_check,
                self.lr_spin, self.scheduler_combo, self.warmup_spin, self.optimizer_combo, self.weight_decay_spin,
                self.grad_norm_spin, self.seed_spin, self.by_steps_radio, self.steps_spin, self.epochs_spin,
                self.batch_spin, self.accum_spin, self.max_length_spin, self.checkpointing_check,
                self.batching_combo, self.group_check, self.precision_combo, self.pure_bf16_combo, self.eval_every_spin,
                self.early_stop_spin, self.save_every_spin, self.keep_spin, self.name_edit,
                *self.tracker_checks.values(), self.mlflow_uri_edit]

    def _on_change(self, *_args: Any) -> None:
        self._update_visibility()
        if not self._applying:
            preset = self.preset_combo.currentData()
            if preset in PRESETS and not self._matches(PRESETS[preset]):
                _set_combo(self.preset_combo, "custom")
            self.changed.emit()

    def _matches(self, settings: dict[str, Any]) -> bool:
        values = self.values()
        return all(values.get(key) == value for key, value in settings.items())

    def set_simple(self, simple: bool) -> None:
        """Simple mode: the preset, the method and the length of the run; advanced: everything."""
        if self.simple_radio.isChecked() != simple:
            (self.simple_radio if simple else self.advanced_radio).setChecked(True)
        self._simple = simple
        self.memory_box.setVisible(not simple)
        self.trackers_box.setVisible(not simple)
        self._update_visibility()

    @property
    def simple(self) -> bool:
        return self._simple

    def _update_visibility(self) -> None:
        method = self.method_combo.currentData()
        lora = method in ("lora", "dora", "qlora")
        advanced = not getattr(self, "_simple", True)
        rows = [
            (self.method_form, self.rank_spin, lora), (self.method_form, self.alpha_spin, lora and advanced),
            (self.method_form, self.dropout_spin, lora and advanced),
            (self.method_form, self.rslora_check, lora and advanced),
            (self.method_form, self.targets_combo, lora and advanced),
            (self.method_form, self.modules_row,
             lora and advanced and self.targets_combo.currentData() == CUSTOM_TARGETS),
            (self.method_form, self.quant_combo, method == "qlora"),
            (self.method_form, self.double_quant_check, method == "qlora" and advanced),
            (self.method_form, self.compute_combo, method == "qlora" and advanced),
            (self.method_form, self.virtual_spin, method in PROMPT_METHODS),
            (self.method_form, self.prompt_init_combo, method == "prompt"),
            (self.method_form, self.prompt_text_edit,
             method == "prompt" and self.prompt_init_combo.currentData() == "text"),
            (self.method_form, self.prefix_projection_check, method == "prefix" and advanced),
        ]
        for widget in (self.scheduler_combo, self.warmup_spin, self.optimizer_combo, self.weight_decay_spin,
                       self.grad_norm_spin, self.seed_spin, self.accum_spin):
            rows.append((self.training_form, widget, advanced))
        for widget in (self.eval_every_spin, self.early_stop_spin, self.keep_spin):
            rows.append((self.output_form, widget, advanced))
        objective = self.objective_combo.currentData()
        for widget, field in self._objective_widgets().items():
            shown = objective in OBJECTIVE_SETTINGS[field] and (advanced or field == "beta")
            rows.append((self.objective_form, widget, shown))
        for form, widget, visible in rows:
            form.setRowVisible(widget, visible)
        self._follow_rules(method, objective)
        by_steps = self.by_steps_radio.isChecked()
        self.steps_spin.setEnabled(by_steps)
        self.epochs_spin.setEnabled(not by_steps)
        # Only full fine-tuning trains the model's own weights; the other methods train fp32 adapters.
        self.pure_bf16_combo.setEnabled(method == "full")
        self.mlflow_uri_edit.setEnabled(self.tracker_checks["mlflow"].isChecked())
        self.pure_bf16_combo.setToolTip(TIPS["pure_bf16"] if method == "full" else
                                        "Applies to full fine-tuning only: the other methods train fp32 adapters "
                                        "or virtual tokens beside a frozen base.")

    def _objective_widgets(self) -> dict[QWidget, str]:
        return {self.beta_spin: "beta", self.dpo_loss_combo: "dpo_loss", self.reference_free_check: "reference_free",
                self.label_smoothing_spin: "label_smoothing", self.sft_weight_spin: "sft_weight",
                self.simpo_gamma_spin: "simpo_gamma",
                self.desirable_spin: "desirable_weight", self.undesirable_spin: "undesirable_weight"}

    def _follow_rules(self, method: str, objective: str) -> None:
        """Grey out the choices RunConfig would refuse with the rest of the form (prompt tuning under
        DPO, DPO under prompt tuning, padding-free batches with pairs), each saying why in the
        config's words; and what a continued adapter fixes."""
        batching = self.batching_combo.currentData()
        _allow_items(self.objective_combo, lambda o: refusal(objective=o, method=method, batching=batching))
        _allow_items(self.method_combo, lambda m: refusal(objective=objective, method=m))
        _allow_items(self.batching_combo, lambda b: refusal(objective=objective, batching=b))
        for widget, reason in ((self.reference_free_check, self._reference_free_refusal()),
                               (self.label_smoothing_spin, self._label_smoothing_refusal())):
            widget.setEnabled(reason is None)
            tip = setting_tip("reference_free" if widget is self.reference_free_check else "label_smoothing")
            widget.setToolTip(tip if reason is None else f"Not used now: {reason}.\n\n{tip}")
        adapter = self.adapter_combo.currentData()
        for widget, field in ((self.method_combo, "method"), (self.rank_spin, "rank"), (self.alpha_spin, "alpha"),
                              (self.dropout_spin, "dropout"), (self.rslora_check, "use_rslora"),
                              (self.targets_combo, "targets"), (self.modules_edit, "targets")):
            widget.setEnabled(adapter is None)
            widget.setToolTip(setting_tip(field) if adapter is None else
                              f"Kept from {adapter}, the adapter this run goes on training: its method, rank and "
                              f"layers stay as they are. Pick None under Start from adapter to choose.\n\n"
                              f"{setting_tip(field)}")
        self.modules_button.setEnabled(adapter is None)

    def _reference_free_refusal(self) -> Optional[str]:
        return refusal(objective=self.objective_combo.currentData(), reference_free=True)

    def _label_smoothing_refusal(self) -> Optional[str]:
        return refusal(objective=self.objective_combo.currentData(), dpo_loss=self.dpo_loss_combo.currentData(),
                       label_smoothing=0.1)

    # ------------------------------------------------------------------ adapters to go on training
    def set_adapters(self, adapters: list[AdapterChoice]) -> None:
        """List the library adapters a run can start from (``library_adapters()``), keeping the one
        chosen when it is still there (a run's config may also name one by its folder)."""
        keep = self.adapter_combo.currentData()
        self._adapters = {choice.name: choice for choice in adapters}
        self.adapter_combo.blockSignals(True)
        self.adapter_combo.clear()
        self.adapter_combo.addItem(NEW_ADAPTER, None)
        for choice in adapters:
            self.adapter_combo.addItem(choice.name, choice.name)
            self.adapter_combo.setItemData(self.adapter_combo.count() - 1, choice.about, Qt.ItemDataRole.ToolTipRole)
        self.adapter_combo.blockSignals(False)
        self._set_adapter(keep)

    def _set_adapter(self, ref: Optional[str]) -> None:
        if ref is not None and self.adapter_combo.findData(ref) < 0:
            self.adapter_combo.addItem(Path(ref).name, ref)  # a folder outside the library
            self.adapter_combo.setItemData(self.adapter_combo.count() - 1, ref, Qt.ItemDataRole.ToolTipRole)
        _set_combo(self.adapter_combo, ref)

    def adapter_choice(self, name: Optional[str]) -> Optional[AdapterChoice]:
        """A listed library adapter by name (None for a folder outside the library, or none)."""
        return self._adapters.get(name) if name is not None else None

    def _take_adapter_shape(self) -> None:
        """The chosen adapter's method, rank and layers into the form: training goes on with them."""
        choice = self.adapter_choice(self.adapter_combo.currentData())
        if choice is None:
            return
        shape = choice.shape
        setters = self._setters()
        applying, self._applying = self._applying, True
        try:
            for key, value in shape.items():
                setters[key](value)
        finally:
            self._applying = applying

    def apply_preset(self, name: str) -> None:
        if name in PRESETS:
            self.apply(PRESETS[name])
            _set_combo(self.preset_combo, name)

    # ------------------------------------------------------------------ values
    def values(self) -> dict[str, Any]:
        """The settings as RunConfig fields."""
        targets = self.targets_combo.currentData()
        if targets == CUSTOM_TARGETS:
            targets = ",".join(part.strip() for part in self.modules_edit.text().split(",") if part.strip()) \
                or "all-linear"
        by_steps = self.by_steps_radio.isChecked()
        return {
            "objective": self.objective_combo.currentData(), "from_adapter": self.adapter_combo.currentData(),
            "beta": round(self.beta_spin.value(), 4), "dpo_loss": self.dpo_loss_combo.currentData(),
            # Greyed out where the config refuses them (outside DPO, or its robust loss): off there.
            "reference_free": self.reference_free_check.isChecked() and self._reference_free_refusal() is None,
            "label_smoothing": round(self.label_smoothing_spin.value(), 4)
            if self._label_smoothing_refusal() is None else 0.0,
            "sft_weight": round(self.sft_weight_spin.value(), 4) if self.objective_combo.currentData() == "dpo" else 0.0,
            "simpo_gamma": round(self.simpo_gamma_spin.value(), 4),
            "desirable_weight": round(self.desirable_spin.value(), 4),
            "undesirable_weight": round(self.undesirable_spin.value(), 4),
            "method": self.method_combo.currentData(), "rank": self.rank_spin.value(),
            "alpha": self.alpha_spin.value(), "dropout": round(self.dropout_spin.value(), 4),
            "use_rslora": self.rslora_check.isChecked() and self.method_combo.currentData() in ("lora", "dora",
                                                                                               "qlora"),
            "targets": targets, "quant": self.quant_combo.currentData(),
            "double_quant": self.double_quant_check.isChecked(), "compute_dtype": self.compute_combo.currentData(),
            "num_virtual_tokens": self.virtual_spin.value(), "prompt_init": self.prompt_init_combo.currentData(),
            "prompt_init_text": self.prompt_text_edit.text().strip() or None,
            "prefix_projection": self.prefix_projection_check.isChecked(),
            "lr": self.lr_spin.value(), "lr_scheduler": self.scheduler_combo.currentData(),
            "warmup_steps": self.warmup_spin.value(), "optimizer": self.optimizer_combo.currentData(),
            "weight_decay": round(self.weight_decay_spin.value(), 6), "max_grad_norm": self.grad_norm_spin.value(),
            "seed": self.seed_spin.value(),
            "max_steps": self.steps_spin.value() if by_steps else None, "epochs": self.epochs_spin.value(),
            "batch_size": self.batch_spin.value(), "grad_accum": self.accum_spin.value(),
            "max_length": self.max_length_spin.value(), "grad_checkpointing": self.checkpointing_check.isChecked(),
            "batching": self.batching_combo.currentData(), "group_by_length": self.group_check.isChecked(),
            "precision": self.precision_combo.currentData(),
            # Off full fine-tuning the control is disabled, and its setting means nothing: auto.
            "pure_bf16": self.pure_bf16_combo.currentData() if self.method_combo.currentData() == "full" else "auto",
            "eval_every": self.eval_every_spin.value(),
            "early_stopping_patience": self.early_stop_spin.value(), "save_every": self.save_every_spin.value(),
            "keep_checkpoints": self.keep_spin.value(), "name": self.name_edit.text().strip() or None,
            "report_to": [name for name, check in self.tracker_checks.items() if check.isChecked()],
            # Greyed out unless MLflow is on: a server address is for MLflow only.
            "mlflow_uri": (self.mlflow_uri_edit.text().strip() or None) if self.tracker_checks["mlflow"].isChecked()
            else None,
        }

    def apply(self, values: dict[str, Any]) -> None:
        """Set the widgets from RunConfig fields (fields this form does not show are ignored);
        ``changed`` is emitted once, at the end."""
        setters = self._setters()
        self._applying = True
        try:
            for key, value in values.items():
                if key in setters and (value is not None or key in _NULLABLE):
                    setters[key](value)
            self._take_adapter_shape()  # a preset's method or rank never replaces the continued adapter's
        finally:
            self._applying = False
        self._update_visibility()
        self.changed.emit()

    def _setters(self) -> dict[str, Any]:
        def targets(value: str) -> None:
            if value in TARGET_PRESETS:
                _set_combo(self.targets_combo, value)
            else:
                _set_combo(self.targets_combo, CUSTOM_TARGETS)
                self.modules_edit.setText(value)

        def steps(value: Optional[int]) -> None:
            if value is None:
                self.by_epochs_radio.setChecked(True)
            else:
                self.by_steps_radio.setChecked(True)
                self.steps_spin.setValue(int(value))

        return {
            "objective": lambda v: _set_combo(self.objective_combo, v), "from_adapter": self._set_adapter,
            "beta": self.beta_spin.setValue, "dpo_loss": lambda v: _set_combo(self.dpo_loss_combo, v),
            "reference_free": self.reference_free_check.setChecked,
            "label_smoothing": self.label_smoothing_spin.setValue, "sft_weight": self.sft_weight_spin.setValue,
            "simpo_gamma": self.simpo_gamma_spin.setValue,
            "desirable_weight": self.desirable_spin.setValue, "undesirable_weight": self.undesirable_spin.setValue,
            "method": lambda v: _set_combo(self.method_combo, v), "rank": self.rank_spin.setValue,
            "alpha": self.alpha_spin.setValue, "dropout": self.dropout_spin.setValue,
            "use_rslora": self.rslora_check.setChecked, "targets": targets,
            "quant": lambda v: _set_combo(self.quant_combo, v), "double_quant": self.double_quant_check.setChecked,
            "compute_dtype": lambda v: _set_combo(self.compute_combo, v), "num_virtual_tokens": self.virtual_spin.setValue,
            "prompt_init": lambda v: _set_combo(self.prompt_init_combo, v),
            "prompt_init_text": lambda v: self.prompt_text_edit.setText(v or ""),
            "prefix_projection": self.prefix_projection_check.setChecked, "lr": self.lr_spin.setValue,
            "lr_scheduler": lambda v: _set_combo(self.scheduler_combo, v), "warmup_steps": self.warmup_spin.setValue,
            "optimizer": lambda v: _set_combo(self.optimizer_combo, v), "weight_decay": self.weight_decay_spin.setValue,
            "max_grad_norm": self.grad_norm_spin.setValue, "seed": self.seed_spin.setValue, "max_steps": steps,
            "epochs": self.epochs_spin.setValue, "batch_size": self.batch_spin.setValue,
            "grad_accum": self.accum_spin.setValue, "max_length": self.max_length_spin.setValue,
            "grad_checkpointing": self.checkpointing_check.setChecked,
            "batching": lambda v: _set_combo(self.batching_combo, v), "group_by_length": self.group_check.setChecked,
            "precision": lambda v: _set_combo(self.precision_combo, v),
            "pure_bf16": lambda v: _set_combo(self.pure_bf16_combo, v), "eval_every": self.eval_every_spin.setValue,
            "early_stopping_patience": self.early_stop_spin.setValue, "save_every": self.save_every_spin.setValue,
            "keep_checkpoints": self.keep_spin.setValue, "name": lambda v: self.name_edit.setText(v or ""),
            "report_to": lambda names: [check.setChecked(name in names) for name, check in self.tracker_checks.items()],
            "mlflow_uri": lambda v: self.mlflow_uri_edit.setText(v or ""),
        }


def _allow_items(combo: QComboBox, refused: Any) -> None:
    """Enable each item of ``combo`` unless ``refused(its data)`` gives a reason, which becomes its tooltip."""
    model = combo.model()
    for index in range(combo.count()):
        reason = refused(combo.itemData(index))
        model.item(index).setEnabled(reason is None)
        combo.setItemData(index, reason, Qt.ItemDataRole.ToolTipRole)


def _change_signal(widget: QWidget) -> Any:
    if isinstance(widget, QComboBox):
        return widget.currentIndexChanged
    if isinstance(widget, (QCheckBox, QRadioButton)):
        return widget.toggled
    if isinstance(widget, QLineEdit):
        return widget.textChanged
    return widget.valueChanged
