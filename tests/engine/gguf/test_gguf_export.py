"""GGUF export made and checked by llama.cpp itself: its converter and quantiser write the file,
llama.cpp (through llama-cpp-python) loads it, and its next-token choices are compared with the
Hugging Face model's before the file appears. The tiny test model's rows (64 wide) are not a
multiple of the K-quants' 256-value blocks, so a K-quant export of it falls back as llama.cpp
does for the starter's 576-wide rows, and the user is told."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
from lora_adapters import PIRATE_TEMPLATE, library_adapter

from engine.errors import StudioError
from engine.gguf.adapter import adapter_to_gguf
from engine.gguf.export import export_model


@pytest.fixture(scope="module")
def exports(tiny_model_dir, tmp_path_factory) -> dict:
    """The pirate adapter exported merged (Q4_K_M), and as a GGUF LoRA over an f16 base, in a home of its own.
    It is an rsLoRA adapter: llama.cpp scales a LoRA by alpha / rank, so the export folds rsLoRA's
    alpha / sqrt(rank) into B, and the LoRA's agreement below fails if that is wrong."""
    folder = tmp_path_factory.mktemp("gguf-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(folder / "home"))
        library_adapter(tiny_model_dir, "pirate", targets=("q_proj", "k_proj", "v_proj", "down_proj"), use_rslora=True,
                        meta={"chat_settings": {"temperature": 0.3, "top_k": 20, "seed": None}})
        merged = adapter_to_gguf("pirate", folder / "pirate.gguf", quant="q4_k_m")
        lora = adapter_to_gguf("pirate", folder / "pirate-lora.gguf", quant="f16", lora_only=True)
    return {"merged": merged, "lora": lora, "folder": folder}


def _fields(path: str) -> dict:
    return {key: field.contents() for key, field in gguf.GGUFReader(path).fields.items()
            if key.startswith(("general.", "tokenizer.chat_template", "tokenizer.ggml.model", "adapter."))}


def test_a_k_quant_export_is_llama_cpps_own_and_tells_of_its_fallbacks(exports):
    merged = exports["merged"]
    assert merged.kind == "model" and merged.label == "Q4_K_M" and merged.architecture == "LlamaForCausalLM"
    fields = _fields(merged.path)
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 15  # MOSTLY_Q4_K_M
    assert fields["tokenizer.chat_template"] == PIRATE_TEMPLATE  # the template the adapter was trained with
    # Every 2-D weight's rows are 64 wide: none can be q4_K, and the user reads why.
    assert "Q4_K" not in merged.tensor_types and merged.tensor_types.get("Q5_0", 0) > 0
    assert any("rows of 64 (not a multiple of 256, which q4_K needs) were stored as q5_0" in line
               for line in merged.fallbacks)
    assert merged.merge["within_tolerance"]
    text = Path(merged.modelfile).read_text(encoding="utf-8")
    assert text.count("FROM ./pirate.gguf") == 1 and "PARAMETER temperature 0.3\n" in text


def test_llama_cpp_answers_as_the_model_does_within_the_bounds_of_each_type(exports):
    merged, lora = exports["merged"].agreement, exports["lora"].agreement
    assert lora["tokens_match"] and merged["tokens_match"]
    # f16 over an f16 base: llama.cpp computes what transformers computes, to rounding.
    assert lora["top1"] == 1.0 and lora["mean_kl"] < 1e-4 and lora["greedy_same"] == lora["greedy_tokens"]
    assert lora["within"] and not exports["lora"].flagged
    # Q4_K_M (here q5_0 by fallback) moves the distribution more, within its own bounds.
    assert lora["mean_kl"] < merged["mean_kl"] <= merged["max_mean_kl"] and merged["within"]


def test_a_gguf_lora_applies_over_the_base_gguf_written_beside_it(exports):
    lora = exports["lora"]
    assert lora.kind == "lora" and Path(lora.base_gguf).name == "pirate-lora.base-f16.gguf"
    fields = _fields(lora.path)
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    text = Path(lora.modelfile).read_text(encoding="utf-8")
    assert "FROM ./pirate-lora.base-f16.gguf\nADAPTER ./pirate-lora.gguf\n" in text
    # The chat template as Ollama's Go template, its stop word, and the adapter's chat settings.
    assert "<|im_start|>{{ .Role }}" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "PARAMETER temperature 0.3\nPARAMETER top_k 20\n" in text and "seed" not in text


def test_the_cli_prints_llama_cpps_figures_and_json_carries_them(exports, tiny_model_dir, capsys):
    from engine.cli.main import main

    folder = exports["folder"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(folder / "home"))
        assert main(["adapters", "gguf", "pirate", "--output", str(folder / "cli.gguf"), "--quant", "Q8_0",
                     "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["label"] == "Q8_0" and result["agreement"]["within"] and not result["flagged"]
        assert result["agreement"]["min_top1"] == 0.95 and result["tensor_types"]["Q8_0"] > 0
        assert main(["adapters", "gguf", "pirate", "--output", str(folder / "cli.gguf")]) == 2
        assert "already exists: choose another file name" in capsys.readouterr().err
        assert main(["adapters", "gguf", "pirate", "--output", str(folder / "other.gguf"), "--quant", "q3_k"]) == 2
        assert "invalid choice: 'q3_k'" in capsys.readouterr().err


def test_what_llama_cpp_cannot_convert_is_refused_in_one_line_and_leaves_nothing(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (unknown / "config.json").write_text(json.dumps({**config, "architectures": ["TotallyNewForCausalLM"]}))
    with pytest.raises(StudioError, match="cannot convert TotallyNewForCausalLM models"):
        export_model(unknown, out / "a.gguf")
    (unknown / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    with pytest.raises(StudioError, match=r"needs its own code \(trust_remote_code\)"):
        export_model(unknown, out / "b.gguf")
    library_adapter(tiny_model_dir, "dora", use_dora=True)
    with pytest.raises(StudioError, match="DoRA adapter, which a GGUF LoRA cannot carry"):
        adapter_to_gguf("dora", out / "dora.gguf", lora_only=True)
    with pytest.raises(StudioError, match="unknown GGUF type 'q2_x'"):
        export_model(tiny_model_dir, out / "c.gguf", "q2_x")
    with pytest.raises(StudioError, match="does not exist"):
        export_model(tiny_model_dir, out / "missing" / "d.gguf")
    assert list(out.iterdir()) == []


def test_not_enough_disk_is_refused_before_anything_is_written(tiny_model_dir, tmp_path, monkeypatch):
    """A full disk cannot be made here without privileges: the free space the check reads is lowered."""
    import shutil

    from engine.gguf import export

    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(export.shutil, "disk_usage", lambda path: real._replace(free=100_000))
    with pytest.raises(StudioError, match=r"not enough disk space in .*: a Q4_K_M export of .* needs about"):
        export_model(tiny_model_dir, tmp_path / "a.gguf", "q4_k_m")
    assert list(tmp_path.glob("*.gguf")) == [] and list(tmp_path.glob(".*")) == []


def test_without_llama_cpp_export_says_why(tiny_model_dir, tmp_path, monkeypatch):
    kit = tmp_path / "llama.cpp"
    (tmp_path / "llama.cpp.UNAVAILABLE").write_text("building llama.cpp failed: cmake not found\n")
    monkeypatch.setenv("LORA_STUDIO_LLAMA_KIT", str(kit))
    with pytest.raises(StudioError, match=r"llama.cpp could not be built at set-up \(building llama.cpp failed: "
                                          r"cmake not found\): run `make setup` again"):
        export_model(tiny_model_dir, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_a_lora_on_a_model_converted_from_gguf_applies_over_that_very_file(tiny_model_dir, tmp_path):
    """A store model converted from a GGUF file holds that file's exact weights (the starter is one):
    the LoRA is checked over the original file, at the LoRA's own bounds, and no base is exported."""
    from engine.models.store import add_model

    (tmp_path / "downloads").mkdir()
    original = export_model(tiny_model_dir, tmp_path / "downloads" / "tiny-original.gguf", "f32")
    record = add_model(original.path, name="tiny-gguf")
    library_adapter(Path(record.path), "on-gguf", meta={"base_model": "tiny-gguf"})
    result = adapter_to_gguf("on-gguf", tmp_path / "on-gguf.gguf", quant="q4_k_m", lora_only=True)
    assert result.base_gguf == original.path and result.label == "F16"  # nothing quantises an adapter
    assert result.agreement["min_top1"] == 0.98 and result.agreement["within"]
    assert f"FROM {original.path}\nADAPTER ./on-gguf.gguf" in Path(result.modelfile).read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.glob("on-gguf*")) == ["on-gguf.Modelfile", "on-gguf.gguf"]
