"""Writes the bad-input corpus: malformed datasets, model folders, adapter folders, zips and
run configs, each listed in ``corpus.json`` with the commands to try and the words the
user must see. Run from the repository root: ``python tests/corpus/make_corpus.py``.

Everything is small (a few kilobytes); model-shaped files copy the tests' tiny Llama
(hidden size 64) so that only the one thing each entry is about is wrong.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

JUNK = bytes(random.Random(0).randrange(256) for _ in range(2048))
GOOD_ROW = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]}


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def datasets(root: Path) -> None:
    write(root / "empty.jsonl", "")
    write(root / "blank_lines.jsonl", "\n\n   \n\n")
    write(root / "binary_junk.jsonl", JUNK)
    write(root / "truncated.json", json.dumps([GOOD_ROW] * 3)[:-40])
    write(root / "wrong_types.jsonl", "\n".join(json.dumps({"messages": value}) for value in (5, "text", None, 2.5)))
    write(root / "unknown_columns.csv", "colour,size\nred,3\nblue,4\n")
    write(root / "header_only.csv", "instruction,output\n")
    write(root / "object_without_rows.json", json.dumps({"data": 5, "version": "1"}))
    write(root / "latin1.csv", "question,answer\n".encode() + "caf\xe9,cr\xe8me\n".encode("latin-1"))


def tiny_model(work: Path) -> Path:
    from tiny_model import build_tiny_model

    return build_tiny_model(work / "tiny")


def _tokenizer(tiny: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, folder / name)


def models(root: Path, tiny: Path) -> None:
    (root / "empty_folder").mkdir(parents=True, exist_ok=True)
    write(root / "empty_folder" / ".keep", "")
    write(root / "config_only" / "config.json", (tiny / "config.json").read_text())
    write(root / "config_not_json" / "config.json", "{ this is not json")
    _stand_in_weights(root / "config_not_json" / "model.safetensors")
    config = json.loads((tiny / "config.json").read_text())
    for name, changes in (("config_wrong_types", {"hidden_size": "big", "num_hidden_layers": -2}),
                          ("unknown_architecture", {"model_type": "frobnicator", "architectures": ["FrobForCausalLM"]})):
        write(root / name / "config.json", json.dumps({**config, **changes}))
        _stand_in_weights(root / name / "model.safetensors")
    write(root / "truncated_weights" / "config.json", (tiny / "config.json").read_text())
    write(root / "truncated_weights" / "model.safetensors", (tiny / "model.safetensors").read_bytes()[:5000])
    write(root / "pickle_only" / "config.json", (tiny / "config.json").read_text())
    write(root / "pickle_only" / "pytorch_model.bin", JUNK)
    # The weights of a model half as wide as its config says.
    write(root / "wrong_shapes" / "config.json", (tiny / "config.json").read_text())
    _narrow_weights(tiny, root / "wrong_shapes" / "model.safetensors")
    write(root / "no_tokenizer" / "config.json", (tiny / "config.json").read_text())
    _stand_in_weights(root / "no_tokenizer" / "model.safetensors")
    for name in ("config_only", "config_not_json", "config_wrong_types", "unknown_architecture", "truncated_weights",
                 "pickle_only", "wrong_shapes"):
        _tokenizer(tiny, root / name)
    write(root / "junk.gguf", JUNK)
    write(root / "empty.gguf", b"")


def _stand_in_weights(out: Path) -> None:
    """A whole, tiny safetensors file: for entries whose fault lies elsewhere, the weights are never reached."""
    import torch
    from safetensors.torch import save_file

    save_file({"lm_head.weight": torch.zeros(2, 2)}, out)


def _narrow_weights(tiny: Path, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = {name: tensor[tuple(slice(0, max(1, size // 2)) for size in tensor.shape)].contiguous()
               for name, tensor in load_file(tiny / "model.safetensors").items()}
    save_file(tensors, out)


def adapters(root: Path, tiny: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    good = root.parent / ".good-adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules=["q_proj"]))
    model.save_pretrained(good)
    (good / "adapter_config.json").write_text(json.dumps({**json.loads((good / "adapter_config.json").read_text()),
                                                          "base_model_name_or_path": "tiny"}))
    write(root / "missing_config" / "adapter_model.safetensors", (good / "adapter_model.safetensors").read_bytes())
    write(root / "config_not_json" / "adapter_config.json", "[not, json")
    shutil.copy(good / "adapter_model.safetensors", root / "config_not_json")
    write(root / "truncated_weights" / "adapter_config.json", (good / "adapter_config.json").read_text())
    write(root / "truncated_weights" / "adapter_model.safetensors",
          (good / "adapter_model.safetensors").read_bytes()[:300])
    write(root / "pickle_weights" / "adapter_config.json", (good / "adapter_config.json").read_text())
    write(root / "pickle_weights" / "adapter_model.bin", JUNK)
    config = json.loads((good / "adapter_config.json").read_text())
    write(root / "config_wrong_types" / "adapter_config.json", json.dumps({**config, "r": "sixteen"}))
    shutil.copy(good / "adapter_model.safetensors", root / "config_wrong_types")
    write(root / "wrong_shapes" / "adapter_config.json", (good / "adapter_config.json").read_text())
    _narrow_weights_like(good / "adapter_model.safetensors", root / "wrong_shapes" / "adapter_model.safetensors")
    write(root / "junk.zip", JUNK)
    with zipfile.ZipFile(root / "escape.zip", "w") as archive:
        archive.writestr("adapter/adapter_config.json", (good / "adapter_config.json").read_text())
        archive.write(good / "adapter_model.safetensors", "adapter/adapter_model.safetensors")
        archive.writestr("../../outside.txt", "escaped")
    with zipfile.ZipFile(root / "symlink.zip", "w") as archive:
        archive.writestr("adapter/adapter_config.json", (good / "adapter_config.json").read_text())
        link = zipfile.ZipInfo("adapter/adapter_model.safetensors")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    shutil.rmtree(good)


def _narrow_weights_like(source: Path, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({name: tensor[:, : tensor.shape[1] // 2].contiguous() if tensor.shape[1] > 4 else tensor[:2].contiguous()
               for name, tensor in load_file(source).items()}, out)


def run_configs(root: Path) -> None:
    write(root / "not_json.json", "model: starter\ndataset: x\n")
    write(root / "array.json", "[1, 2, 3]")
    write(root / "wrong_types.json", json.dumps({"model": "starter", "dataset": "d.jsonl", "rank": "big"}))
    write(root / "unknown_keys.json", json.dumps({"model": "starter", "dataset": "d.jsonl", "learning_speed": 3}))
    write(root / "missing_dataset.json", json.dumps({"model": "starter"}))


def main() -> int:
    for folder in ("datasets", "models", "adapters", "run_configs"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    with tempfile.TemporaryDirectory() as work:
        tiny = tiny_model(Path(work))
        datasets(HERE / "datasets")
        models(HERE / "models", tiny)
        adapters(HERE / "adapters", tiny)
        run_configs(HERE / "run_configs")
    print("corpus written; its expectations live in corpus.json")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
