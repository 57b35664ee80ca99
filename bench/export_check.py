"""GGUF export of the starter with an adapter, at every file type: what each costs and how close
llama.cpp's answers stay to the Hugging Face model's.

For each type the studio's export runs as a user's does (``engine.gguf.adapter.adapter_to_gguf``:
merge, llama.cpp's converter, its quantiser, the agreement check). Printed per type: file size,
export seconds, llama.cpp's generation speed, top-1 agreement, mean KL and greedy tokens in common.

Baselines, measured in the same run on the same machine:
- export time: llama.cpp's own pipeline run by hand on the merged folder (``convert_hf_to_gguf.py``
  to f16, then ``llama_model_quantize``) against the studio's export, whose extra work is the merge,
  its check and the agreement check; ``overhead`` is the studio's seconds over the plain pipeline's;
- generation speed: transformers' greedy ``generate`` on the merged model (float32, the same
  cores), against llama.cpp's on each file; ``speedup`` is llama.cpp's tokens/s over that.

    python bench/export_check.py --adapter NAME [--home DIR] [--types q4_k_m,f16] [--tokens 64]

The adapter is a library adapter of the starter (LORA_STUDIO_HOME or --home). Results go to
bench/results/export-<device>-<date>.txt. Last line: ``q4_k_m_top1=… q4_k_m_kl=… overhead=… speedup=…``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def llama_speed(path: Path, ids: list[int], tokens: int) -> float:
    from engine.gguf.agreement import open_gguf

    llm = open_gguf(path, context=len(ids) + tokens + 8)
    try:
        started = time.perf_counter()
        produced = 0
        for _ in llm.generate(ids, temp=0.0, reset=True):
            produced += 1
            if produced == tokens:
                break
        return produced / (time.perf_counter() - started)
    finally:
        llm.close()


def transformers_speed(folder: Path, ids: list[int], tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        started = time.perf_counter()
        out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return (out.shape[1] - len(ids)) / (time.perf_counter() - started)


def plain_pipeline(merged: Path, out: Path, ftype: str | None) -> float:
    """llama.cpp's converter and quantiser by hand, as its README runs them; seconds."""
    import ctypes

    import llama_cpp

    from engine.gguf.runtime import require

    kit = require().kit
    started = time.perf_counter()
    f16 = out.with_suffix(".f16.gguf")
    subprocess.run([sys.executable, str(kit / "convert_hf_to_gguf.py"), str(merged), "--outtype", "f16",
                    "--outfile", str(f16)], check=True, capture_output=True)
    if ftype:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, ftype)
        llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(params))
        f16.unlink()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--home")
    parser.add_argument("--types", default="q4_k_m,q5_k_m,q6_k,q8_0,f16,bf16")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    if args.home:
        os.environ["LORA_STUDIO_HOME"] = args.home
    from engine.adapters.merge import merge_adapter
    from engine.gguf.adapter import adapter_to_gguf
    from engine.gguf.quants import quant
    from engine.hardware import best_device
    from engine.models.tokenizer import load_tokenizer

    scratch = Path(tempfile.mkdtemp(prefix="export-check-"))
    merged = scratch / "merged"
    merge_adapter(args.adapter, merged)
    tokenizer = load_tokenizer(merged)
    text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    hf_speed = transformers_speed(merged, ids, args.tokens)
    lines = [f"# {datetime.date.today()} {best_device().name}; adapter {args.adapter}; "
             f"transformers float32 generate: {hf_speed:.1f} tokens/s",
             "| type | size MiB | export s | plain llama.cpp s | llama.cpp tokens/s | top-1 | top-1 where decided | "
             "mean KL | max KL | greedy same | within |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    figures: dict[str, float] = {}
    overheads, speedups = [], []
    for name in args.types.split(","):
        target = quant(name)
        result = adapter_to_gguf(args.adapter, scratch / f"{name}.gguf", quant=name)
        plain = plain_pipeline(merged, scratch / f"plain-{name}.gguf", target.ftype)
        speed = llama_speed(Path(result.path), ids, args.tokens)
        a = result.agreement
        decided = f"{a['decided_top1']:.1%} of {a['decided']}" if a["decided_top1"] is not None else "none decided"
        lines.append(f"| {target.label} | {result.size_bytes / 2**20:.1f} | {result.seconds:.1f} | {plain:.1f} | "
                     f"{speed:.1f} | {a['top1']:.1%} | {decided} | {a['mean_kl']:.4f} | {a['max_kl']:.2f} | "
                     f"{a['greedy_same']}/{a['greedy_tokens']} | "
                     f"{'yes' if a['within'] else 'NO'} |")
        print(lines[-1], flush=True)
        figures[f"{name}_top1"], figures[f"{name}_kl"] = a["top1"], a["mean_kl"]
        overheads.append(result.seconds / plain)
        speedups.append(speed / hf_speed)
    summary = " ".join(f"{key}={value:.4g}" for key, value in figures.items() if key.startswith("q4_k_m"))
    summary += f" overhead={max(overheads):.2f} speedup={min(speedups):.2f}"
    lines.append(summary)
    out = ROOT / "bench" / "results" / f"export-cpu-{datetime.date.today()}.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
