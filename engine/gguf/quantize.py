"""llama.cpp's own quantiser (``llama_model_quantize``, what ``llama-quantize`` runs) from an
f16 GGUF to Q8_0 or a K-quant, with progress read from its log.

K-quants pack rows in blocks of 256 values; a tensor whose rows are not a multiple of that (the
starter's are 576 wide) is quantised to a smaller-block type instead. llama.cpp says so only in its
log, so it is read from there and told to the user: the file is then larger and closer to the
model than its name suggests.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.core.progress import ProgressFn, quiet
from engine.errors import StudioError
from engine.gguf.quants import Quant

_TENSOR = re.compile(r"\[\s*(\d+)/\s*(\d+)\]\s+(\S+)")
_FALLBACK = re.compile(r"warning: (\S+)\s+- ncols\s+(\d+) not divisible by\s+(\d+) \(required for type\s+(\S+)\).*?"
                       r"falling back to\s+(\S+)", re.S)


@dataclass
class Quantised:
    tensor_types: dict[str, int]  # GGML type name -> how many tensors of the file have it
    fallbacks: list[str] = field(default_factory=list)  # one line per kind of fallback


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGML type a GGUF file holds (read from its header)."""
    import gguf

    counts = Counter(tensor.tensor_type.name for tensor in gguf.GGUFReader(str(path)).tensors)
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


class _LogReader:
    """llama.cpp's log while it quantises: progress per tensor, and the fallbacks it chose."""

    def __init__(self, report: ProgressFn, label: str) -> None:
        self.report, self.label = report, label
        self.text: list[str] = []
        self.pending = ""

    def __call__(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        piece = text.decode("utf-8", errors="replace")
        self.text.append(piece)
        self.pending += piece
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            found = _TENSOR.search(line)
            if found:
                self.report(int(found.group(1)) - 1, int(found.group(2)),
                            f"quantising {found.group(3)} to {self.label}")

    def fallbacks(self) -> list[str]:
        groups: Counter[tuple[str, str, str, str]] = Counter()
        for _name, cols, block, wanted, got in _FALLBACK.findall("".join(self.text)):
            groups[(cols, block, wanted, got)] += 1
        return [f"{count} tensor{'s' if count != 1 else ''} with rows of {cols} (not a multiple of {block}, "
                f"which {wanted} needs) were stored as {got}" for (cols, block, wanted, got), count in groups.items()]


def quantize(source: Path, output: Path, target: Quant, progress: Optional[ProgressFn] = None,
             threads: int = 0) -> Quantised:
    """Quantise the f16 GGUF ``source`` to ``target`` into ``output``; the caller owns both paths."""
    import llama_cpp
    from llama_cpp import _logger

    if target.ftype is None:
        raise StudioError(f"{target.label} is written by the converter, not quantised")
    report = progress or quiet
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, target.ftype)
    params.nthread = threads
    reader = _LogReader(report, target.label)
    callback = llama_cpp.llama_log_callback(reader)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        failed = llama_cpp.llama_model_quantize(str(source).encode(), str(output).encode(), ctypes.byref(params))
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    if failed or not output.is_file():
        last = next((line for line in reversed("".join(reader.text).splitlines()) if line.strip()), "no reason given")
        output.unlink(missing_ok=True)
        raise StudioError(f"llama.cpp could not quantise to {target.label}: {last.strip()}")
    return Quantised(tensor_types(output), reader.fallbacks())
