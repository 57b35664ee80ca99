"""Writing a dataset's tokenised examples for training: one streaming pass into an Arrow
file of token ids and labels, holding one small batch in memory at a time, the file in
place only once complete.

Each example also carries where its row is in the dataset and a hash of its conversation
(``SOURCE_COLUMNS``): the run splits by that hash and records the rows it held out
(``engine.data.heldout``); the training child drops those columns before training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.core.atomic import staging_path
from engine.data.counts import RowCounts
from engine.data.dataset import DatasetSource
from engine.data.examples import ExampleStats
from engine.data.heldout import content_hash
from engine.data.passes import Cancelled, DatasetPass, Progress
from engine.data.readers import RowProblem
from engine.data.rendering import chat_template_for
from engine.data.trainable import CUT_BY_LENGTH, example_of

_WRITE_BATCH = 1000
# Where each example's row is (its place in the reader's pass, and the line/row and file the
# reader names it by) and its conversation's hash.
SOURCE_COLUMNS = ("source_row", "source_line", "source_file", "source_unit", "source_hash")


@dataclass
class WrittenExamples:
    path: Path
    stats: ExampleStats
    total_rows: int
    bad_rows: int
    problems: list[RowProblem]
    counts: DatasetPass  # why rows give training nothing (``engine.data.trainable`` words it)
    max_length: int

    def row_counts(self, val_fraction: float = 0.0) -> RowCounts:
        """What became of the rows, as the Data page and ``data inspect`` count them beforehand."""
        return RowCounts(self.total_rows, self.bad_rows, self.counts.unusable[CUT_BY_LENGTH], self.stats.truncated,
                         self.max_length, val_fraction)


def write_examples(
    source: DatasetSource,
    tokenizer: Any,
    max_length: int,
    path: Path,
    *,
    train_on: str = "assistant",
    progress: Optional[Progress] = None,
    cancelled: Optional[Cancelled] = None,
) -> Optional[WrittenExamples]:
    """Tokenise every good row into an Arrow file (``input_ids``, ``labels``) for training.

    Rows stream through in batches, so memory stays flat however large the dataset; the
    file appears under ``path`` only once complete. Uses the model's chat template, or
    ChatML when it has none. None when cancelled.
    """
    import pyarrow as pa

    template, _fallback = chat_template_for(tokenizer)
    counts = DatasetPass(source, progress, cancelled)
    stats = ExampleStats()
    tokens = pa.list_(pa.int32())
    kinds = (tokens, tokens, pa.int64(), pa.int64(), pa.string(), pa.string(), pa.string())
    names = ("input_ids", "labels", *SOURCE_COLUMNS)
    schema = pa.schema(list(zip(names, kinds)))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = staging_path(path, "partial")
    batch: list[list[Any]] = [[] for _ in names]
    stopped = False
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            def flush() -> None:
                writer.write_batch(pa.record_batch([pa.array(values, kind) for values, kind in zip(batch, kinds)],
                                                   schema=schema))
                for values in batch:
                    values.clear()

            for number, item in enumerate(source.items()):
                if number % 512 == 0 and not counts.tick():
                    stopped = True
                    break
                if isinstance(item, RowProblem):
                    counts.problem(item)
                    continue
                example = example_of(item, counts, tokenizer, template, max_length, train_on)
                if example is not None:
                    stats.add(example)
                    row = (example.input_ids, example.labels, number, item.line, item.file, item.unit,
                           content_hash(item.conversation))
                    for values, value in zip(batch, row):
                        values.append(value)
                    if len(batch[0]) == _WRITE_BATCH:
                        flush()
            if batch[0] and not stopped:
                flush()
        if stopped:
            return None
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    stats.dropped = counts.unusable[CUT_BY_LENGTH]
    return WrittenExamples(path=path, stats=stats, total_rows=counts.good + counts.bad, bad_rows=counts.bad,
                           problems=counts.problems, counts=counts, max_length=max_length)
