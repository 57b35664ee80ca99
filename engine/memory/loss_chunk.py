"""How many tokens the training loss takes at a time (``engine.train.lean_loss``), a memory
decision: the loss and the estimate that counts its memory read it from here.

Each chunk's three matmuls read the whole output head, so a chunk of few rows runs at memory
speed rather than compute speed. Measured on the starter's head (49152 x 576, fp32, 2 CPU
cores; forward and backward over 1024 tokens, against the stock loss's time): 128 rows took
1.2-1.3x the stock time, 256 to 512 rows 0.8-1.1x (within the noise of a shared machine), and
32 rows 2x. On a GPU, 256 bf16 rows are about where the matmuls stop being bound by the weight's
reads. Small vocabularies take more rows, up to CHUNK_BYTES of fp32 logits: fewer, larger
matmuls for a few MiB. So what a chunk holds is a constant of the model, whatever the batch:
8 bytes a row per vocabulary entry (fp32 logits and log-probabilities), 128 MiB for the starter
and 256 MiB per 128k of vocabulary, where the stock loss holds 12 bytes per vocabulary entry
for every token of the batch.
"""

from __future__ import annotations

MIN_CHUNK_ROWS = 256
CHUNK_BYTES = 64 * (1 << 20)


def chunk_rows(vocab_size: int) -> int:
    """Rows (tokens) per chunk: MIN_CHUNK_ROWS, or as many as CHUNK_BYTES of fp32 logits hold."""
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // (4 * vocab_size))
