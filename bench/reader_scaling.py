"""Reading time against input size: ten times the input must take about ten times as long.

    python bench/reader_scaling.py [--scale 1.0]

For each shape that once made a reader superlinear, a file of size n and one of size 10n are
read whole (``open_dataset`` + ``scan_dataset``, as ``lora-studio data inspect`` does) and the
ratio of their CPU times printed (CPU time: on a shared machine wall time says more about the
neighbours); a linear reader gives about 10, a quadratic one about 100. The readers' bounds are
raised for the run so that the big inputs are read rather than refused.

- wide_csv: a CSV whose header has n columns (all named alike, so every one is renamed), 3 rows
- text_line_chunks: a text file of one line of n characters, cut into chunks
- jsonl_line: a JSONL file of one row whose text is n characters

Last line: ``name=ratio`` pairs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def wide_csv(path: Path, n: int) -> Path:
    path = path.with_suffix(".csv")
    header = ",".join(["text"] + ["same"] * n)
    row = ",".join(["a document"] + ["x"] * n)
    path.write_text("\n".join([header, row, row, row]) + "\n", encoding="utf-8")
    return path


def text_line(path: Path, n: int) -> Path:
    path = path.with_suffix(".txt")
    path.write_text(("word " * (n // 5)) + "\n", encoding="utf-8")
    return path


def jsonl_line(path: Path, n: int) -> Path:
    path = path.with_suffix(".jsonl")
    path.write_text('{"text": "' + "word " * (n // 5) + '"}\n', encoding="utf-8")
    return path


def read_seconds(path: Path, text_split: str) -> float:
    from engine.data.dataset import DataOptions, open_dataset
    from engine.data.scan import scan_dataset

    start = time.process_time()
    report = scan_dataset(open_dataset(path, DataOptions(text_split=text_split)))
    assert report.good_rows > 0
    return time.process_time() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every input size")
    args = parser.parse_args(argv)

    from engine.data import readers

    # Read the big inputs instead of refusing them: what is measured is the reading.
    readers.MAX_ROW_BYTES = readers.MAX_JSON_BYTES = 1 << 40
    readers.MAX_COLUMNS = 1 << 40
    cases: dict[str, tuple[Callable[[Path, int], Path], int, str]] = {
        "wide_csv": (wide_csv, 10_000, "auto"),
        "text_line_chunks": (text_line, 2_000_000, "chunks"),
        "jsonl_line": (jsonl_line, 2_000_000, "auto"),
    }
    ratios = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (make, size, split) in cases.items():
            size = int(size * args.scale)
            times = []
            for n in (size, 10 * size):
                path = make(Path(folder) / f"{name}_{n}", n)
                times.append(read_seconds(path, split))
                path.unlink()
            ratios[name] = times[1] / times[0]
            print(f"{name}: n={size:,} {times[0]:.3f} s, 10n {times[1]:.3f} s, ratio {ratios[name]:.1f}")
    print(" ".join(f"{name}={ratio:.1f}" for name, ratio in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
