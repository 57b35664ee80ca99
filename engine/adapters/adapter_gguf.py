"""GGUF for an adapter in the library: merged into its base (checked like every merge), or
as a GGUF LoRA beside a GGUF of its base, with an Ollama Modelfile either way. All of it
is written or none: a step that fails removes what the earlier ones wrote."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional

from engine.core.atomic import read_json_object, staging_path, sweep_staging
from engine.core.fields import text_field
from engine.core.progress import ProgressFn, quiet
from engine.adapters.gguf import (
    QUANTS,
    GgufResult,
    check_lora_exportable,
    check_lora_fits,
    export_lora_gguf,
    export_model_gguf,
    folder_chat_template,
    gguf_path,
)
from engine.adapters.library import read_adapter_meta, resolve_adapter
from engine.adapters.ollama import write_modelfile
from engine.errors import StudioError


def _base_gguf_origin(base_path: Path) -> Optional[Path]:
    """The GGUF file a store model was converted from, when it is still there: the exact base."""
    origin = text_field(read_json_object(base_path / "studio_model.json") or {}, "origin")
    return Path(origin) if origin and Path(origin).is_file() else None


def adapter_to_gguf(adapter: str | Path, output: str | Path, *, quant: str = "f16", lora_only: bool = False,
                    base: Optional[str] = None, progress: Optional[ProgressFn] = None) -> GgufResult:
    """GGUF for an adapter: merged into its base (checked like every merge), or as a GGUF LoRA.

    Writes an Ollama Modelfile beside the file. A LoRA needs its base as GGUF too: the
    base's original GGUF file when the model store converted it from one, else the base is
    exported beside the adapter.
    """
    started = time.perf_counter()
    report = progress or quiet
    path = gguf_path(output)
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(QUANTS)}")
    adapter_path = resolve_adapter(adapter)
    meta = read_adapter_meta(adapter_path)
    modelfile = path.with_suffix(".Modelfile")
    for existing in (path, modelfile):
        if existing.exists():
            raise StudioError(f"{existing} already exists: choose another file name")
    written: list[Path] = []  # removed again if a later step fails: all of it or nothing
    try:
        if lora_only:
            result, warnings = _lora_with_base(adapter_path, path, modelfile, quant, base, meta, written, report)
        else:
            result, warnings = _merged_model(adapter_path, path, modelfile, quant, base, written, report)
    except BaseException:
        for file in written:
            file.unlink(missing_ok=True)
        raise
    result.modelfile = str(modelfile)
    result.warnings = warnings
    result.seconds = round(time.perf_counter() - started, 2)
    return result


def _lora_with_base(adapter_path: Path, path: Path, modelfile: Path, quant: str, base: Optional[str],
                    meta: dict[str, Any], written: list[Path], report: ProgressFn) -> tuple[GgufResult, list[str]]:
    from engine.adapters.base_model import base_warnings, find_base

    check_lora_exportable(adapter_path)
    base_path = find_base(adapter_path, base)
    check_lora_fits(adapter_path, base_path)  # before the base's GGUF is written for it
    warnings = base_warnings(adapter_path, base_path)
    base_gguf = _base_gguf_origin(base_path)
    if base_gguf is None:
        base_gguf = path.with_name(f"{path.stem}.base-{quant}.gguf")
        if base_gguf.exists():
            raise StudioError(f"{base_gguf} already exists: choose another file name")
        export_model_gguf(base_path, base_gguf, quant, name=base_path.name, progress=report)
        written.append(base_gguf)
    result = export_lora_gguf(adapter_path, base_path, path, quant, progress=report)
    written.append(path)
    chat_template = meta.get("chat_template") or folder_chat_template(base_path)
    written.append(write_modelfile(modelfile, base_gguf, chat_template, adapter_file=path))
    result.base_gguf = str(base_gguf)
    return result, warnings


def _merged_model(adapter_path: Path, path: Path, modelfile: Path, quant: str, base: Optional[str],
                  written: list[Path], report: ProgressFn) -> tuple[GgufResult, list[str]]:
    from engine.adapters.merge import merge_adapter

    sweep_staging(path.parent)  # what a killed export left
    scratch = staging_path(path.with_name(path.stem), "merged")
    try:
        merged = merge_adapter(adapter_path, scratch, base=base, progress=report)
        result = export_model_gguf(scratch, path, quant, name=adapter_path.name, progress=report)
        written.append(path)
        chat_template = folder_chat_template(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    warnings = list(merged.warnings)
    if not merged.fidelity.within_tolerance:
        warnings.append("the merge behind this file is outside float tolerance: see the fidelity numbers")
    result.merge = merged.fidelity.to_dict()
    written.append(write_modelfile(modelfile, path, chat_template))
    return result, warnings
