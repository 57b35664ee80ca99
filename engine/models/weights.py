"""Which weight files transformers reads from a user's model folder: safetensors only, never a pickle.

A pickle (``pytorch_model.bin``, ``*.pt``...) can run code as it loads, so nothing in a user's
folder is ever handed to ``torch.load``. Every ``from_pretrained`` on a model folder passes
``model_options`` (``use_safetensors=True``: no falling back to ``pytorch_model.bin`` when
``model.safetensors`` is missing), and ``check_weight_files`` refuses, before anything loads,
the ways a folder can still steer transformers to a pickle:

- ``transformers_weights`` in ``config.json`` names the file to load, whatever
  ``use_safetensors`` says (transformers accepts ``adapter_model.bin`` there);
- a ``model.safetensors.index.json`` may name any file as a shard, and a shard not ending in
  ``.safetensors`` is read with ``torch.load``;
- an ``adapter_config.json`` beside the model makes transformers load an adapter on top of it,
  from ``adapter_model.bin`` when that is what is there.

Reading JSON only, nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.core.atomic import read_json_object
from engine.errors import StudioError
from engine.models import trust

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_WEIGHTS = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
_RESAVE = "re-save the model with save_pretrained(..., safe_serialization=True)"


def model_options(folder: Path) -> dict[str, Any]:
    """Keyword arguments for ``AutoModel*.from_pretrained(folder)``: safetensors weights only, and
    the model's own code only when the user trusts it."""
    return {"use_safetensors": True, **trust.load_options(Path(folder))}


def check_weight_files(folder: Path) -> list[Path]:
    """The safetensors files ``from_pretrained(folder, **model_options(folder))`` reads; a StudioError
    when the folder would make it read anything else, or has no such weights."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        raise StudioError(f"folder {folder} holds an adapter (adapter_config.json), not a base model: add its base "
                          "model, and use this folder as an adapter")
    named = (read_json_object(folder / "config.json") or {}).get("transformers_weights")
    if named is not None:
        if not isinstance(named, str) or not _plain_name(named) or not named.endswith((".safetensors", ".safetensors.index.json")):
            raise StudioError(f"folder {folder}: config.json names {named!r} as its weights (transformers_weights), "
                              "which is not a safetensors file in the folder; LoRA Studio loads only safetensors")
        entry = folder / named
    else:
        entry = folder / SAFE_WEIGHTS if (folder / SAFE_WEIGHTS).is_file() else folder / SAFE_INDEX
    if not entry.is_file():
        raise StudioError(_missing(folder, entry.name))
    return _shards(folder, entry) if entry.name.endswith(".json") else [entry]


def _shards(folder: Path, index: Path) -> list[Path]:
    """The shard files a safetensors index names, each a safetensors file in the folder."""
    weight_map = (read_json_object(index) or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise StudioError(f"folder {folder}: {index.name} has no weight_map: copy the model again")
    shards = sorted({str(name) for name in weight_map.values()})
    for name in shards:
        if not _plain_name(name) or not name.endswith(".safetensors"):
            raise StudioError(f"folder {folder}: {index.name} names {name!r} as a shard, which is not a safetensors "
                              f"file in the folder; LoRA Studio loads only safetensors: {_RESAVE}")
        if not (folder / name).is_file():
            raise StudioError(f"folder {folder}: {index.name} names the shard {name}, which is missing: copy the "
                              "model again")
    return [folder / name for name in shards]


def _missing(folder: Path, name: str) -> str:
    pickles = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if pickles and not others:
        return f"folder {folder} has only pickle weights ({pickles[0]}), which LoRA Studio never loads: {_RESAVE}"
    if name == SAFE_INDEX and not others:
        return f"folder {folder} has no .safetensors weights: a model folder needs config.json and .safetensors weights"
    wanted = f"{SAFE_WEIGHTS} (nor {SAFE_INDEX})" if name == SAFE_INDEX else name
    besides = f"; its other weights, {pickles[0]}, are a pickle file, which LoRA Studio never loads" if pickles else ""
    return f"folder {folder} has no {wanted}, the weights transformers loads{besides}: {_RESAVE}"


def _plain_name(name: str) -> bool:
    """A file name directly in the folder: no path separators, not '.' or '..'."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
