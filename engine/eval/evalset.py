"""The set an evaluation scores: prompts, each with the reference answer the dataset gives for it
(and, for a task whose answer is a choice or a number, its label), read from a dataset file the
Data page reads, or from the rows a run held out of its training (``engine.data.heldout``).

An example is one row: its conversation up to the last assistant turn is the prompt, that turn is
the reference. A row that ends on a user turn is a prompt with no reference: such a set can still
be judged and checked for forgetting, but not scored against references.

The set's hash names it wherever results are kept (an adapter's ``studio.json`` keys them by it):
two evaluations on the same prompts and references compare, whatever file they came from.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from engine.data.dataset import DataOptions, Sample, open_dataset
from engine.data.formats import TEXT_ROLE
from engine.data.heldout import read_heldout
from engine.errors import StudioError
from engine.run.config import RunConfig
from engine.run.rundir import RunDir

# More prompts than this make an evaluation of hours on a CPU; a user who wants more sets a limit.
DEFAULT_LIMIT = 500


@dataclass(frozen=True)
class EvalExample:
    """One prompt of the set, with its reference answer and label where the row gives them."""

    index: int  # its position in the set, from 0
    prompt: list[dict]  # the conversation up to the answer
    reference: Optional[str]
    label: Optional[str]
    where: str  # where the row is, as the Data page names it ("line 12")

    @property
    def conversation(self) -> list[dict]:
        """The prompt with its reference as the assistant's turn (held-out loss scores that turn)."""
        if self.reference is None:
            raise StudioError(f"example {self.index + 1} ({self.where}) has no reference answer")
        return [*self.prompt, {"role": "assistant", "content": self.reference}]


@dataclass(frozen=True)
class EvalSet:
    name: str  # what a table calls it: the file's name, or "<run>: held-out rows"
    source: str  # the dataset's path, or the run folder whose held-out rows these are
    kind: str  # "dataset" or "heldout"
    examples: list[EvalExample]
    hash: str
    # A run's held-out rows are scored for loss as the run tokenised them: its max length and masking.
    max_length: Optional[int] = None
    train_on: Optional[str] = None

    @property
    def has_references(self) -> bool:
        """Whether every example has a reference answer (the metrics that compare need them all)."""
        return all(example.reference is not None for example in self.examples)

    def describe(self) -> dict[str, Any]:
        """The set as the results document names it."""
        return {"name": self.name, "source": self.source, "kind": self.kind, "hash": self.hash,
                "examples": len(self.examples), "has_references": self.has_references}


def load_evalset(*, dataset: Union[str, Path, None] = None, run_dir: Union[str, Path, None] = None,
                 options: Optional[DataOptions] = None, label_column: Optional[str] = None,
                 limit: Optional[int] = DEFAULT_LIMIT) -> EvalSet:
    """The set from a dataset file or folder, or from a run's held-out rows (exactly one of them).

    ``limit`` keeps the first rows only (None: every row). Raises StudioError (one line) for a set
    with no prompts, a label column the dataset lacks, or plain text, which holds no prompts.
    """
    if (dataset is None) == (run_dir is None):
        raise StudioError("evaluate on a dataset or on a run's held-out rows: give one of them")
    if limit is not None and limit < 1:
        raise StudioError(f"the example limit must be a positive number, got {limit}")
    if run_dir is not None:
        if label_column:
            raise StudioError("a label column is read from a dataset file: give --dataset with it, not --run")
        samples = read_heldout(run_dir)
        name, source, kind = f"{Path(run_dir).name}: held-out rows", str(Path(run_dir).resolve()), "heldout"
        config = RunConfig.load(RunDir(run_dir).config)
        training = {"max_length": config.max_length, "train_on": config.train_on}
    else:
        samples, name = _dataset_samples(dataset, options or DataOptions(), label_column, limit)
        source, kind = str(Path(dataset).resolve()) if Path(dataset).exists() else str(dataset), "dataset"
        training = {}
    examples = _examples(samples[:limit] if limit else samples, label_column)
    if not examples:
        raise StudioError(f"{name} has no prompts to evaluate on")
    return EvalSet(name, source, kind, examples, _set_hash(examples), **training)


def _dataset_samples(dataset: Union[str, Path], options: DataOptions, label_column: Optional[str],
                     limit: Optional[int]) -> tuple[list[Sample], str]:
    source = open_dataset(dataset, options)
    if label_column and label_column not in source.columns:
        raise StudioError(f"{source.label} has no column {label_column!r}; its columns are "
                          f"{', '.join(source.columns)}")
    if source.format == "text":
        raise StudioError(f"{source.label} is plain text, which holds no prompts to answer: evaluate on "
                          "conversations, instructions or question-answer rows")
    samples: list[Sample] = []
    items = source.items(keep=(label_column,) if label_column else (), prompts=True)
    try:
        for item in items:
            if isinstance(item, Sample):
                samples.append(item)
                if limit and len(samples) >= limit:
                    break
    finally:
        items.close()
    return samples, source.name


def _examples(samples: list[Sample], label_column: Optional[str]) -> list[EvalExample]:
    examples: list[EvalExample] = []
    for sample in samples:
        turns = sample.conversation
        if len(turns) == 1 and turns[0]["role"] == TEXT_ROLE:
            continue  # a text row within a set of prompts: nothing to answer
        reference = turns[-1]["content"] if turns[-1]["role"] == "assistant" else None
        prompt = turns[:-1] if reference is not None else turns
        if not any(turn["content"].strip() for turn in prompt if turn["role"] != "system"):
            continue
        label = sample.fields.get(label_column) if label_column else None
        examples.append(EvalExample(len(examples), prompt, reference, None if label is None else str(label),
                                    _where(sample)))
    return examples


def _where(sample: Sample) -> str:
    place = f"{sample.unit} {sample.line}"
    return f"{sample.file} {place}" if sample.file else place


def _set_hash(examples: list[EvalExample]) -> str:
    """SHA-256 of the prompts, references and labels, in order: the set's identity."""
    text = json.dumps([[example.prompt, example.reference, example.label] for example in examples],
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
