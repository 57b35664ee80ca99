"""Which PEFT adapters a GGUF LoRA can carry, checked before anything is written.

llama.cpp applies a LoRA as ``W + alpha / rank * B A`` per weight. A DoRA adapter's magnitude
vector, a different alpha per module, or tensors other than lora_A/lora_B of linear layers have
no place in that file; rsLoRA's scale (alpha / sqrt(rank)) is folded into B by ``plain_copy``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from engine.adapters.library import read_peft_config
from engine.core.safetensors_files import tensor_shapes
from engine.errors import StudioError

_LORA_PREFIX = "base_model.model."
WEIGHTS = "adapter_model.safetensors"


def check_lora_exportable(adapter: Path) -> dict[str, Any]:
    """The adapter's PEFT config, or a StudioError saying why a GGUF LoRA cannot carry it."""
    peft = read_peft_config(adapter)
    if peft.get("peft_type") != "LORA":
        raise StudioError(f"adapter {adapter.name} is a {peft.get('peft_type')} adapter: only LoRA exports as a GGUF LoRA")
    if peft.get("use_dora"):
        raise StudioError(f"adapter {adapter.name} is a DoRA adapter, which a GGUF LoRA cannot carry: "
                          "export the merged model instead")
    if peft.get("alpha_pattern"):
        raise StudioError(f"adapter {adapter.name} uses a different alpha per module, which a GGUF LoRA cannot carry: "
                          "export the merged model instead")
    if not (adapter / WEIGHTS).is_file():
        raise StudioError(f"adapter {adapter.name} has no {WEIGHTS}")
    return peft


def _lora_key(adapter: Path, key: str) -> tuple[str, str]:
    """The base weight a LoRA tensor adapts, and which half of the pair it is ("A" or "B")."""
    match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
    if match is None:
        raise StudioError(f"adapter {adapter.name} holds {key}, which a GGUF LoRA cannot carry "
                          "(only lora_A/lora_B of linear layers): export the merged model instead")
    return match.group(1).removeprefix(_LORA_PREFIX) + ".weight", match.group(2)


def check_lora_fits(adapter: Path, base_folder: Path) -> None:
    """Refuse an adapter whose LoRA pairs do not fit the base's weights: for a weight W of
    out x in, A must be r x in and B out x r. llama.cpp would refuse such a file when it loads
    it, or apply it to the wrong rows. Reads the safetensors headers only."""
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in tensor_shapes(adapter / WEIGHTS).items():
        base_name, half = _lora_key(adapter, key)
        pairs.setdefault(base_name, {})[half] = shape
    if not pairs:
        raise StudioError(f"adapter {adapter.name} holds no LoRA weights")
    base = {}
    for file in sorted(Path(base_folder).glob("*.safetensors")):
        base.update(tensor_shapes(file))
    for base_name, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"} or len(pair["A"]) != 2 or len(pair["B"]) != 2:
            raise StudioError(f"adapter {adapter.name}: {base_name} lacks one half of its LoRA pair")
        weight = base.get(base_name)
        if weight is None:
            raise StudioError(f"adapter {adapter.name} adapts {base_name}, which its base model does not have: "
                              "is this the adapter's base?")
        rank = pair["A"][0]
        if len(weight) != 2 or pair["A"] != (rank, weight[1]) or pair["B"] != (weight[0], rank):
            raise StudioError(f"adapter {adapter.name} does not fit its base: {base_name} is {list(weight)} in the "
                              f"base, its LoRA pair is A {list(pair['A'])} and B {list(pair['B'])}; "
                              "is this the adapter's base?")


def plain_copy(adapter: Path, folder: Path) -> Path:
    """``adapter`` as llama.cpp's LoRA converter reads it: rsLoRA's alpha / sqrt(rank) folded into
    B, so that llama.cpp's alpha / rank gives the product PEFT applies."""
    from safetensors.torch import load_file, save_file

    peft = read_peft_config(adapter)
    alpha = float(peft.get("lora_alpha") or peft.get("r") or 1)
    tensors = load_file(str(adapter / WEIGHTS))
    for key, value in tensors.items():
        if _lora_key(adapter, key)[1] == "B":
            rank = value.shape[1]
            tensors[key] = (value.float() * (math.sqrt(rank))).to(value.dtype)  # (alpha/sqrt r) / (alpha/r)
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / WEIGHTS))
    (folder / "adapter_config.json").write_text(json.dumps({**peft, "use_rslora": False, "lora_alpha": alpha}),
                                                encoding="utf-8")
    return folder
