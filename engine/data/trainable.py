"""Whether anything in a dataset can train, and if not, why: one rule for both sides of a run.

The parent runs ``check_trainable`` before a run folder or a training process exists, reading
only as far as it must (to the first row that trains, the second when a validation share is
asked for); the training child, having tokenised every row, fails with the same words
(``untrainable``, ``bad_rows_stop``, ``empty_validation``). A row trains when it converts to a
conversation, its chat template renders it, and max length leaves it something to learn.

Nothing here imports torch: the tokenizer object is handed in by the caller.
"""

from __future__ import annotations

from typing import Any, Optional

from engine.data.dataset import DatasetSource, Sample
from engine.data.examples import TokenizedExample, tokenize_conversation, tokens_before_learning
from engine.data.formats import (EMPTY, EMPTY_ANSWER, NO_ANSWER, ROLE_ORDER, SYSTEM_ONLY, TEMPLATE_REFUSED,
                                 UNKNOWN_ROLE)
from engine.data.pair_rows import BAD_LABEL, ONE_ANSWER
from engine.data.passes import DatasetPass
from engine.data.readers import RowProblem
from engine.data.rendering import chat_template_for
from engine.data.templates import TemplateRefused
from engine.errors import StudioError

CUT_BY_LENGTH = "cut_by_length"
# With bad rows set to stop, the parent reads this many rows for a bad one before a run starts;
# the child, reading every row, finds one further on.
STOP_SCAN_ROWS = 1000
_REASONS_SHOWN = 3

# What "N of M rows ..." have, by problem code; a code not here is worded by _OTHER.
_PHRASES = {
    ROLE_ORDER: "have their roles in the wrong order",
    UNKNOWN_ROLE: "have a role other than system, user or assistant",
    NO_ANSWER: "have no assistant reply",
    EMPTY_ANSWER: "have an empty answer",
    EMPTY: "have empty text",
    SYSTEM_ONLY: "hold only a system message",
    "missing": "lack a value they need",
    "wrong_type": "hold a value of the wrong type",
    "not_json": "are not valid JSON",
    "not_utf8": "are not UTF-8 text",
    TEMPLATE_REFUSED: "are refused by the chat template",
    CUT_BY_LENGTH: "have nothing to learn within max length {max_length}",
    ONE_ANSWER: "have only one answer",  # preference pairs (engine.data.pair_rows)
    BAD_LABEL: "have a label that is not true or false",
}
_OTHER = "are unusable"
_SINGULAR = {"have": "has", "hold": "holds", "are": "is", "lack": "lacks"}


def example_of(sample: Sample, counts: DatasetPass, tokenizer: Any, template: str, max_length: int,
               train_on: str) -> Optional[TokenizedExample]:
    """One row's training example, or None with the reason counted in ``counts``: a template
    that refuses it (a bad row), or max length cutting it to nothing (a good row that gives
    training nothing). What both the parent's check and the child's tokenising pass count."""
    try:
        example = tokenize_conversation(sample.conversation, tokenizer, max_length, template, train_on)
    except TemplateRefused:
        raise  # the template, not this row: every row would fail, each after its time bound
    except StudioError as exc:
        counts.problem(RowProblem(sample.line, str(exc), sample.file, code=TEMPLATE_REFUSED))
        return None
    counts.good += 1
    if example is None:
        _count_cut(sample, counts, tokenizer, template, max_length, train_on)
    return example


def _count_cut(sample: Sample, counts: DatasetPass, tokenizer: Any, template: str, max_length: int,
               train_on: str) -> None:
    if CUT_BY_LENGTH in counts.first_unusable:
        counts.unusable[CUT_BY_LENGTH] += 1  # only the first is tokenised again, for its prompt's length
        return
    prompt = tokens_before_learning(sample.conversation, tokenizer, template, train_on)
    counts.cannot_train(RowProblem(sample.line, f"its prompt alone takes {prompt} tokens", sample.file,
                                   code=CUT_BY_LENGTH))


def check_trainable(source: DatasetSource, tokenizer: Any, *, max_length: int, train_on: str = "assistant",
                    bad_rows: str = "skip", val_fraction: float = 0.0) -> None:
    """Raise a StudioError saying why when no row of ``source`` can train, when a validation
    share would hold out nothing, or, with ``bad_rows`` "stop", when a bad row turns up in
    the first ``STOP_SCAN_ROWS`` rows.

    Reads only as far as it must: a dataset that trains is read to its first usable row (or
    second, or on to ``STOP_SCAN_ROWS`` rows under "stop"); one that cannot is read to its end,
    so the counts of why are whole.
    """
    template, _fallback = chat_template_for(tokenizer)
    counts = DatasetPass(source, None, None)
    wanted = 2 if val_fraction > 0 else 1  # a validation share needs one row to hold out and one to train
    read_on = STOP_SCAN_ROWS if bad_rows == "stop" else 0  # rows read for a bad one, once enough can train
    usable = 0
    items = source.items()
    try:
        for number, item in enumerate(items, start=1):
            if isinstance(item, RowProblem):
                counts.problem(item)
            else:
                usable += example_of(item, counts, tokenizer, template, max_length, train_on) is not None
            if read_on and counts.bad and usable:
                # A bad row where some can train (where none can, why none can is the reason to give).
                raise StudioError(bad_rows_stop(counts.problems[0], name=source.name))
            if usable >= wanted and number >= read_on:
                return
    finally:
        items.close()
    if usable >= wanted:
        return
    if not usable:
        raise StudioError(untrainable(source.name, counts, max_length))
    raise StudioError(empty_validation(source.name, usable, val_fraction))


def untrainable(name: str, counts: DatasetPass, max_length: int) -> str:
    """Why no row of dataset ``name`` can train: how many rows have which problem, the most
    common first, and where the first of them is. Max length is advised only when it is a reason."""
    total = counts.good + counts.bad
    if not counts.unusable:
        return f"{name} has no rows to train on"
    ranked = counts.unusable.most_common()
    of_total = f" of {total} {'row' if total == 1 else 'rows'}"
    parts = [f"{n}{of_total if i == 0 else ''} {_phrase(code, n, max_length)}"
             for i, (code, n) in enumerate(ranked[:_REASONS_SHOWN])]
    rest = sum(n for _code, n in ranked[_REASONS_SHOWN:])
    if rest:
        parts.append(f"{rest} {_phrase('', rest, max_length)}")
    first = counts.first_unusable[ranked[0][0]]
    message = f"no row of {name} can train: {', '.join(parts)}; first at {first.where()}: {first.reason}"
    if CUT_BY_LENGTH in counts.unusable:
        message += f"; raise max length (now {max_length})"
    return message


def _phrase(code: str, rows: int, max_length: int) -> str:
    verb, rest = _PHRASES.get(code, _OTHER).format(max_length=max_length).split(" ", 1)
    return f"{_SINGULAR.get(verb, verb) if rows == 1 else verb} {rest}"


def bad_rows_stop(first: RowProblem, *, name: str = "", bad: Optional[int] = None,
                  total: Optional[int] = None) -> str:
    """Why a run told to stop on bad rows does not train: with the counts when the whole
    dataset was read (the child), else naming the dataset (the parent's first rows)."""
    counted = f"{bad} of {total} rows are bad" if bad is not None else f"{name} has bad rows"
    return (f"{counted}; first at {first.where()}: {first.reason}. Fix the file, or choose to train on "
            "the good rows")


def empty_validation(name: str, usable: int, val_fraction: float) -> str:
    """Why a validation share holds out nothing: too few rows can train to spare one
    (``engine.data.split`` keeps at least one row for training)."""
    return (f"a validation share of {val_fraction:g} holds out no row: only {usable} row of {name} can train, "
            "and training needs it; set the validation share to 0, or add rows")


def all_copies(name: str, usable: int) -> str:
    """Why a validation share holds out nothing from rows that are all one conversation: every copy
    of a held-out row is held out with it (``engine.data.split``), which would leave none to train."""
    return (f"a validation share holds out no row: the {usable:,} rows of {name} that can train are all the same "
            "conversation, and a copy held out would also be trained on; set the validation share to 0, or add rows")
