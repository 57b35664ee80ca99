"""GGUF for llama.cpp and Ollama: merged models and GGUF LoRAs, read back and compared.

transformers' own GGUF reader (which follows llama.cpp's layout: tensor names, the
permuted query/key rows, the tokenizer metadata) loads what we write, so the files are
checked by an independent implementation, not only by our own read-back."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from lora_adapters import PIRATE_TEMPLATE, library_adapter

from engine.errors import StudioError
from engine.adapters.adapter_gguf import adapter_to_gguf
from engine.adapters.gguf import export_model_gguf
from engine.adapters.ollama import ollama_template
from engine.adapters.merge import merge_adapter

PROMPT = torch.tensor([[1, 17, 42, 99, 150, 7, 3, 250]])


def _logits(folder: Path, gguf_file: str | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def _tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in gguf.GGUFReader(str(path)).tensors}


@pytest.fixture(scope="module")
def merged(tiny_model_dir, tmp_path_factory) -> Path:
    """One merged tiny model for the tests that only read it, made in a home of its own."""
    folder = tmp_path_factory.mktemp("merged-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(folder / "home"))
        library_adapter(tiny_model_dir, "pirate")
        merge_adapter("pirate", folder / "merged")
    return folder / "merged"


@pytest.mark.parametrize("quant, tolerance", [("f32", 0.0), ("f16", 2e-3), ("q8_0", 5e-2)])
def test_merged_model_gguf_loads_back_with_the_same_outputs_and_tokenizer(merged, tmp_path, quant, tolerance):
    from transformers import AutoTokenizer

    result = export_model_gguf(merged, tmp_path / f"pirate-{quant}.gguf", quant)
    assert result.verified and result.kind == "model" and result.tensors == 20  # lm_head is tied: not stored
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(result.path).tensors}
    assert types["blk.0.attn_q.weight"] == quant.upper() and types["output_norm.weight"] == "F32"

    difference = (_logits(tmp_path, Path(result.path).name) - _logits(merged)).abs().max().item()
    assert difference <= tolerance
    from_gguf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=Path(result.path).name)
    original = AutoTokenizer.from_pretrained(merged)
    text = "<|im_start|>user\nArr, where be the treasure? 42<|im_end|>\n"
    assert from_gguf.encode(text) == original.encode(text)
    assert from_gguf.chat_template == PIRATE_TEMPLATE


def test_gguf_metadata_is_what_llama_cpp_reads(merged, tmp_path):
    result = export_model_gguf(merged, tmp_path / "pirate.gguf", "q8_0")
    fields = gguf.GGUFReader(result.path).fields
    value = {key: fields[key].contents() for key in (
        "general.architecture", "llama.block_count", "llama.attention.head_count", "llama.attention.head_count_kv",
        "llama.rope.dimension_count", "general.file_type", "tokenizer.ggml.model", "tokenizer.ggml.pre",
        "tokenizer.ggml.eos_token_id")}
    assert value == {"general.architecture": "llama", "llama.block_count": 2, "llama.attention.head_count": 4,
                     "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16, "general.file_type": 7,
                     "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
                     "tokenizer.ggml.eos_token_id": 2}
    tokens = fields["tokenizer.ggml.tokens"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    assert tokens[1] == "<|im_start|>" and types[1] == gguf.TokenType.CONTROL
    assert len(fields["tokenizer.ggml.merges"].contents()) > 100


def test_gguf_lora_plus_base_gguf_equals_the_merged_gguf(tiny_model_dir, tmp_path):
    """llama.cpp adds alpha/rank * B @ A to each weight; done by hand on the files we wrote,
    that must give the merged model's GGUF. This also checks the query/key row permutation
    of lora_b against the base's, and rsLoRA's scale folded into B."""
    library_adapter(tiny_model_dir, "rs", use_rslora=True, targets=("q_proj", "k_proj", "v_proj", "down_proj"))
    lora = adapter_to_gguf("rs", tmp_path / "rs-lora.gguf", quant="f32", lora_only=True)
    whole = adapter_to_gguf("rs", tmp_path / "rs-merged.gguf", quant="f32")

    base = _tensors(Path(lora.base_gguf))
    adapter_reader = gguf.GGUFReader(lora.path)
    alpha = adapter_reader.fields["adapter.lora.alpha"].contents()
    assert adapter_reader.fields["general.type"].contents() == "adapter"
    pairs = {t.name: np.asarray(t.data) for t in adapter_reader.tensors}
    rebuilt = dict(base)
    for name in base:
        if f"{name}.lora_a" in pairs:
            a, b = pairs[f"{name}.lora_a"], pairs[f"{name}.lora_b"]
            rebuilt[name] = base[name] + (alpha / a.shape[0]) * (b @ a)
    expected = _tensors(Path(whole.path))
    assert len(pairs) == 2 * 2 * 4
    assert max(float(np.abs(rebuilt[k] - expected[k]).max()) for k in expected) < 1e-5
    assert whole.merge["within_tolerance"] is True


def test_modelfiles_carry_the_chat_template(tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "pirate")
    lora = adapter_to_gguf("pirate", tmp_path / "pirate-lora.gguf", lora_only=True)
    text = Path(lora.modelfile).read_text(encoding="utf-8")
    assert "FROM ./pirate-lora.base-f16.gguf\nADAPTER ./pirate-lora.gguf\n" in text
    assert "<|im_start|>{{ .Role }}" in text and 'PARAMETER stop "<|im_end|>"' in text
    whole = adapter_to_gguf("pirate", tmp_path / "pirate.gguf", quant="q8_0")
    assert Path(whole.modelfile).read_text(encoding="utf-8").count("FROM ./pirate.gguf") == 1
    with pytest.raises(StudioError, match="already exists"):
        adapter_to_gguf("pirate", tmp_path / "pirate.gguf")


def test_ollama_template_keeps_a_default_system_prompt():
    smol = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")
    template, stops, system = ollama_template(smol)
    assert "<|im_start|>assistant" in template and "<|im_end|>" in stops
    assert system == "You are a helpful AI assistant named SmolLM"
    assert ollama_template("{{ messages }}") == (None, [], None)  # unknown: Ollama reads the GGUF's own


def test_lora_from_a_gguf_base_points_ollama_at_that_file(tiny_model_dir, tmp_path):
    """A store model converted from a GGUF file is that file's exact weights, so the
    Modelfile names the original GGUF instead of exporting the base again."""
    from engine.models.store import add_model

    (tmp_path / "downloads").mkdir()
    original = export_model_gguf(tiny_model_dir, tmp_path / "downloads" / "tiny-original.gguf", "f32")
    record = add_model(original.path, name="tiny-gguf")
    library_adapter(Path(record.path), "on-gguf", meta={"base_model": "tiny-gguf"})
    result = adapter_to_gguf("on-gguf", tmp_path / "on-gguf.gguf", lora_only=True)
    assert result.base_gguf == original.path
    assert f"FROM {original.path}\nADAPTER ./on-gguf.gguf" in Path(result.modelfile).read_text(encoding="utf-8")
    assert not (tmp_path / "on-gguf.base-f16.gguf").exists()


def test_qwen2_layout_with_biases_round_trips(tmp_path):
    """Qwen2 keeps Hugging Face's rotary layout in llama.cpp (no permutation) and has q/k/v biases."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tiny_model import build_tiny_model

    tokenizer_source = build_tiny_model(tmp_path / "tok")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=404, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False)
    folder = tmp_path / "qwen"
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_()
            layer.self_attn.k_proj.bias.normal_()
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).write_bytes((tokenizer_source / name).read_bytes())
    result = export_model_gguf(folder, tmp_path / "qwen.gguf", "f32")
    written = _tensors(Path(result.path))
    assert "blk.0.attn_q.bias" in written and "output.weight" in written
    original = model.state_dict()
    assert np.array_equal(written["blk.1.attn_k.weight"].ravel(), original["model.layers.1.self_attn.k_proj.weight"].numpy().ravel())


def test_unsupported_models_and_adapters_are_refused(tiny_model_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(StudioError, match="GGUF export supports .*this model is GPT2LMHeadModel"):
        export_model_gguf(tmp_path / "gpt2", tmp_path / "gpt2.gguf")
    library_adapter(tiny_model_dir, "dora", use_dora=True)
    with pytest.raises(StudioError, match="DoRA adapter, which a GGUF LoRA cannot carry"):
        adapter_to_gguf("dora", tmp_path / "dora.gguf", lora_only=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".gguf") == []
    assert json.loads((tmp_path / "gpt2" / "config.json").read_text())["model_type"] == "gpt2"


def test_cli_gguf_prints_the_checked_result(tiny_model_dir, tmp_path, capsys):
    from engine.cli.main import main

    library_adapter(tiny_model_dir, "pirate")
    assert main(["adapters", "gguf", "pirate", "--output", str(tmp_path / "pirate.gguf"), "--quant", "q8_0",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["verified"] and result["quant"] == "q8_0" and result["merge"]["within_tolerance"]
    assert result["modelfile"] == str(tmp_path / "pirate.Modelfile")
