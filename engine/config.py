"""The run configuration: the one object the studio edits, the CLI reads and
``config.json`` in a run directory stores.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional

from engine.dataset_formats import FORMAT_NAMES, TRAIN_ON
from engine.dataset_readers import TEXT_SPLITS
from engine.errors import StudioError

METHODS = ("lora", "dora")
TARGET_PRESETS = ("q,v", "attention", "all-linear")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BAD_ROWS = ("skip", "stop")
MAX_VAL_FRACTION = 0.5
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


@dataclass
class RunConfig:
    model: str
    dataset: str
    method: str = "lora"
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: str = "all-linear"
    max_steps: Optional[int] = None
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lr: float = 2e-4
    warmup_steps: int = 0
    save_every: int = 0
    eval_every: int = 0
    log_every: int = 0
    seed: int = 42
    name: Optional[str] = None
    precision: str = "auto"
    device: str = "auto"
    # How to read the dataset: None/empty detect the format and columns (see engine.dataset_formats).
    data_format: Optional[str] = None
    columns: Optional[dict[str, str]] = None
    text_split: str = "auto"
    train_on: str = "assistant"  # the loss on the assistant's replies only, or on every token
    val_fraction: float = 0.0  # share of the rows held out to measure the eval loss
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
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StudioError(f"run config not found: {path}") from None
        except (OSError, ValueError) as exc:
            raise StudioError(f"run config {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise StudioError(f"run config {path} must be a JSON object")
        return cls.from_dict(data)

    def validate(self) -> None:
        def positive(name: str, value: Any, kind=int) -> None:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise StudioError(f"{name} must be a positive number, got {value!r}")
            if kind is int and int(value) != value:
                raise StudioError(f"{name} must be a whole number, got {value!r}")

        if self.method not in METHODS:
            raise StudioError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.targets not in TARGET_PRESETS:
            raise StudioError(f"unknown targets {self.targets!r}; choose one of {', '.join(TARGET_PRESETS)}")
        if self.precision not in PRECISIONS:
            raise StudioError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        positive("rank", self.rank)
        positive("alpha", self.alpha, float)
        positive("batch size", self.batch_size)
        positive("gradient accumulation", self.grad_accum)
        positive("max length", self.max_length)
        positive("learning rate", self.lr, float)
        if self.max_steps is not None:
            positive("max steps", self.max_steps)
        else:
            positive("epochs", self.epochs, float)
        if not 0 <= self.dropout < 1:
            raise StudioError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("save_every", "eval_every", "log_every", "warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise StudioError(f"{name.replace('_', ' ')} must be 0 or a positive whole number, got {value!r}")
        self._validate_data_settings()
        if self.name is not None and not _NAME_RE.match(self.name):
            raise StudioError(
                f"adapter name {self.name!r} may only use letters, digits, '.', '_' and '-' (at most 80)"
            )

    def _validate_data_settings(self) -> None:
        for name, value, allowed in (("data format", self.data_format, (None, *FORMAT_NAMES)),
                                     ("text split", self.text_split, TEXT_SPLITS),
                                     ("train on", self.train_on, TRAIN_ON), ("bad rows", self.bad_rows, BAD_ROWS)):
            if value not in allowed:
                raise StudioError(f"unknown {name} {value!r}; choose one of "
                                  f"{', '.join(str(a) for a in allowed if a is not None)}")
        if self.columns is not None and not (
                isinstance(self.columns, dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items())):
            raise StudioError("columns must map field names to column names, e.g. {\"question\": \"prompt\"}")
        value = self.val_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_VAL_FRACTION:
            raise StudioError(f"validation share must be between 0 and {MAX_VAL_FRACTION}, got {value!r}")
