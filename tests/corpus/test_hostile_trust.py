"""Hostile model and adapter folders, round two: trust covers all the code a model can run, and
no pickle is ever loaded from a user's folder.

- A model's own code may live in subfolders, be imported relatively, sit behind a tokenizer's
  auto_map, or be named in another repository: whatever transformers would import is covered
  by the trust hash (a change to any of it asks again), or refused in one line; it never runs
  before the user says yes.
- A pickle file beside (or named by) a model's weights, behind an adapter's weights or in a run's
  checkpoint never reaches torch.load outside weights_only, its payload never runs, and no
  message tells the user to load it unsafely.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from engine.errors import first_line
from engine.models import trust
from engine.paths import studio_home
from lora_adapters import write_peft_adapter
from helpers import run_cli, write_messages_dataset
from refusals import assert_home_unchanged, assert_refused, home_snapshot

SUBFOLDER_CODE = '''
from pathlib import Path
from transformers import LlamaForCausalLM

from .helpers import MARK

Path({marker!r}).write_text(MARK)


class SubfolderForCausalLM(LlamaForCausalLM):
    """A model class two folders down, as some remote-code models keep theirs."""
'''

TOKENIZER_CODE = '''
from pathlib import Path
from transformers import PreTrainedTokenizerFast

Path({marker!r}).write_text("the tokenizer's own code ran")


class OwnTokenizer(PreTrainedTokenizerFast):
    """A tokenizer class from the model's folder (a tokenizer_config.json auto_map)."""
'''


def _copy_model(tiny: Path, folder: Path) -> Path:
    shutil.copytree(tiny, folder)
    return folder


def _set_json(file: Path, **values) -> None:
    data = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    data.update(values)
    file.write_text(json.dumps(data), encoding="utf-8")


def _subfolder_model(tiny: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A model whose auto_map names code in ``code/sub/``, which imports a sibling module there."""
    folder, marker = _copy_model(tiny, tmp_path / "subfolder-model"), tmp_path / "subfolder-ran.txt"
    sub = folder / "code" / "sub"
    sub.mkdir(parents=True)
    (sub / "modeling_sub.py").write_text(SUBFOLDER_CODE.format(marker=str(marker)), encoding="utf-8")
    (sub / "helpers.py").write_text('MARK = "the subfolder code ran"\n', encoding="utf-8")
    _set_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "code/sub/modeling_sub.SubfolderForCausalLM"})
    return folder, marker


class _Payload:
    """What a malicious pickle does as it loads: writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('the pickle ran')",))


def _malicious_pickle(file: Path, marker: Path) -> Path:
    file.write_bytes(pickle.dumps(_Payload(marker)))
    return file


def _junk_safetensors(file: Path) -> None:
    """A well-formed safetensors file that holds none of the model's weights."""
    import torch
    from safetensors.torch import save_file

    save_file({"junk": torch.zeros(2)}, str(file))


# trust covers all the code ---------------------------------------------------------------------------


def test_code_in_a_subfolder_is_covered_and_never_runs_before_trust(tiny_model_dir, tmp_path, capsys):
    from engine.adapters.base_model import load_base

    folder, marker = _subfolder_model(tiny_model_dir, tmp_path)
    code, out, err = run_cli(["chat", "--model", folder, "--prompt", "hi", "--max-new-tokens", "1"], capsys)
    line = assert_refused(code, out, err, "runs its own Python code (code/sub/helpers.py, code/sub/modeling_sub.py)")
    assert "lora-studio models trust" in line and not marker.exists()

    assert run_cli(["models", "trust", folder], capsys)[0] == 0
    load_base(folder)  # the trusted code, sibling import and all, is what transformers runs
    assert marker.read_text() == "the subfolder code ran"

    (folder / "code" / "sub" / "helpers.py").write_text('MARK = "changed after trust"\n', encoding="utf-8")
    marker.unlink()
    code, out, err = run_cli(["chat", "--model", folder, "--prompt", "hi", "--max-new-tokens", "1"], capsys)
    assert_refused(code, out, err, "runs its own Python code")
    assert not marker.exists()


def test_any_python_file_under_the_folder_and_the_auto_map_itself_are_in_the_hash(tiny_model_dir, tmp_path, capsys):
    folder, _marker = _subfolder_model(tiny_model_dir, tmp_path)
    (folder / "code" / "sub" / "unused.py").write_text("", encoding="utf-8")
    assert run_cli(["models", "trust", folder], capsys)[0] == 0
    assert trust.is_trusted(folder)
    (folder / "code" / "sub" / "unused.py").write_text("import os\n", encoding="utf-8")
    assert not trust.is_trusted(folder)

    assert run_cli(["models", "trust", folder], capsys)[0] == 0
    _set_json(folder / "config.json", auto_map={"AutoModelForCausalLM": "code/sub/unused.SubfolderForCausalLM"})
    assert not trust.is_trusted(folder)


@pytest.mark.parametrize("reference, message", [
    ("someone/other-repo--modeling.Cls", "from another repository"),
    ("{outside}--modeling_custom.TinyCustomForCausalLM", "from another repository"),
    ("{outside}/modeling_custom.TinyCustomForCausalLM", "outside the model's folder"),
    ("code/../../modeling_custom.TinyCustomForCausalLM", "not a module.Class name"),
    ("missing_module.Cls", "needs missing_module.py, which is not a file in the model's folder"),
])
def test_an_auto_map_the_hash_cannot_cover_is_refused(tiny_model_dir, custom_model, tmp_path, capsys,
                                                      reference, message):
    outside, marker = custom_model  # a folder of working model code, elsewhere on disk
    folder = _copy_model(tiny_model_dir, tmp_path / "points-away")
    _set_json(folder / "config.json", auto_map={"AutoModelForCausalLM": reference.format(outside=outside)})
    before = home_snapshot()
    for argv in (["models", "trust", folder], ["models", "add", folder],
                 ["chat", "--model", folder, "--prompt", "hi", "--max-new-tokens", "1"]):
        assert_refused(*run_cli(argv, capsys), message)
    assert not (studio_home() / trust.TRUST_FILE).exists() and not marker.exists()
    assert_home_unchanged(before)


def test_imports_that_leave_the_folder_or_the_hash_are_refused(tiny_model_dir, tmp_path, capsys):
    folder, marker = _subfolder_model(tiny_model_dir, tmp_path)
    module = folder / "code" / "sub" / "modeling_sub.py"
    text = module.read_text(encoding="utf-8")
    module.write_text(text.replace("from .helpers import MARK", "from ..elsewhere import MARK"), encoding="utf-8")
    assert_refused(*run_cli(["models", "trust", folder], capsys), "imports ..elsewhere, from outside the model's folder")

    # A symlinked folder is not entered by the hash, so code reached through it is not covered.
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(folder / "code" / "sub"), str(elsewhere))
    (folder / "code" / "sub").symlink_to(elsewhere, target_is_directory=True)
    module = elsewhere / "modeling_sub.py"
    module.write_text(text, encoding="utf-8")
    assert_refused(*run_cli(["models", "trust", folder], capsys), "needs code/sub/modeling_sub.py, which is not a file")
    assert not marker.exists()


def test_a_tokenizer_with_its_own_code_is_covered_and_asks_before_it_runs(tiny_model_dir, tmp_path, capsys):
    from engine.models.tokenizer import load_tokenizer

    folder, marker = _copy_model(tiny_model_dir, tmp_path / "own-tokenizer"), tmp_path / "tokenizer-ran.txt"
    (folder / "tokenization_own.py").write_text(TOKENIZER_CODE.format(marker=str(marker)), encoding="utf-8")
    _set_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["tokenization_own.OwnTokenizer", None]},
              tokenizer_class="OwnTokenizer")
    dataset = write_messages_dataset(tmp_path / "rows.jsonl")
    for argv in (["data", "inspect", dataset, "--model", folder],
                 ["chat", "--model", folder, "--prompt", "hi", "--max-new-tokens", "1"]):
        assert_refused(*run_cli(argv, capsys), "runs its own Python code (tokenization_own.py)")
    with pytest.raises(ValueError):  # even asked directly, transformers is told no (never left to prompt)
        load_tokenizer(folder)
    assert not marker.exists()

    assert run_cli(["models", "trust", folder], capsys)[0] == 0
    assert type(load_tokenizer(folder)).__name__ == "OwnTokenizer" and marker.exists()
    (folder / "tokenization_own.py").write_text(TOKENIZER_CODE.format(marker="changed"), encoding="utf-8")
    assert_refused(*run_cli(["data", "inspect", dataset, "--model", folder], capsys), "runs its own Python code")


# no pickle, ever -------------------------------------------------------------------------------------


def _pickle_model(kind: str, tiny: Path, tmp_path: Path, marker: Path) -> Path:
    """A model folder that would steer transformers to a malicious pickle, one way per ``kind``."""
    folder = _copy_model(tiny, tmp_path / kind)
    weights = folder / "model.safetensors"
    if kind == "junk-beside-bin":
        weights.unlink()
        _junk_safetensors(folder / "junk.safetensors")
        _malicious_pickle(folder / "pytorch_model.bin", marker)
    elif kind == "index-names-bin":
        weights.unlink()
        _malicious_pickle(folder / "pytorch_model.bin", marker)
        _set_json(folder / "model.safetensors.index.json", metadata={}, weight_map={"lm_head.weight": "pytorch_model.bin"})
    elif kind == "config-names-bin":
        _malicious_pickle(folder / "adapter_model.bin", marker)
        _set_json(folder / "config.json", transformers_weights="adapter_model.bin")
    elif kind == "embedded-adapter":
        _malicious_pickle(folder / "adapter_model.bin", marker)
        _set_json(folder / "adapter_config.json", peft_type="LORA", r=2, lora_alpha=4, target_modules=["q_proj"])
    return folder


PICKLE_MODELS = {
    "junk-beside-bin": "has no model.safetensors (nor model.safetensors.index.json), the weights transformers loads; "
                       "its other weights, pytorch_model.bin, are a pickle file, which LoRA Studio never loads",
    "index-names-bin": "names 'pytorch_model.bin' as a shard, which is not a safetensors file",
    "config-names-bin": "names 'adapter_model.bin' as its weights (transformers_weights)",
    "embedded-adapter": "holds an adapter (adapter_config.json), not a base model",
}


@pytest.mark.parametrize("kind", sorted(PICKLE_MODELS))
def test_a_model_folder_never_gets_a_pickle_loaded(kind, tiny_model_dir, tmp_path, capsys):
    marker = tmp_path / "pickle-ran.txt"
    folder = _pickle_model(kind, tiny_model_dir, tmp_path, marker)
    adapter = write_peft_adapter(tiny_model_dir, tmp_path / "adapter")
    dataset = write_messages_dataset(tmp_path / "rows.jsonl")
    before = home_snapshot()
    for argv in (["models", "add", folder],
                 ["train", "--model", folder, "--dataset", dataset, "--max-steps", "1"],
                 ["chat", "--model", folder, "--prompt", "hi", "--max-new-tokens", "1"],
                 ["adapters", "merge", adapter, "--base", folder, "--output", tmp_path / "merged"]):
        line = assert_refused(*run_cli(argv, capsys), PICKLE_MODELS[kind])
        assert "weights_only" not in line
    assert not marker.exists() and not (tmp_path / "merged").exists()
    assert_home_unchanged(before)


def test_from_pretrained_reads_no_pickle_even_past_the_folder_check(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from engine.models.weights import model_options

    marker = tmp_path / "pickle-ran.txt"
    folder = _pickle_model("junk-beside-bin", tiny_model_dir, tmp_path, marker)
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModelForCausalLM.from_pretrained(folder, **model_options(folder))
    assert not marker.exists()


def test_an_adapter_with_junk_safetensors_beside_a_pickle_is_refused(tiny_model_dir, tmp_path, capsys):
    marker = tmp_path / "pickle-ran.txt"
    adapter = write_peft_adapter(tiny_model_dir, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    _malicious_pickle(adapter / "adapter_model.bin", marker)
    before = home_snapshot()
    for argv in (["adapters", "import", adapter],
                 ["chat", "--model", tiny_model_dir, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "1"],
                 ["adapters", "merge", adapter, "--base", tiny_model_dir, "--output", tmp_path / "merged"]):
        line = assert_refused(*run_cli(argv, capsys), "cannot be used")
        assert "weights_only" not in line
    assert not marker.exists()
    assert_home_unchanged(before)


def test_torch_refusing_a_pickle_is_told_without_its_unsafe_advice(tmp_path):
    import torch

    marker = tmp_path / "pickle-ran.txt"
    file = tmp_path / "optimizer.pt"
    torch.save(_Payload(marker), file)  # a checkpoint file as torch writes them, with a payload inside
    with pytest.raises(Exception) as refused:
        torch.load(file, weights_only=True)
    assert "weights_only" in str(refused.value)  # torch's own advice, which must not reach a user
    line = first_line(refused.value)
    assert "weights_only" not in line and "never loads" in line
    assert not marker.exists()


def test_a_tampered_checkpoint_pickle_never_runs_and_the_run_says_so_plainly(tiny_model_dir, tmp_path):
    import torch

    from engine.train import recipe
    from training_runs import new_run

    marker = tmp_path / "pickle-ran.txt"
    run = new_run(tmp_path / "tampered", tiny_model_dir, max_steps=2, rank=4, targets="q,v")
    checkpoint = write_peft_adapter(tiny_model_dir, run.run_dir / "checkpoints" / "checkpoint-1",
                                    targets=("q_proj", "v_proj"))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 1, "max_steps": 2, "train_batch_size": 4}), encoding="utf-8")
    # The studio's own checkpoint files are zip-format pickles: these look whole, but carry a payload.
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save(_Payload(marker), checkpoint / name)
    finished = recipe.run_and_report(run)
    assert finished.status == "failed" and "never loads" in finished.error, finished.error
    assert "weights_only" not in finished.error
    assert not marker.exists()
