"""How fast a big dataset opens, and how much memory tokenising it takes, against
``datasets.load_dataset('json')`` measured in the same run.

    python bench/data_preview.py [--rows 1000000] [--tokenise-rows N] [--model starter]
                                 [--source code_alpaca_2k.json]

Writes a JSONL file of ``--rows`` real Alpaca rows (cycled from ``--source``, each made
unique), then:

- preview: the time until the first 200 rows can be shown. LoRA Studio reads only the
  first rows (``open_dataset`` + ``preview_dataset``); the baseline loads the file with
  ``datasets.load_dataset('json')`` (which converts all of it to Arrow first) and takes
  its first 200 rows.
- tokenising: peak resident memory (and time) of turning the first ``--tokenise-rows``
  rows into training examples with the model's chat template and the prompt masked.
  LoRA Studio streams them into an Arrow file (``write_examples``); the baseline loads
  them with ``datasets.load_dataset('json')`` and ``.map``s the same tokenising function.

Each measurement runs in a child process of its own, so peak memory is its own. The last
line holds the headline figures as ``name=value`` pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"
PREVIEW_ROWS = 200
MAX_LENGTH = 512


def write_rows(source: Path, rows: int, path: Path) -> None:
    alpaca = json.loads(source.read_text(encoding="utf-8"))
    with open(path, "w", encoding="utf-8") as handle:
        for number, row in enumerate(islice(cycle(alpaca), rows)):
            # Unique rows, so no layer can get away with deduplicating them.
            row = dict(row, instruction=f"{row['instruction']} (task {number})")
            handle.write(json.dumps(row) + "\n")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


# --- children: each prints one JSON object -------------------------------------------------------
def child_preview(path: str) -> dict:
    from engine.data.dataset import open_dataset, preview_dataset

    started = time.perf_counter()
    preview = preview_dataset(open_dataset(path), PREVIEW_ROWS)
    elapsed = time.perf_counter() - started
    assert len(preview.samples) == PREVIEW_ROWS
    return {"seconds": elapsed, "peak_mb": peak_mb()}


def child_baseline_preview(path: str, cache: str) -> dict:
    from datasets import load_dataset

    started = time.perf_counter()
    rows = load_dataset("json", data_files=path, split="train", cache_dir=cache)[:PREVIEW_ROWS]
    elapsed = time.perf_counter() - started
    assert len(rows["instruction"]) == PREVIEW_ROWS
    return {"seconds": elapsed, "peak_mb": peak_mb()}


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    from engine.models.store import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(model))


def child_tokenise(path: str, model: str, out: str) -> dict:
    from engine.data.dataset import open_dataset
    from engine.data.write import write_examples

    tokenizer = _tokenizer(model)
    baseline_mb = peak_mb()
    started = time.perf_counter()
    written = write_examples(open_dataset(path), tokenizer, MAX_LENGTH, Path(out) / "examples.arrow")
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb(), "before_mb": baseline_mb,
            "examples": written.stats.examples}


def child_baseline_tokenise(path: str, model: str, cache: str) -> dict:
    from datasets import load_dataset

    from engine.data.examples import tokenize_conversation
    from engine.data.rendering import chat_template_for
    from engine.data.formats import Layout, converter

    tokenizer = _tokenizer(model)
    template, _ = chat_template_for(tokenizer)
    to_conversation = converter(Layout("alpaca", {"instruction": "instruction", "input": "input",
                                                  "output": "output"}))

    def tokenise(row: dict) -> dict:
        example = tokenize_conversation(to_conversation(dict(row)), tokenizer, MAX_LENGTH, template)
        return {"input_ids": example.input_ids, "labels": example.labels}

    baseline_mb = peak_mb()
    started = time.perf_counter()
    rows = load_dataset("json", data_files=path, split="train", cache_dir=cache)
    rows = rows.filter(lambda row: bool(row["output"].strip()))
    examples = rows.map(tokenise, remove_columns=rows.column_names)
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_mb(), "before_mb": baseline_mb,
            "examples": len(examples)}


def run_child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"child {args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokenise-rows", type=int, help="rows to tokenise (default: all of them)")
    parser.add_argument("--model", default="starter", help="the tokenizer's model (default: the starter)")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="an Alpaca JSON file to cycle")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        child = {"preview": child_preview, "baseline-preview": child_baseline_preview,
                 "tokenise": child_tokenise, "baseline-tokenise": child_baseline_tokenise}[kind]
        print(json.dumps(child(*rest)))
        return
    if not args.source.is_file():
        sys.exit(f"no Alpaca source file at {args.source}; pass --source")
    tokenise_rows = args.tokenise_rows or args.rows

    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        folder = Path(scratch)
        big, small = folder / "rows.jsonl", folder / "tokenise.jsonl"
        started = time.perf_counter()
        write_rows(args.source, args.rows, big)
        print(f"wrote {args.rows:,} rows ({big.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.1f} s",
              flush=True)
        if tokenise_rows == args.rows:
            small = big
        else:
            write_rows(args.source, tokenise_rows, small)

        ours = run_child("preview", str(big))
        print(f"preview, LoRA Studio: {ours['seconds']:.3f} s, peak {ours['peak_mb']:,.0f} MB", flush=True)
        base = run_child("baseline-preview", str(big), str(folder / "cache-preview"))
        print(f"preview, datasets.load_dataset('json'): {base['seconds']:.1f} s, peak {base['peak_mb']:,.0f} MB",
              flush=True)

        out = folder / "out"
        out.mkdir()
        tokenised = run_child("tokenise", str(small), args.model, str(out))
        print(f"tokenising {tokenise_rows:,} rows, LoRA Studio: {tokenised['seconds']:.0f} s, peak "
              f"{tokenised['peak_mb']:,.0f} MB ({tokenised['before_mb']:,.0f} MB with the tokenizer loaded)", flush=True)
        base_tokenised = run_child("baseline-tokenise", str(small), args.model, str(folder / "cache-tokenise"))
        print(f"tokenising {tokenise_rows:,} rows, datasets load + map: {base_tokenised['seconds']:.0f} s, peak "
              f"{base_tokenised['peak_mb']:,.0f} MB", flush=True)

    figures = {
        "rows": args.rows,
        "preview_s": round(ours["seconds"], 4),
        "baseline_preview_s": round(base["seconds"], 2),
        "preview_speedup": round(base["seconds"] / ours["seconds"], 1),
        "tokenise_rows": tokenise_rows,
        "tokenise_peak_mb": round(tokenised["peak_mb"]),
        "baseline_tokenise_peak_mb": round(base_tokenised["peak_mb"]),
        "tokenise_memory_ratio": round(tokenised["peak_mb"] / base_tokenised["peak_mb"], 3),
        "tokenise_s": round(tokenised["seconds"]),
        "baseline_tokenise_s": round(base_tokenised["seconds"]),
    }
    print(" ".join(f"{name}={value}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
