"""Merging adapters into their base (checked against base+adapter), and combining adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lora_adapters import PIRATE_TEMPLATE, library_adapter, write_peft_adapter
from tiny_model import build_tiny_model

from engine.errors import StudioError
from engine.adapters.library import list_adapters, read_adapter_meta
from engine.adapters.combine import combine_adapters, discard_preview, keep_preview, new_preview_folder
from engine.adapters.merge import compare_logits, merge_adapter
from engine.paths import adapters_dir

PROMPT = torch.tensor([[1, 17, 42, 99, 150, 7, 3, 250]])


def _stock_logits(folder: Path) -> torch.Tensor:
    """What a user gets from the merged folder with transformers alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def _peft_logits(base: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    with torch.no_grad():
        return model(input_ids=PROMPT).logits


def test_merged_folder_loads_with_stock_transformers_and_matches_base_plus_adapter(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    adapter = library_adapter(tiny_model_dir, "pirate")
    result = merge_adapter("pirate", tmp_path / "merged")

    merged = tmp_path / "merged"
    expected = _peft_logits(tiny_model_dir, adapter)
    assert (_stock_logits(merged) - expected).abs().max().item() <= 1e-4
    assert (_stock_logits(tiny_model_dir) - expected).abs().max().item() > 0.1  # the adapter does change things
    fidelity = result.fidelity
    assert fidelity.within_tolerance and fidelity.max_abs_logit_diff <= 1e-4 and fidelity.mean_kl < 1e-9
    assert fidelity.adapter_effect > 0.1 and fidelity.check_precision == "float64"
    assert AutoTokenizer.from_pretrained(merged).chat_template == PIRATE_TEMPLATE  # the one training used
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md",
            "studio_merge.json"} <= {f.name for f in merged.iterdir()}
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert "Fidelity check" in card and "within float tolerance" in card
    assert json.loads((merged / "studio_merge.json").read_text())["fidelity"]["within_tolerance"] is True
    assert result.warnings == [] and result.dtype == "float32"


def test_large_models_are_written_as_safetensors_shards(tiny_model_dir, tmp_path):
    adapter = library_adapter(tiny_model_dir, "pirate")
    merge_adapter("pirate", tmp_path / "sharded", max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert (_stock_logits(tmp_path / "sharded") - _peft_logits(tiny_model_dir, adapter)).abs().max() <= 1e-4


def test_sixteen_bit_merge_is_checked_against_its_own_tolerance(tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "pirate")
    result = merge_adapter("pirate", tmp_path / "bf16", dtype="bfloat16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert result.fidelity.within_tolerance and result.fidelity.tolerance_logit == 0.5
    assert result.fidelity.max_abs_logit_diff > 1e-4  # rounding to bfloat16 is visible, and measured


def test_a_merge_outside_float_tolerance_is_flagged():
    reference = [torch.zeros(3, 10, dtype=torch.float64)]
    drifted = [reference[0] + torch.linspace(0, 1e-3, 10, dtype=torch.float64)]
    fidelity = compare_logits(reference, drifted, "float32", adapter_effect=1.0)
    assert not fidelity.within_tolerance and fidelity.max_abs_logit_diff == pytest.approx(1e-3)


def test_qlora_adapter_is_merged_into_the_full_precision_base(tiny_model_dir, tmp_path):
    adapter = library_adapter(tiny_model_dir, "q-pirate", meta={"method": "qlora"})
    result = merge_adapter("q-pirate", tmp_path / "merged")
    assert result.dtype == "float32" and result.fidelity.within_tolerance
    assert (_stock_logits(tmp_path / "merged") - _peft_logits(tiny_model_dir, adapter)).abs().max() <= 1e-4
    assert "never into 4-bit" in (tmp_path / "merged" / "README.md").read_text(encoding="utf-8")


def test_dora_adapter_merges_within_tolerance(tiny_model_dir, tmp_path):
    adapter = library_adapter(tiny_model_dir, "dora", use_dora=True, meta={"method": "dora"})
    result = merge_adapter("dora", tmp_path / "merged")
    assert result.fidelity.within_tolerance and result.fidelity.adapter_effect > 0.1
    assert (_stock_logits(tmp_path / "merged") - _peft_logits(tiny_model_dir, adapter)).abs().max() <= 1e-4


def test_merge_into_another_base_warns_about_the_fingerprint(tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "pirate")
    other = build_tiny_model(tmp_path / "other-tiny", seed=7)
    result = merge_adapter("pirate", tmp_path / "merged", base=str(other))
    [warning] = result.warnings
    assert "was trained on" in warning and "not on other-tiny" in warning
    assert "Warning:" in (tmp_path / "merged" / "README.md").read_text(encoding="utf-8")


def test_merge_refuses_bad_input_and_leaves_nothing_behind(tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "orphan", meta={"base_model": "/gone/llama", "base_model_path": "/gone/llama"})
    (adapters_dir() / "orphan" / "adapter_config.json").write_text(json.dumps(
        {**json.loads((adapters_dir() / "orphan" / "adapter_config.json").read_text()),
         "base_model_name_or_path": "meta-llama/Llama-2-7b-hf"}))
    with pytest.raises(StudioError, match="base model of adapter orphan is missing.*'/gone/llama'"):
        merge_adapter("orphan", tmp_path / "merged")
    library_adapter(tiny_model_dir, "pirate")
    (tmp_path / "taken").mkdir()
    with pytest.raises(StudioError, match="already exists"):
        merge_adapter("pirate", tmp_path / "taken")
    quantized = tmp_path / "quantized-base"
    quantized.mkdir()
    for file in tiny_model_dir.iterdir():
        (quantized / file.name).write_bytes(file.read_bytes())
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(StudioError, match="stored quantized"):
        merge_adapter("pirate", tmp_path / "merged", base=str(quantized))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantized-base", "studio-home", "taken"]  # no partials


# combine ---------------------------------------------------------------------------------------
def _merged_weights(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64), str(adapter))
    return {k: v.clone() for k, v in model.merge_and_unload().state_dict().items()}


def test_cat_combination_adds_the_weighted_updates(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    first = library_adapter(tiny_model_dir, "pirate", seed=1)
    second = library_adapter(tiny_model_dir, "poet", seed=2, rank=8, targets=("v_proj", "o_proj"))
    result = combine_adapters(["pirate", "poet"], [0.7, -0.4], "cat", name="pirate-poet")
    assert result.rank == 12 and result.path == str(adapters_dir() / "pirate-poet")

    base = {k: v.double() for k, v in AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict().items()}
    w1, w2 = _merged_weights(tiny_model_dir, first), _merged_weights(tiny_model_dir, second)
    combined = _merged_weights(tiny_model_dir, Path(result.path))
    worst = max((combined[k] - base[k] - 0.7 * (w1[k] - base[k]) + 0.4 * (w2[k] - base[k])).abs().max().item()
                for k in base)
    assert worst < 1e-5
    meta = read_adapter_meta(Path(result.path))
    assert meta["combined_from"] == [{"adapter": "pirate", "weight": 0.7}, {"adapter": "poet", "weight": -0.4}]
    assert meta["chat_template"] == PIRATE_TEMPLATE and meta["base_model_fingerprint"]


@pytest.mark.parametrize("how, density", [("linear", None), ("svd", None), ("ties", 0.5), ("dare", 0.7)])
def test_every_combination_method_makes_a_loadable_adapter(tiny_model_dir, how, density):
    library_adapter(tiny_model_dir, "a", seed=1)
    library_adapter(tiny_model_dir, "b", seed=2)
    result = combine_adapters(["a", "b"], [0.5, 0.5], how, name=f"mix-{how}", density=density)
    logits = _peft_logits(tiny_model_dir, Path(result.path))
    assert torch.isfinite(logits).all()
    assert (logits - _peft_logits(tiny_model_dir, adapters_dir() / "a")).abs().max() > 1e-3
    assert [r.name for r in list_adapters() if r.name == f"mix-{how}"]


def test_combination_refuses_what_cannot_be_combined(tiny_model_dir, tmp_path):
    library_adapter(tiny_model_dir, "r4", rank=4)
    library_adapter(tiny_model_dir, "r8", rank=8)
    library_adapter(tiny_model_dir, "dora", use_dora=True)
    other = build_tiny_model(tmp_path / "other", seed=3)
    library_adapter(other, "elsewhere")
    with pytest.raises(StudioError, match="one rank"):
        combine_adapters(["r4", "r8"], [1, 1], "linear", name="x")
    with pytest.raises(StudioError, match="DoRA"):
        combine_adapters(["r4", "dora"], [1, 1], "cat", name="x")
    with pytest.raises(StudioError, match="different base models"):
        combine_adapters(["r4", "elsewhere"], [1, 1], "cat", name="x")
    with pytest.raises(StudioError, match="density"):
        combine_adapters(["r4", "r8"], [1, 1], "ties", name="x")
    with pytest.raises(StudioError, match="one weight per adapter"):
        combine_adapters(["r4", "r8"], [1], "cat", name="x")
    with pytest.raises(StudioError, match="already in the library"):
        combine_adapters(["r4", "r8"], [1, 1], "cat", name="r4")
    assert sorted(r.name for r in list_adapters()) == ["dora", "elsewhere", "r4", "r8"]


def test_a_previewed_combination_is_kept_or_discarded(tiny_model_dir):
    library_adapter(tiny_model_dir, "a", seed=1)
    library_adapter(tiny_model_dir, "b", seed=2)
    preview = new_preview_folder()
    combine_adapters(["a", "b"], [1, 1], "cat", output=preview)
    assert sorted(r.name for r in list_adapters()) == ["a", "b"]  # previews stay out of the library
    kept = keep_preview(preview, "a-and-b")
    assert kept == adapters_dir() / "a-and-b" and not preview.exists()
    assert (kept / "README.md").read_text(encoding="utf-8").startswith("# a-and-b\n")
    assert "a-and-b" in [r.name for r in list_adapters()]
    second = new_preview_folder()
    combine_adapters(["a", "b"], [1, -1], "cat", output=second)
    discard_preview(second)
    assert not second.exists()


def test_adapter_of_another_kind_cannot_be_merged(tiny_model_dir, tmp_path):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    model.save_pretrained(adapters_dir() / "prompted")
    with pytest.raises(StudioError, match="PROMPT_TUNING adapter: only LoRA and DoRA"):
        merge_adapter("prompted", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.starter
def test_starter_merge_matches_base_plus_adapter_within_1e_4(starter_in_store, tmp_path):
    from engine.models.store import model_fingerprint

    adapter = write_peft_adapter(starter_in_store, adapters_dir() / "starter-pirate", rank=8, scale=0.01,
                                 targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    (adapter / "studio.json").write_text(json.dumps({"base_model": "starter", "method": "lora",
                                                     "base_model_fingerprint": model_fingerprint(starter_in_store)}))
    result = merge_adapter("starter-pirate", tmp_path / "merged")
    assert result.warnings == []
    assert result.fidelity.within_tolerance and result.fidelity.max_abs_logit_diff <= 1e-4
    assert result.fidelity.adapter_effect > 0.1
    assert result.fidelity.prompts == 4 and result.fidelity.tokens > 100


def test_cli_merge_and_combine_print_json(tiny_model_dir, tmp_path, capsys):
    from engine.cli.main import main

    library_adapter(tiny_model_dir, "a", seed=1)
    library_adapter(tiny_model_dir, "b", seed=2)
    assert main(["adapters", "merge", "a", "--output", str(tmp_path / "merged"), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["fidelity"]["within_tolerance"] and merged["output"] == str(tmp_path / "merged")
    assert main(["adapters", "combine", "a", "b", "--weights", "0.5", "0.5", "--how", "ties", "--density", "0.4",
                 "--name", "ab", "--json"]) == 0
    combined = json.loads(capsys.readouterr().out)
    assert (combined["name"], combined["how"], combined["rank"]) == ("ab", "ties", 4)
    assert main(["adapters", "merge", "a", "--output", str(tmp_path / "merged")]) == 2
    assert "already exists" in capsys.readouterr().err
