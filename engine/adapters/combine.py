"""Combining adapters of one base into a new LoRA adapter (peft's ``add_weighted_adapter``),
straight into the library or into a preview folder that is kept or discarded later."""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.adapters.base_model import attach, base_warnings, find_base, load_base
from engine.core.progress import ProgressFn, quiet
from engine.adapters.library import (
    ADAPTER_META,
    PEFT_CONFIG,
    check_name,
    now,
    read_adapter_meta,
    read_peft_config,
    resolve_adapter,
    retitle_card,
)
from engine.core.atomic import staged_directory, write_json
from engine.core.checks import in_range, is_number
from engine.errors import StudioError, first_line
from engine.paths import adapters_dir, writable_home

COMBINATIONS = {"linear": "linear", "cat": "cat", "svd": "svd", "ties": "ties", "dare": "dare_linear"}
_NEEDS_DENSITY = ("ties", "dare")
# A combination's weights scale each adapter's update. Past this size the result only overflows
# half-precision weights (inf, then NaN in every answer); nobody means a weight of 1e30.
MAX_WEIGHT = 100.0


def check_weight(ref: str, weight: object) -> float:
    """One adapter's weight in a combination (saved or chatted with): a finite number of at most
    ``MAX_WEIGHT`` either way; nan, inf, true and "1" are refused."""
    return in_range(f"the weight of {ref}", weight, -MAX_WEIGHT, MAX_WEIGHT)


@dataclass
class CombineResult:
    path: str
    name: str
    how: str
    rank: int
    adapters: list[str]
    weights: list[float]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preview_dir() -> Path:
    """Where combinations wait to be tried before they are kept (hidden from the library)."""
    folder = adapters_dir() / ".previews"
    folder.mkdir(exist_ok=True)
    return folder


def new_preview_folder() -> Path:
    return preview_dir() / uuid.uuid4().hex[:12]


def keep_preview(folder: Path, name: str) -> Path:
    """Move a previewed combination into the library under ``name`` (one rename)."""
    writable_home()
    folder = Path(folder)
    if folder.parent.resolve() != preview_dir().resolve() or not (folder / PEFT_CONFIG).is_file():
        raise StudioError(f"{folder} is not a previewed combination")
    name = check_name(name)
    if name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
        raise StudioError(f"an adapter named {name!r} is already in the library")
    target = adapters_dir() / name
    folder.rename(target)
    retitle_card(target, folder.name, name)
    return target


def discard_preview(folder: Path) -> None:
    folder = Path(folder)
    if folder.parent.resolve() == preview_dir().resolve():
        shutil.rmtree(folder, ignore_errors=True)


def _check_combination(adapters: list[Path], weights: list[float], how: str, density: Optional[float]) -> None:
    if len(adapters) < 2:
        raise StudioError("combining needs at least two adapters")
    if len(set(adapters)) != len(adapters):
        raise StudioError("each adapter may appear only once in a combination")
    if how not in COMBINATIONS:
        raise StudioError(f"unknown combination {how!r}; choose one of {', '.join(COMBINATIONS)}")
    if how in _NEEDS_DENSITY and (not is_number(density) or not 0 < density <= 1):
        raise StudioError(f"{how} keeps a fraction of each adapter's weights: give a density in (0, 1]")
    configs = [read_peft_config(a) for a in adapters]
    for path, config in zip(adapters, configs):
        if config.get("peft_type") != "LORA":
            raise StudioError(f"adapter {path.name} is not a LoRA adapter; only LoRA adapters can be combined")
        if config.get("use_dora"):
            raise StudioError(f"adapter {path.name} is a DoRA adapter: its magnitude vectors cannot be combined")
    ranks = {config.get("r") for config in configs}
    if how in ("linear", "ties", "dare") and len(ranks) > 1:
        raise StudioError(f"{how} needs adapters of one rank (these have {sorted(ranks)}): use cat or svd")
    fingerprints = {read_adapter_meta(a).get("base_model_fingerprint") for a in adapters} - {None}
    if len(fingerprints) > 1:
        raise StudioError("these adapters were trained on different base models; combine adapters of one base")


def combine_adapters(adapters: list[str], weights: list[float], how: str = "linear", *,
                     name: Optional[str] = None, output: Optional[Path] = None, density: Optional[float] = None,
                     base: Optional[str] = None, progress: Optional[ProgressFn] = None) -> CombineResult:
    """A new LoRA adapter from several of one base, with peft's ``add_weighted_adapter``.

    It goes into the library as ``name``, or into the new folder ``output`` (a preview
    that ``keep_preview`` moves into the library later).
    """
    import torch

    writable_home()
    started = time.perf_counter()
    report = progress or quiet
    if len(weights) != len(adapters):
        raise StudioError(f"give one weight per adapter: {len(adapters)} adapters, {len(weights)} weights")
    weights = [check_weight(str(ref), weight) for ref, weight in zip(adapters, weights)]
    paths = [resolve_adapter(ref) for ref in adapters]
    _check_combination(paths, weights, how, density)
    target = _combination_target(name, output)
    name = target.name if output is None else (name or target.name)
    report(0, 4, "finding the base model")
    base_path = find_base(paths[0], base)
    warnings = [w for path in paths for w in base_warnings(path, base_path)]
    report(1, 4, f"loading {base_path.name} and {len(paths)} adapters")
    model, _ = load_base(base_path)
    keys = [f"adapter{i}" for i in range(len(paths))]
    peft_model = None
    for key, path in zip(keys, paths):
        peft_model = attach(model, path, key, peft_model)
    report(2, 4, f"combining with {how}")
    torch.manual_seed(0)  # DARE drops weights at random: the same inputs give the same adapter
    try:
        peft_model.add_weighted_adapter(keys, weights, "combined", combination_type=COMBINATIONS[how],
                                        density=density if how in _NEEDS_DENSITY else None)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise StudioError(f"these adapters cannot be combined with {how}: {first_line(exc)}") from None
    rank = int(peft_model.peft_config["combined"].r)
    report(3, 4, "writing the combined adapter")
    meta = _combined_meta(paths, weights, how, density, base_path, rank)
    with staged_directory(target) as staging:
        scratch = staging / ".peft"
        peft_model.save_pretrained(str(scratch), selected_adapters=["combined"])
        # peft writes any adapter not named "default" into a subfolder of that name.
        for file in (scratch / "combined").iterdir():
            file.rename(staging / file.name)
        shutil.rmtree(scratch)
        write_json(staging / ADAPTER_META, meta)
        (staging / "README.md").write_text(_combined_card(name, meta), encoding="utf-8")
    report(4, 4, "combined")
    return CombineResult(path=str(target), name=name, how=how, rank=rank, adapters=[p.name for p in paths],
                         weights=weights, seconds=round(time.perf_counter() - started, 2), warnings=warnings)


def _combination_target(name: Optional[str], output: Optional[Path]) -> Path:
    """Where a combination goes: a new library entry ``name``, or the new folder ``output``."""
    if output is not None:
        return Path(output)
    if not name:
        raise StudioError("give the combined adapter a name")
    name = check_name(name)
    if name.lower() in {p.name.lower() for p in adapters_dir().iterdir()}:
        raise StudioError(f"an adapter named {name!r} is already in the library")
    return adapters_dir() / name


def _combined_meta(paths: list[Path], weights: list[float], how: str, density: Optional[float],
                   base_path: Path, rank: int) -> dict[str, Any]:
    from engine.models.store import model_fingerprint

    first = read_adapter_meta(paths[0])
    return {
        "base_model": first.get("base_model") or str(base_path),
        "base_model_path": str(base_path),
        "base_model_fingerprint": model_fingerprint(base_path),
        "method": "lora",
        "rank": rank,
        "alpha": rank,
        "combined_from": [{"adapter": p.name, "weight": w} for p, w in zip(paths, weights)],
        "combination": how,
        "density": density if how in _NEEDS_DENSITY else None,
        "chat_template": first.get("chat_template"),
        "created": now(),
    }


def _combined_card(name: str, meta: dict[str, Any]) -> str:
    parts = ", ".join(f"`{c['adapter']}` × {c['weight']:g}" for c in meta["combined_from"])
    density = f" (density {meta['density']:g})" if meta.get("density") is not None else ""
    return (
        f"# {name}\n\nA LoRA adapter for `{meta['base_model']}` combined by LoRA Studio from {parts} "
        f"with {meta['combination']}{density}; rank {meta['rank']}.\n\n"
        "Load it with stock PEFT:\n\n"
        "```python\nfrom peft import PeftModel\nmodel = PeftModel.from_pretrained(base_model, \"path/to/this/folder\")\n```\n"
    )
