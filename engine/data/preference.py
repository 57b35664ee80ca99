"""Preference data for DPO, ORPO, SimPO and KTO: which objective a file's layout suits, its rows
read as TRL's pairs (bad rows counted with their lines, pairs whose two answers are the same
skipped and counted), their token ids exactly as TRL's trainers make them, and the counts a run
and the Data page show (pairs, identical pairs, prompts that max length cuts off, bad rows).

Nothing here imports torch: the tokenizer object is handed in by the caller. A model without a
chat template is rendered with ChatML, as SFT trains it (``engine.data.rendering.chat_template_for``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from engine.core.choices import OBJECTIVE_LABELS, PAIRED_OBJECTIVES, PREFERENCE_FORMATS, PREFERENCE_OBJECTIVES
from engine.data.dataset import DatasetSource, Sample
from engine.data.formats import FORMATS
from engine.data.heldout import content_hash
from engine.data.pair_rows import BAD_LABEL, ONE_ANSWER
from engine.data.passes import DatasetPass
from engine.data.readers import RowProblem
from engine.data.rendering import chat_template_for, render_conversation
from engine.data.trainable import STOP_SCAN_ROWS, bad_rows_stop, untrainable
from engine.errors import StudioError

IDENTICAL = "identical"  # a pair whose chosen and rejected answers are the same
PROMPT_CUT = "prompt_cut"  # a pair whose prompt alone fills max length: TRL drops it

# What each layout holds, in the words a refusal uses.
_HOLDS = {
    "preference": "preference pairs (prompt / chosen / rejected)",
    "preference_conversations": "preference pairs (chosen / rejected conversations)",
    "sharegpt_preference": "preference pairs (ShareGPT conversations with chosen / rejected turns)",
    "unpaired_preference": "answers labelled good or bad (KTO's prompt / completion / label)",
}
_PAIRED_NAMES = ", ".join(OBJECTIVE_LABELS[name] for name in PAIRED_OBJECTIVES)


def objective_problem(source_format: str, objective: str) -> Optional[str]:
    """Why a file of this layout cannot train with this objective (one line saying what the file
    holds and which objective or mapping takes it), or None when it can."""
    if objective not in PREFERENCE_OBJECTIVES:
        if source_format in PREFERENCE_FORMATS:
            takes = "KTO" if source_format == "unpaired_preference" else f"{_PAIRED_NAMES} or KTO"
            # Only prompt / chosen columns read as SFT's question / answer pairs as they are.
            mapping = (", or read it as question / answer pairs (format qa, answer=chosen) to learn the preferred "
                       "answers" if source_format == "preference" else "")
            return (f"the dataset holds {_HOLDS[source_format]}, which supervised fine-tuning cannot learn from: "
                    f"train it with {takes}{mapping}")
        return None
    title = FORMATS[source_format].title if source_format in FORMATS else source_format
    label = OBJECTIVE_LABELS[objective]
    if source_format not in PREFERENCE_FORMATS:
        kto = ", or for KTO prompt / completion / label" if objective == "kto" else ""
        return (f"{label} learns from preferences and the dataset holds one answer per prompt ({title}): train it "
                f"with supervised fine-tuning, or map its columns as a pair (prompt=, chosen=, rejected=){kto}")
    if objective in PAIRED_OBJECTIVES and source_format == "unpaired_preference":
        return (f"{label} needs a chosen and a rejected answer per prompt and the dataset holds single answers "
                "labelled good or bad (KTO's layout): train it with KTO")
    return None


@dataclass
class PreferenceRows:
    """The rows a preference run trains on, in TRL's conversational format, and what was skipped.

    ``rows`` are pairs (``prompt`` / ``chosen`` / ``rejected``) or, for KTO, labelled answers
    (``prompt`` / ``completion`` / ``label``); ``hashes`` one per row (a pair unpaired for KTO gives
    both its rows the pair's hash, so they land on one side of a validation split); ``lines`` where
    each came from. ``identical`` pairs (the same answer twice) are skipped, not bad."""

    rows: list[dict]
    hashes: list[str]
    lines: list[int]
    total_rows: int
    bad_rows: int
    problems: list[RowProblem]
    identical: int
    first_identical: Optional[RowProblem] = None


class _Reading:
    """One pass over a preference file's rows, in order: bad rows counted (with their lines),
    pairs whose two answers are the same set aside, the rest handed back to train. Both the run
    (``read_preferences``, every row) and the parent's check (``check_preferences``, as few as it
    can) read through it, so they sort rows and refuse files by the same rules."""

    def __init__(self, source: DatasetSource) -> None:
        self.source = source
        self.counts = DatasetPass(source, None, None)
        self.identical: list[RowProblem] = []
        self.usable = 0

    def sort(self, item: Sample | RowProblem) -> Optional[Sample]:
        """The row when it can train, else None (counted as bad, or as identical)."""
        if isinstance(item, RowProblem):
            self.counts.problem(item)
            return None
        if "chosen" in item.pair and _same_answer(item.pair):
            self.identical.append(RowProblem(item.line, "its chosen and rejected answers are the same", item.file,
                                             item.unit, IDENTICAL))
            return None
        self.usable += 1
        return item

    @property
    def total(self) -> int:
        return self.counts.bad + len(self.identical) + self.usable

    def refusal(self, bad_rows: str) -> Optional[str]:
        """Why the rows read so far cannot train (a bad row under "stop"; no row left to train), or None.
        Its counts are the whole file's once every row has been read."""
        if self.counts.bad and bad_rows == "stop":
            return bad_rows_stop(self.counts.problems[0], bad=self.counts.bad, total=self.total)
        if not self.usable:
            return _nothing_trains(self.source, self.counts, self.identical, self.total)
        return None


def read_preferences(source: DatasetSource, *, objective: str, bad_rows: str = "skip") -> PreferenceRows:
    """Every row of ``source`` as ``objective`` trains on it. Raises StudioError (one line) when the
    layout does not suit the objective, when no row can train (every pair identical, every row with
    one answer or a label that is not a boolean...), or when a row is bad and ``bad_rows`` is "stop".
    KTO reads pairs too: each becomes a good answer and a bad one (TRL's ``unpair_preference_dataset``)."""
    problem = objective_problem(source.format, objective)
    if problem:
        raise StudioError(problem)
    reading = _Reading(source)
    samples = [sample for item in source.items() if (sample := reading.sort(item)) is not None]
    refusal = reading.refusal(bad_rows)
    if refusal:
        raise StudioError(refusal)
    rows, hashes, lines = [], [], []
    for sample in samples:
        digest = content_hash([sample.pair])
        for row in _as_trained(sample.pair, objective):
            rows.append(row)
            hashes.append(digest)
            lines.append(sample.line)
    counts, identical = reading.counts, reading.identical
    return PreferenceRows(rows, hashes, lines, reading.total, counts.bad, counts.problems, len(identical),
                          identical[0] if identical else None)


def _same_answer(pair: dict) -> bool:
    return [m["content"].strip() for m in pair["chosen"]] == [m["content"].strip() for m in pair["rejected"]]


def _as_trained(pair: dict, objective: str) -> list[dict]:
    if objective == "kto" and "chosen" in pair:  # a pair unpaired: its chosen answer is good, its rejected bad
        return [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
    return [pair]


def _nothing_trains(source: DatasetSource, counts: DatasetPass, identical: list[RowProblem], total: int) -> str:
    if identical and not counts.bad:
        first = identical[0]
        return (f"every pair of {source.name} has the same chosen and rejected answer ({total:,} of {total:,}; first at "
                f"{first.where()}): there is nothing to prefer; fix the rejected answers, or train the answers with "
                "supervised fine-tuning (question / answer format, answer=chosen)")
    message = untrainable(source.name, counts, 0)
    if identical:
        message += f"; and {len(identical):,} pairs have the same chosen and rejected answer"
    if BAD_LABEL in counts.unusable:
        message += "; map label= to a column of true / false"
    elif ONE_ANSWER in counts.unusable:
        message += ("; a pair needs a chosen and a rejected answer: map the other answer column, or train the "
                    "answers with KTO (prompt / completion / label)")
    return message


# ------------------------------------------------------------------ tokens
def tokenise_pair(tokenizer: Any, row: dict) -> tuple[list[int], list[int], list[int]]:
    """A pair's ids as TRL's ``DPOTrainer._prepare_dataset`` makes them: the prompt rendered with
    the generation prompt, prompt + each answer rendered whole, and the prompt cut to the start the
    three share (a template may render the prompt alone differently); each answer is the rest."""
    prompt_ids, (chosen_ids, rejected_ids) = _tokenise(tokenizer, row["prompt"], [row["chosen"], row["rejected"]])
    return prompt_ids, chosen_ids, rejected_ids


def tokenise_answer(tokenizer: Any, row: dict) -> tuple[list[int], list[int]]:
    """A KTO row's (prompt ids, completion ids), as ``KTOTrainer._prepare_dataset`` makes them."""
    prompt_ids, (completion_ids,) = _tokenise(tokenizer, row["prompt"], [row["completion"]])
    return prompt_ids, completion_ids


def _tokenise(tokenizer: Any, prompt: list[dict], answers: list[list[dict]]) -> tuple[list[int], list[list[int]]]:
    template, _fallback = chat_template_for(tokenizer)

    def ids(messages: list[dict], generation: bool) -> list[int]:
        # As apply_chat_template tokenises: the template writes the special tokens itself.
        text = render_conversation(messages, tokenizer, add_generation_prompt=generation, chat_template=template)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    prompt_ids = ids(prompt, True)
    whole = [ids(prompt + answer, False) for answer in answers]
    shared = min(_common_prefix(prompt_ids, sequence) for sequence in whole)
    return prompt_ids[:shared], [sequence[shared:] for sequence in whole]


def tokenise_row(tokenizer: Any, row: dict) -> tuple[list[int], list[list[int]]]:
    """A trained row's prompt ids and its answers' ids: a pair's two, or a KTO row's one."""
    if "chosen" in row:
        prompt_ids, *answer_ids = tokenise_pair(tokenizer, row)
        return prompt_ids, answer_ids
    prompt_ids, completion_ids = tokenise_answer(tokenizer, row)
    return prompt_ids, [completion_ids]


def prompt_length(tokenizer: Any, row: dict) -> int:
    """The tokens of a trained row's prompt (a pair's, or a KTO answer's), as TRL's trainer cuts it."""
    return len(tokenise_row(tokenizer, row)[0])


def prompt_fills(length: int, max_length: int) -> bool:
    """TRL's trainers drop a row whose prompt alone fills max length: nothing is left to learn."""
    return length >= max_length


def _cut(line: int, length: int) -> RowProblem:
    return RowProblem(line, f"its prompt alone takes {length:,} tokens", code=PROMPT_CUT)


def _every_prompt_cut(name: str, max_length: int, first: RowProblem) -> str:
    return (f"no row of {name} can train: the prompt of every one fills max length {max_length:,} (first at "
            f"{first.where()}: {first.reason}); raise max length")


def _common_prefix(ids: list[int], other: list[int]) -> int:
    length = 0
    for token, other_token in zip(ids, other):
        if token != other_token:
            break
        length += 1
    return length


# ------------------------------------------------------------------ counts
@dataclass
class PreferenceCounts:
    """What a preference run makes of a file: its rows, the bad ones, the identical pairs, and the
    rows whose prompt fills max length (TRL's trainers drop a row whose prompt alone fills it: nothing
    is left to learn); ``rows`` is what trains (KTO: two per pair read)."""

    layout: str
    objective: str
    total_rows: int
    bad_rows: int
    identical: int
    prompt_cut: Optional[int]  # None: not measured (no tokenizer)
    rows: int
    max_length: int
    problems: list[RowProblem] = field(default_factory=list)
    first_cut: Optional[RowProblem] = None
    first_identical: Optional[RowProblem] = None

    @property
    def pairs(self) -> int:
        """The rows read as pairs (KTO's files: as labelled answers), identical ones not counted."""
        return self.total_rows - self.bad_rows - self.identical

    def sentence(self) -> str:
        noun = "row" if self.objective == "kto" else "pair"
        skipped = [f"{n:,} {what}" for n, what in ((self.bad_rows, "bad"), (self.identical, "identical"),
                                                     (self.prompt_cut, f"whose prompt fills max length {self.max_length:,}"))
                   if n]
        start = f"{self.total_rows:,} rows in the file"
        if skipped:
            start += f": {', '.join(skipped)} skipped"
        return f"{start} → {self.rows:,} {noun}{'' if self.rows == 1 else 's'} to train on"

    def to_dict(self) -> dict:
        return {"layout": self.layout, "layout_title": FORMATS[self.layout].title, "objective": self.objective,
                "rows": self.total_rows, "bad_rows": self.bad_rows, "pairs": self.pairs,
                "identical_pairs": self.identical,
                "prompts_cut_off": self.prompt_cut, "trained_rows": self.rows, "max_length": self.max_length,
                "summary": self.sentence(),
                "problems": [{"line": p.line, "file": p.file, "unit": p.unit, "reason": p.reason}
                             for p in self.problems]}


def default_objective(source_format: str) -> str:
    """The objective a preference layout suits best when none is named: DPO, or KTO for labelled answers."""
    return "kto" if source_format == "unpaired_preference" else "dpo"


@dataclass
class PreferenceScan:
    """A preference file read once for an objective, each row's prompt measured in tokens (when a
    tokenizer was given): its counts for any max length without reading it again (the Data page)."""

    layout: str
    objective: str
    read: PreferenceRows
    prompt_lengths: Optional[list[int]]  # one per row of ``read.rows``; None: not measured

    def counts(self, max_length: int) -> PreferenceCounts:
        read = self.read
        cut = kept = None
        first_cut = None
        if self.prompt_lengths is not None:
            cut_rows = [index for index, length in enumerate(self.prompt_lengths) if prompt_fills(length, max_length)]
            cut, kept = len(cut_rows), len(read.rows) - len(cut_rows)
            if cut_rows:
                first = cut_rows[0]
                first_cut = _cut(read.lines[first], self.prompt_lengths[first])
        return PreferenceCounts(self.layout, self.objective, read.total_rows, read.bad_rows, read.identical, cut,
                                len(read.rows) if kept is None else kept, max_length, read.problems, first_cut,
                                read.first_identical)


def scan_preferences(source: DatasetSource, tokenizer: Any, *, objective: str, bad_rows: str = "skip") -> PreferenceScan:
    """``source`` read for ``objective`` and, given a tokenizer, every row's prompt measured as TRL
    tokenises it (``read_preferences``' refusals raise here)."""
    read = read_preferences(source, objective=objective, bad_rows=bad_rows)
    lengths = [prompt_length(tokenizer, row) for row in read.rows] if tokenizer is not None else None
    return PreferenceScan(source.format, objective, read, lengths)


def preference_counts(source: DatasetSource, tokenizer: Any, *, objective: str, max_length: int,
                      bad_rows: str = "skip") -> PreferenceCounts:
    """The counts of a whole preference file for ``objective`` and ``max_length`` (``data inspect``);
    raises StudioError (one line) when nothing can train, as ``check_preferences`` does. Without a
    tokenizer (None) the prompts are not measured: ``prompt_cut`` is None."""
    counts = scan_preferences(source, tokenizer, objective=objective, bad_rows=bad_rows).counts(max_length)
    if counts.rows == 0:
        raise StudioError(_every_prompt_cut(source.name, max_length, counts.first_cut))
    return counts


def check_preferences(source: DatasetSource, tokenizer: Any, *, objective: str, max_length: int,
                      bad_rows: str = "skip") -> None:
    """The parent's check before a preference run: raise StudioError (one line, in the words the run
    would fail with) when the layout does not suit ``objective``, when no row can train (every pair
    identical, one answer only, labels that are not booleans, every prompt filling ``max_length``), or,
    with ``bad_rows`` "stop", when a bad row turns up in the first ``STOP_SCAN_ROWS`` rows.

    Reads only as far as it must, as SFT's ``check_trainable`` does: rows are tokenised (three
    template renders a pair) only until one's prompt leaves room to learn, and the file is read to
    that row (or on to ``STOP_SCAN_ROWS`` rows under "stop"); a file that cannot train is read to its
    end, so the refusal's counts are whole."""
    problem = objective_problem(source.format, objective)
    if problem:
        raise StudioError(problem)
    reading = _Reading(source)
    read_on = STOP_SCAN_ROWS if bad_rows == "stop" else 0  # rows read for a bad one, once a row can train
    trains = False
    first_cut: Optional[RowProblem] = None
    items = source.items()
    try:
        for number, item in enumerate(items, start=1):
            sample = reading.sort(item)
            if sample is not None and not trains:
                for row in _as_trained(sample.pair, objective):
                    length = prompt_length(tokenizer, row)
                    if not prompt_fills(length, max_length):
                        trains = True
                        break
                    first_cut = first_cut or _cut(sample.line, length)
            if read_on and reading.counts.bad and trains:
                # A bad row where some can train (where none can, why none can is the reason to give).
                raise StudioError(bad_rows_stop(reading.counts.problems[0], name=source.name))
            if trains and number >= read_on:
                return
    finally:
        items.close()
    refusal = reading.refusal(bad_rows)
    if refusal:
        raise StudioError(refusal)
    if not trains:
        raise StudioError(_every_prompt_cut(source.name, max_length, first_cut))
