"""The GGUF file types the studio writes, how each is made, and how close to the Hugging Face
model llama.cpp must find each one (``agreement``) before the export counts as good.

Float types come straight out of llama.cpp's converter; Q8_0 and the K-quants are made by
llama.cpp's quantiser from the converter's f16 file, as llama.cpp's own ``llama-quantize`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from engine.errors import StudioError


@dataclass(frozen=True)
class Quant:
    name: str  # as the CLI and the files name it: lower case, llama.cpp's spelling
    label: str  # as llama.cpp's users know it
    what: str  # in plain words, for the export dialog
    converter_type: str  # the converter's --outtype: the final type, or the f16 file to quantise
    ftype: Optional[str]  # llama_cpp's LLAMA_FTYPE_* constant to quantise to; None: the converter's file is final
    bits_per_weight: float  # to size the file before it is written
    # Bounds on llama.cpp against the Hugging Face model over the probe positions (engine.gguf.agreement):
    # the share of the positions where the model is decided whose top token llama.cpp also picks, and
    # the mean KL divergence (nats). Set from the starter (SmolLM2-135M-Instruct, the smallest model of
    # the catalog and the one quantisation hurts most) with three trained adapters, at about twice the
    # worst KL and a few points under the worst top-1 measured (bench/results/export-bounds-*.txt):
    # an ordinary export of a larger model lands well inside them.
    min_top1: float
    max_mean_kl: float


QUANTS: dict[str, Quant] = {q.name: q for q in (
    Quant("q4_k_m", "Q4_K_M", "4-bit K-quant, medium: what most llama.cpp and Ollama users run", "f16",
          "LLAMA_FTYPE_MOSTLY_Q4_K_M", 4.9, 0.85, 0.25),
    Quant("q5_k_m", "Q5_K_M", "5-bit K-quant, medium: a little larger, a little closer", "f16",
          "LLAMA_FTYPE_MOSTLY_Q5_K_M", 5.7, 0.85, 0.5),
    Quant("q6_k", "Q6_K", "6-bit K-quant: close to 8-bit at three quarters of its size", "f16",
          "LLAMA_FTYPE_MOSTLY_Q6_K", 6.6, 0.93, 0.08),
    Quant("q8_0", "Q8_0", "8-bit: half the size of f16, nearly lossless", "f16", "LLAMA_FTYPE_MOSTLY_Q8_0", 8.5,
          0.95, 0.03),
    Quant("f16", "F16", "16-bit float: the model as trained, for most models", "f16", None, 16, 0.98, 0.001),
    Quant("bf16", "BF16", "bfloat16: the model as trained in bf16", "bf16", None, 16, 0.95, 0.01),
    Quant("f32", "F32", "32-bit float: the largest, for checking", "f32", None, 32, 0.99, 0.001),
)}
DEFAULT_QUANT = "q4_k_m"
# What a GGUF LoRA can be: llama.cpp's LoRA converter writes floats or q8_0, and nothing quantises adapters.
LORA_TYPES = ("f16", "bf16", "q8_0", "f32")


def quant(name: str) -> Quant:
    """The file type called ``name`` (any case), or one line naming the ones there are."""
    found = QUANTS.get(str(name).lower())
    if found is None:
        raise StudioError(f"unknown GGUF type {name!r}; choose one of {', '.join(q.label for q in QUANTS.values())}")
    return found
