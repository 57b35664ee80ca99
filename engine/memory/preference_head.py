"""What TRL 1.16's preference trainers compute their log-probabilities with, a memory decision
the estimate reads from here (``engine.memory.estimate``).

DPO and KTO patch the model with ``trl.trainer.utils.add_fused_lm_head``: the output head runs
in tiles of TOKEN_TILE tokens x VOCAB_TILE vocabulary entries
(``trl.kernels.chunked_logprob.ChunkedLogProbFunction``), so no (rows, length, vocabulary)
logits exist. Its buffer is allocated at the full tile width whatever the vocabulary, once in
the forward pass and again in the backward pass. On a GPU a Triton kernel folds each tile in
place; elsewhere torch folds it with whole-tile temporaries (``_forward_tile``,
``_backward_tile``), counted below in fp32 tiles of the real width.

ORPO and CPO/SimPO (``trl.experimental``) call the model's own forward and take
log-probabilities from its full logits.
"""

from __future__ import annotations

TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
VOCAB_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
# Off a GPU, the widest moments of the torch fold, in fp32 tiles of the real width: forward z,
# z - max and exp(z - max) (with the entropy's e * z); backward y, z, log p, p, the gradient,
# (one-hot - p) and its product with the incoming gradient, beside the boolean one-hot
# (measured: 7.25 tiles at an 8192-entry vocabulary, bench/results/cpu-preference-*.json).
CPU_FORWARD_TILES = 4
CPU_BACKWARD_TILES = 7
CPU_BACKWARD_BOOLS = 1
# Bytes per scored position the fused head keeps or returns beside its input: the int64 labels
# and clamped targets, the label mask, the fp32 log-normaliser, entropy and log-probabilities,
# and their masked copies the model returns.
PER_POSITION = 8 + 8 + 1 + 4 * 6
# The fp32 running statistics of its online log-sum-exp, per scored position.
RUNNING_STATS = 4 * 7


def tile_bytes(positions: int, element: int) -> int:
    """The fused head's tile buffer: up to TOKEN_TILE positions x the full VOCAB_TILE width."""
    return min(positions, TOKEN_TILE) * VOCAB_TILE * element


def cpu_temporaries(positions: int, vocab: int, backward: bool) -> int:
    """The torch fold's whole-tile temporaries (none on a GPU, where Triton folds in place)."""
    per_entry = 4 * CPU_BACKWARD_TILES + CPU_BACKWARD_BOOLS if backward else 4 * CPU_FORWARD_TILES
    return per_entry * min(positions, TOKEN_TILE) * min(vocab, VOCAB_TILE)
