"""A Hugging Face model folder (or a PEFT LoRA over one) as a GGUF file, made and checked by
llama.cpp: its converter writes f16 (or the float type asked for), its quantiser makes Q8_0 and
the K-quants from that, and llama.cpp loads the result and is compared with the model
(``agreement``). The file appears at its path only once all of that is done; whatever fails
leaves nothing behind (the intermediate f16 file included).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.adapters.library import read_peft_config
from engine.core.atomic import check_writable, staging_path, sweep_staging
from engine.core.progress import ProgressFn, quiet
from engine.core.safetensors_files import tensor_shapes
from engine.core.units import human_bytes
from engine.errors import StudioError
from engine.gguf.agreement import check_agreement
from engine.gguf.convert import ConvertJob, check_convertible, convert
from engine.gguf.lora import check_lora_exportable, check_lora_fits, plain_copy
from engine.gguf.quants import LORA_TYPES, Quant, quant as find_quant
from engine.gguf.quantize import quantize, tensor_types
from engine.gguf.runtime import require

# Headroom over the computed sizes: GGUF metadata, the vocabulary, alignment.
_DISK_MARGIN = 1.05


@dataclass
class GgufResult:
    path: str
    kind: str  # "model" or "lora"
    quant: str  # a name of engine.gguf.quants.QUANTS
    label: str  # as llama.cpp's users write it
    architecture: str  # the model's, as Hugging Face names it
    tensors: int
    size_bytes: int
    tensor_types: dict[str, int]  # GGML type -> tensors of that type in the file
    fallbacks: list[str]  # the quantiser's fallbacks, one line per kind
    agreement: dict[str, Any]  # engine.gguf.agreement.Agreement, as a dict
    flagged: bool  # outside the agreement bounds of its type: the user is told before shipping it
    llama_cpp: str  # the llama-cpp-python version that wrote and checked it
    seconds: float
    modelfile: Optional[str] = None
    base_gguf: Optional[str] = None  # the base a LoRA applies to, as named in the Modelfile
    merge: Optional[dict[str, Any]] = None  # the merge's fidelity check, for a merged model
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gguf_path(output: str | Path) -> Path:
    """Where to write: ``output`` with a ``.gguf`` suffix, in a folder that exists and takes
    files, and not over a file that is there already."""
    path = Path(output).expanduser()
    if path.suffix.lower() != ".gguf":
        path = path.with_name(path.name + ".gguf")
    if not path.parent.is_dir():
        raise StudioError(f"folder {path.parent} does not exist")
    if path.exists():
        raise StudioError(f"{path} already exists: choose another file name")
    check_writable(path.parent)
    return path


def parameter_count(folder: Path) -> int:
    """How many weights the model's safetensors files hold (read from their headers)."""
    import math

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise StudioError(f"{folder} has no .safetensors weights")
    return sum(math.prod(shape) for file in files for shape in tensor_shapes(file).values())


def check_disk(folder: Path, target: Quant, where: Path) -> None:
    """Refuse before writing when ``where`` cannot hold the file (and the f16 file it is quantised from)."""
    weights = parameter_count(folder)
    needed = weights * target.bits_per_weight / 8
    if target.ftype is not None:
        needed += weights * 2  # the converter's f16 file, removed once quantised
    needed *= _DISK_MARGIN
    free = shutil.disk_usage(where).free
    if free < needed:
        raise StudioError(f"not enough disk space in {where}: a {target.label} export of {folder.name} needs about "
                          f"{human_bytes(needed)} while it is made, and {human_bytes(free)} is free")


def _result(path: Path, kind: str, target: Quant, architecture: str, types: dict[str, int], fallbacks: list[str],
            agreement: Any, started: float) -> GgufResult:
    return GgufResult(path=str(path), kind=kind, quant=target.name, label=target.label,
                      architecture=architecture, tensors=sum(types.values()),
                      size_bytes=path.stat().st_size, tensor_types=types, fallbacks=fallbacks,
                      agreement=agreement.to_dict(), flagged=not agreement.within,
                      llama_cpp=require().version or "?", seconds=round(time.perf_counter() - started, 2))


def export_model(folder: str | Path, output: str | Path, quant: str = "f16", *, name: Optional[str] = None,
                 chat_template: Optional[str] = None, progress: Optional[ProgressFn] = None) -> GgufResult:
    """``folder`` as one GGUF file of type ``quant``, converted, quantised and checked by llama.cpp;
    ``name`` is what the progress calls the model (a merged adapter's scratch folder has none)."""
    started = time.perf_counter()
    report = progress or quiet
    target, folder, path = find_quant(quant), Path(folder), gguf_path(output)
    architecture = check_convertible(folder, require().kit)
    check_disk(folder, target, path.parent)
    sweep_staging(path.parent)  # what a killed export left
    partial = staging_path(path, "partial")
    converted = staging_path(path.with_name(f"{path.stem}.{target.converter_type}.gguf"), "partial")
    try:
        convert(ConvertJob(str(folder), str(converted), target.converter_type),
                lambda done, total, message: report(0, 3, message))
        fallbacks: list[str] = []
        if target.ftype is not None:
            made = quantize(converted, partial, target, lambda done, total, message: report(1, 3, message))
            converted.unlink()
            fallbacks = made.fallbacks
        else:
            os.replace(converted, partial)
        report(2, 3, f"loading the {target.label} file in llama.cpp and comparing it with {name or folder.name}")
        agreement = check_agreement(partial, folder, target, chat_template=chat_template)
        os.replace(partial, path)
    finally:
        for leftover in (converted, partial):
            leftover.unlink(missing_ok=True)
    report(3, 3, "written and checked in llama.cpp")
    return _result(path, "model", target, architecture, tensor_types(path), fallbacks, agreement, started)


def export_lora(adapter: Path, base_folder: Path, output: str | Path, lora_type: str, base_gguf: Path,
                bounds: Quant, *, chat_template: Optional[str] = None,
                progress: Optional[ProgressFn] = None) -> GgufResult:
    """``adapter`` as a GGUF LoRA of ``lora_type``, checked in llama.cpp over ``base_gguf``
    against ``base_folder`` with the adapter applied by peft, within ``bounds``' limits."""
    started = time.perf_counter()
    report = progress or quiet
    if lora_type not in LORA_TYPES:
        raise StudioError(f"a GGUF LoRA is written as {', '.join(LORA_TYPES)}, not {lora_type}")
    target, path = find_quant(lora_type), gguf_path(output)
    check_lora_exportable(adapter)
    check_lora_fits(adapter, base_folder)
    architecture = check_convertible(base_folder, require().kit)
    sweep_staging(path.parent)
    partial, scratch = staging_path(path, "partial"), staging_path(path.with_name(path.stem + ".lora"), "merged")
    try:
        source = plain_copy(adapter, scratch) if read_peft_config(adapter).get("use_rslora") else adapter
        convert(ConvertJob(str(source), str(partial), target.converter_type, kind="lora", base=str(base_folder)),
                lambda done, total, message: report(0, 2, message))
        report(1, 2, f"applying the GGUF LoRA over {base_gguf.name} in llama.cpp and comparing")
        agreement = check_agreement(base_gguf, base_folder, bounds, lora=partial, adapter=adapter,
                                    chat_template=chat_template)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
    report(2, 2, "written and checked in llama.cpp")
    return _result(path, "lora", target, architecture, tensor_types(path), [], agreement, started)


def describe(result: GgufResult) -> list[str]:
    """The export's checks in words, a line each: what the CLI prints and the dialog shows."""
    a = result.agreement
    verdict = "within the bounds for its type" if not result.flagged else "OUTSIDE the bounds for its type: check it"
    lines = [f"llama.cpp {result.llama_cpp} against the Hugging Face model, {a['probes']} probe prompts "
             f"({a['positions']} positions): {verdict}",
             f"  same most likely next token: {a['top1']:.1%} of positions; " + (
                 f"where the model is decided: {a['decided_top1']:.1%} of {a['decided']} (at least {a['min_top1']:.0%})"
                 if a["decided_top1"] is not None else "the model is decided nowhere, so the KL divergence decides"),
             f"  mean KL divergence: {a['mean_kl']:.3g} nats (at most {a['max_mean_kl']:g})",
             f"  greedy answer: the first {a['greedy_same']} of {a['greedy_tokens']} tokens the same",
             "  tokenizer: llama.cpp reads the prompts as the same tokens" if a["tokens_match"]
             else "  tokenizer: llama.cpp reads the prompts as DIFFERENT tokens: its vocabulary or template differs"]
    types = ", ".join(f"{count} {name}" for name, count in result.tensor_types.items())
    lines.append(f"tensor types: {types}")
    lines += [f"fallback: {line}" for line in result.fallbacks]
    return lines
