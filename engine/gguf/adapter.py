"""GGUF for an adapter in the library: merged into its base (checked like every merge), or as a
GGUF LoRA beside a GGUF of its base, with an Ollama Modelfile either way. All of it is written
or none: a step that fails removes what the earlier ones wrote.

A LoRA needs its base as GGUF too: the base's original GGUF file when the model store converted
it from one (the store's weights are that file's, so it is the exact base), else the base
exported beside the adapter at the type asked for. The LoRA itself is f16 unless a type a GGUF
LoRA can be (``quants.LORA_TYPES``) is asked for: nothing quantises an adapter to a K-quant.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional

from engine.adapters.library import chat_settings, read_adapter_meta, resolve_adapter
from engine.gguf.ollama import folder_eos_token, write_modelfile
from engine.core.atomic import read_json_object, staging_path, sweep_staging
from engine.core.fields import text_field
from engine.core.progress import ProgressFn, quiet
from engine.errors import StudioError
from engine.gguf.export import GgufResult, export_lora, export_model, gguf_path
from engine.gguf.quants import DEFAULT_QUANT, LORA_TYPES, Quant, quant as find_quant
from engine.gguf.runtime import require
from engine.models.tokenizer import folder_chat_template


def _base_gguf_origin(base_path: Path) -> Optional[Path]:
    """The GGUF file a store model was converted from, when it is still there: the exact base."""
    origin = text_field(read_json_object(base_path / "studio_model.json") or {}, "origin")
    return Path(origin) if origin and Path(origin).is_file() else None


def adapter_to_gguf(adapter: str | Path, output: str | Path, *, quant: str = DEFAULT_QUANT, lora_only: bool = False,
                    base: Optional[str] = None, progress: Optional[ProgressFn] = None) -> GgufResult:
    """GGUF for ``adapter``: merged into its base, or (``lora_only``) as a GGUF LoRA, each
    checked in llama.cpp against the Hugging Face model; an Ollama Modelfile beside it."""
    started = time.perf_counter()
    report = progress or quiet
    target = find_quant(quant)
    require()
    path = gguf_path(output)
    adapter_path = resolve_adapter(adapter)
    meta = read_adapter_meta(adapter_path)
    modelfile = path.with_suffix(".Modelfile")
    if modelfile.exists():
        raise StudioError(f"{modelfile} already exists: choose another file name")
    written: list[Path] = []  # removed again if a later step fails: all of it or nothing
    try:
        if lora_only:
            result, warnings = _lora_with_base(adapter_path, path, modelfile, target, base, meta, written, report)
        else:
            result, warnings = _merged_model(adapter_path, path, modelfile, target, base, meta, written, report)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    result.modelfile = str(modelfile)
    result.warnings = warnings
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _lora_with_base(adapter_path: Path, path: Path, modelfile: Path, target: Quant, base: Optional[str],
                    meta: dict[str, Any], written: list[Path], report: ProgressFn) -> tuple[GgufResult, list[str]]:
    from engine.adapters.base_model import base_warnings, find_base
    from engine.gguf.lora import check_lora_exportable, check_lora_fits

    check_lora_exportable(adapter_path)
    base_path = find_base(adapter_path, base)
    check_lora_fits(adapter_path, base_path)  # before the base's GGUF is written for it
    warnings = base_warnings(adapter_path, base_path)
    lora_type = find_quant(target.name if target.name in LORA_TYPES else "f16")
    chat_template = meta.get("chat_template") or folder_chat_template(base_path)
    base_gguf = _base_gguf_origin(base_path)
    bounds = lora_type  # over the exact base, only the LoRA's own rounding and llama.cpp's arithmetic remain
    if base_gguf is None:
        base_gguf = path.with_name(f"{path.stem}.base-{target.name}.gguf")
        export_model(base_path, base_gguf, target.name, chat_template=chat_template, progress=report)
        written.append(base_gguf)
        bounds = target
    result = export_lora(adapter_path, base_path, path, lora_type.name, base_gguf, bounds,
                         chat_template=chat_template, progress=report)
    written.append(path)
    written.append(write_modelfile(modelfile, base_gguf, chat_template, adapter_file=path,
                                   eos_token=folder_eos_token(base_path), sampling=chat_settings(meta)))
    result.base_gguf = str(base_gguf)
    return result, warnings


def _merged_model(adapter_path: Path, path: Path, modelfile: Path, target: Quant, base: Optional[str],
                  meta: dict[str, Any], written: list[Path], report: ProgressFn) -> tuple[GgufResult, list[str]]:
    from engine.adapters.merge import merge_adapter

    sweep_staging(path.parent)  # what a killed export left
    scratch = staging_path(path.with_name(path.stem), "merged")
    try:
        merged = merge_adapter(adapter_path, scratch, base=base, progress=report)
        chat_template, eos_token = folder_chat_template(scratch), folder_eos_token(scratch)
        result = export_model(scratch, path, target.name, name=f"the merged {adapter_path.name}",
                              chat_template=chat_template, progress=report)
        written.append(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    warnings = list(merged.warnings)
    if not merged.fidelity.within_tolerance:
        warnings.append("the merge behind this file is outside float tolerance: see the fidelity numbers")
    result.merge = merged.fidelity.to_dict()
    written.append(write_modelfile(modelfile, path, chat_template, eos_token=eos_token,
                                   sampling=chat_settings(meta)))
    return result, warnings
