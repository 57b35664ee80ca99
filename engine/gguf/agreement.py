"""An exported GGUF file, loaded by llama.cpp (through llama-cpp-python) and compared with the
Hugging Face model it was made from, on the probe prompts every merge is checked with.

Both sides are given the same token ids, so the figures measure the file's weights and
llama.cpp's arithmetic: the share of positions whose most likely next token agrees (top-1), the
mean KL divergence of llama.cpp's next-token distribution from the model's, and the first greedy
tokens of each from the first probe prompt. Separately, llama.cpp's own tokenizer must turn the
probe prompts into the same ids: a file whose vocabulary or special tokens came out wrong
answers differently however good its weights are.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from engine.adapters.base_model import attach, load_base
from engine.adapters.merge import PROBE_TOKENS, probe_texts
from engine.core.progress import ProgressFn, quiet
from engine.gguf.quants import Quant
from engine.gguf.runtime import require

GREEDY_TOKENS = 16
# A position counts towards the top-1 bound only where the model is decided: its most likely next
# token at least this many nats above the runner-up (about 1.6 times likelier). Where two tokens are
# all but tied, any rounding picks either; a flip there says nothing about the file. Untrained
# models are tied almost everywhere, and then the KL divergence is the measure that speaks.
DECIDED_NATS = 0.5


@dataclass
class Agreement:
    quant: str
    probes: int
    positions: int
    top1: float  # share of positions whose most likely next token is the same
    decided: int  # positions where the model's choice leads its runner-up by DECIDED_NATS
    decided_top1: Optional[float]  # the share of those where llama.cpp's choice is the same; None without any
    mean_kl: float  # KL(model || llama.cpp) in nats, averaged over the positions
    max_kl: float
    greedy_same: int  # how many of the first greedy tokens match, from the start
    greedy_tokens: int
    greedy_model: str
    greedy_gguf: str
    tokens_match: bool  # llama.cpp's tokenizer gives the model's ids for every probe prompt
    min_top1: float
    max_mean_kl: float
    within: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _log_softmax(rows: Any) -> Any:
    import numpy as np

    rows = rows.astype(np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _model_logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].double().numpy()


def _model_greedy(model: Any, ids: list[int], count: int) -> list[int]:
    """The model's first ``count`` greedy tokens, end-of-text included (llama.cpp's loop does not stop either)."""
    import torch

    tokens: list[int] = []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=True)
        for _ in range(count):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), cache=out.cache, use_cache=True)
    return tokens


def _gguf_greedy(llm: Any, ids: list[int], count: int) -> list[int]:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    tokens: list[int] = []
    for _ in range(count):
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([tokens[-1]])
    return tokens


def open_gguf(path: Path, lora: Optional[Path] = None, context: int = 512, all_logits: bool = False) -> Any:
    """A GGUF file in llama.cpp, quiet, on this machine's cores."""
    require()
    from llama_cpp import Llama

    return Llama(model_path=str(path), lora_path=str(lora) if lora else None, n_ctx=context,
                 logits_all=all_logits, n_threads=max(1, (os.cpu_count() or 2)), verbose=False, seed=0)


def check_agreement(gguf_path: str | Path, hf_folder: str | Path, quant: Quant, *, lora: Optional[str | Path] = None,
                    adapter: Optional[str | Path] = None, chat_template: Optional[str] = None,
                    progress: Optional[ProgressFn] = None) -> Agreement:
    """``gguf_path`` in llama.cpp against the Hugging Face model in ``hf_folder`` (with ``adapter``
    applied by peft, for a GGUF LoRA given as ``lora``), on the probe prompts."""
    import numpy as np

    started = time.perf_counter()
    report = progress or quiet
    report(0, 3, "loading the Hugging Face model to compare with")
    model, tokenizer = load_base(Path(hf_folder))
    if adapter is not None:
        model = attach(model, Path(adapter), "checked").eval()
    texts = probe_texts(tokenizer, chat_template)
    inputs = [ids[:PROBE_TOKENS] for ids in (tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts)]
    inputs = [ids for ids in inputs if ids]
    longest = max(len(ids) for ids in inputs) + GREEDY_TOKENS
    report(1, 3, "loading the file in llama.cpp")
    llm = open_gguf(Path(gguf_path), Path(lora) if lora else None, context=max(256, longest), all_logits=True)
    try:
        report(2, 3, f"running {len(inputs)} probe prompts through both")
        tokens_match = all(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)[:PROBE_TOKENS] == ids
                           for text, ids in zip(texts, inputs))
        agree, kls, decided = [], [], []
        for ids in inputs:
            reference = _log_softmax(_model_logits(model, ids))
            llm.reset()
            llm.eval(ids)
            exported = _log_softmax(np.array(llm.scores[:len(ids)]))
            width = min(reference.shape[-1], exported.shape[-1])  # a padded vocabulary adds only unused ids
            reference, exported = reference[:, :width], exported[:, :width]
            agree.append(reference.argmax(-1) == exported.argmax(-1))
            top_two = np.sort(reference, axis=-1)[:, -2:]
            decided.append(top_two[:, 1] - top_two[:, 0] >= DECIDED_NATS)
            kls.append(np.clip((np.exp(reference) * (reference - exported)).sum(-1), 0, None))
        greedy_model = _model_greedy(model, inputs[0], GREEDY_TOKENS)
        greedy_gguf = _gguf_greedy(llm, inputs[0], GREEDY_TOKENS)
    finally:
        llm.close()
    same = next((i for i, (a, b) in enumerate(zip(greedy_model, greedy_gguf)) if a != b), GREEDY_TOKENS)
    agree_all, kl_all, decided_all = np.concatenate(agree), np.concatenate(kls), np.concatenate(decided)
    top1, mean_kl = float(agree_all.mean()), float(kl_all.mean())
    decided_top1 = float(agree_all[decided_all].mean()) if decided_all.any() else None
    top1_ok = decided_top1 is None or decided_top1 >= quant.min_top1
    report(3, 3, "compared")
    return Agreement(quant=quant.name, probes=len(inputs), positions=int(agree_all.size), top1=top1,
                     decided=int(decided_all.sum()), decided_top1=decided_top1, mean_kl=mean_kl,
                     max_kl=float(kl_all.max()), greedy_same=same, greedy_tokens=GREEDY_TOKENS,
                     greedy_model=tokenizer.decode(greedy_model), greedy_gguf=tokenizer.decode(greedy_gguf),
                     tokens_match=tokens_match, min_top1=quant.min_top1, max_mean_kl=quant.max_mean_kl,
                     within=tokens_match and top1_ok and mean_kl <= quant.max_mean_kl,
                     seconds=round(time.perf_counter() - started, 2))
