"""The agreement bounds of each GGUF type (``engine/gguf/quants.py``), measured: for each adapter
given, merge it, convert once to f16 with llama.cpp's converter, quantise that to every type with
llama.cpp's quantiser, and run the export's agreement check on each file.

    python bench/export_bounds.py ADAPTER [ADAPTER ...] [--home DIR]

Prints one row per adapter and type, then per type the worst top-1 where decided and the worst
mean KL against the bounds in quants.py, into bench/results/export-bounds-<device>-<date>.txt.
Last line: ``<type>_worst_kl=… …`` and ``outside=N`` (how many files fall outside their bounds).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapters", nargs="+")
    parser.add_argument("--home")
    args = parser.parse_args()
    if args.home:
        os.environ["LORA_STUDIO_HOME"] = args.home
    from engine.adapters.merge import merge_adapter
    from engine.gguf.agreement import check_agreement
    from engine.gguf.convert import ConvertJob, convert
    from engine.gguf.quantize import quantize
    from engine.gguf.quants import QUANTS
    from engine.models.tokenizer import folder_chat_template

    types = [q for q in QUANTS.values() if q.name not in ("f32", "bf16")]
    lines = [f"# {datetime.date.today()}: llama.cpp against transformers on the probe prompts, per adapter and type",
             "| adapter | type | top-1 | top-1 where decided | mean KL | max KL | greedy same | within |",
             "|---|---|---|---|---|---|---|---|"]
    worst: dict[str, tuple[float, float]] = {}
    outside = 0
    for adapter in args.adapters:
        scratch = Path(tempfile.mkdtemp(prefix="export-bounds-"))
        merge_adapter(adapter, scratch / "merged")
        template = folder_chat_template(scratch / "merged")
        f16 = convert(ConvertJob(str(scratch / "merged"), str(scratch / "f16.gguf"), "f16"))
        for target in types:
            path = f16
            if target.ftype is not None:
                path = scratch / f"{target.name}.gguf"
                quantize(f16, path, target)
            a = check_agreement(path, scratch / "merged", target, chat_template=template)
            decided = a.decided_top1 if a.decided_top1 is not None else 1.0
            low, high = worst.get(target.name, (1.0, 0.0))
            worst[target.name] = (min(low, decided), max(high, a.mean_kl))
            outside += not a.within
            lines.append(f"| {adapter} | {target.label} | {a.top1:.1%} | {decided:.1%} of {a.decided} | "
                         f"{a.mean_kl:.4f} | {a.max_kl:.2f} | {a.greedy_same}/{a.greedy_tokens} | "
                         f"{'yes' if a.within else 'NO'} |")
            print(lines[-1], flush=True)
    lines.append("")
    lines.append("| type | worst top-1 where decided | bound | worst mean KL | bound |")
    lines.append("|---|---|---|---|---|")
    for target in types:
        low, high = worst[target.name]
        lines.append(f"| {target.label} | {low:.1%} | {target.min_top1:.0%} | {high:.4f} | {target.max_mean_kl:g} |")
    lines.append(" ".join(f"{name}_worst_kl={high:.4g}" for name, (_, high) in worst.items()) + f" outside={outside}")
    out = ROOT / "bench" / "results" / f"export-bounds-cpu-{datetime.date.today()}.txt"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[-len(types) - 3:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
