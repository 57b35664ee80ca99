"""The memory estimate: model specs from config.json, the itemised estimate, auto-fit, the
CLI, and every calibration row recorded in bench/results against the estimator."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from engine.errors import StudioError
from engine.core.units import parse_bytes
from engine.memory.autofit import LengthStats, auto_fit
from engine.memory.estimate import ALLOCATOR_RESERVE_FRACTION, CUDA_CONTEXT_BYTES, ITEMS, estimate_memory
from engine.memory.loss_chunk import chunk_rows
from engine.memory.plan import Plan
from engine.models.spec import list_catalog, load_model_spec, spec_from_config
from helpers import ROOT

GiB = 1 << 30

# Parameter counts as published on each model's card / safetensors index.
PUBLISHED_PARAMS = {
    "Llama-2-7B": 6.74e9, "Llama-2-13B": 13.02e9, "Llama-3.1-8B": 8.03e9, "Llama-3.1-70B": 70.55e9,
    "Llama-3.2-1B": 1.24e9, "Llama-3.2-3B": 3.21e9, "Mistral-7B-v0.3": 7.25e9, "Qwen2.5-0.5B": 0.494e9,
    "Qwen2.5-1.5B": 1.54e9, "Qwen2.5-7B": 7.62e9, "Qwen2.5-14B": 14.77e9, "Qwen2.5-32B": 32.76e9,
    "Qwen3-0.6B": 0.596e9, "Qwen3-4B": 4.02e9, "Qwen3-8B": 8.19e9, "Gemma-2-2B": 2.61e9, "Gemma-2-9B": 9.24e9,
    "Gemma-3-1B": 1.0e9, "Gemma-3-4B": 4.30e9, "Phi-3-mini-4k": 3.82e9, "Phi-4": 14.66e9,
    "SmolLM2-135M-Instruct": 134.5e6, "SmolLM2-360M": 361.8e6, "SmolLM2-1.7B": 1.71e9,
}

_TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
FAMILY_CONFIGS = {
    "llama": dict(model_type="llama", tie_word_embeddings=False, **_TINY),
    "mistral": dict(model_type="mistral", **_TINY),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True, **_TINY),
    "qwen3": dict(model_type="qwen3", head_dim=24, **_TINY),
    "gemma2": dict(model_type="gemma2", head_dim=24, **_TINY),
    "gemma3_text": dict(model_type="gemma3_text", head_dim=24, **_TINY),
    "phi3": dict(model_type="phi3", **_TINY),
    "gemma3": dict(model_type="gemma3", text_config=dict(model_type="gemma3_text", head_dim=24, **_TINY),
                   vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14)),
}


def catalog(name: str):
    return load_model_spec(name)


# model specs ---------------------------------------------------------------------------------
def test_catalog_holds_twenty_popular_models_from_100m_to_70b():
    names = list_catalog()
    assert len(names) >= 20 and set(PUBLISHED_PARAMS) <= set(names)
    sizes = [catalog(name).total_params for name in names]
    assert sizes == sorted(sizes) and sizes[0] < 0.2e9 and sizes[-1] > 60e9


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_catalog_parameter_counts_match_the_published_figures(name):
    assert catalog(name).total_params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_spec_counts_exactly_what_transformers_builds(family):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = FAMILY_CONFIGS[family]
    spec = spec_from_config(config, family)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    assert spec.total_params == sum(p.numel() for p in model.parameters())


def test_spec_reads_gqa_fused_and_nested_configs():
    llama = catalog("Llama-3.1-8B")
    assert (llama.num_kv_heads, llama.kv_dim, llama.linear("k_proj").out_features) == (8, 1024, 1024)
    phi = catalog("Phi-3-mini-4k")
    assert [lin.name for lin in phi.layer_linears] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert phi.linear("gate_up_proj").out_features == 2 * 8192
    gemma = catalog("Gemma-3-4B")  # text_config naming four fields: the rest are Gemma 3 defaults
    assert (gemma.num_layers, gemma.num_heads, gemma.head_dim, gemma.vocab_size) == (34, 8, 256, 262208)
    assert gemma.extra_params > 0 and gemma.tie_word_embeddings and gemma.gated_mlp
    assert catalog("qwen2.5-7b").linear("q_proj").bias  # names are case-insensitive; Qwen2 has q/k/v biases


def test_starter_spec_comes_from_the_catalog_before_conversion():
    spec = load_model_spec("starter")
    assert spec.name == "SmolLM2-135M-Instruct" and spec.total_params == pytest.approx(134.5e6, rel=0.001)


def test_specs_from_a_folder_its_config_and_the_store(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.models.store import add_model

    from_folder = load_model_spec(tiny_model_dir)
    from_file = load_model_spec(tiny_model_dir / "config.json")
    add_model(tiny_model_dir, name="tiny")
    from_store = load_model_spec("tiny")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert from_folder.total_params == from_file.total_params == from_store.total_params \
        == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config, words", [
    ({"model_type": "bert", "hidden_size": 8}, ["bert", "not one the memory estimate knows"]),
    ({"model_type": "llama", "vocab_size": 10, "hidden_size": 8}, ["missing", "intermediate_size", "num_hidden_layers"]),
    ({**FAMILY_CONFIGS["llama"], "hidden_size": -64}, ["hidden_size", "positive"]),
    ({**FAMILY_CONFIGS["llama"], "num_key_value_heads": 3}, ["cannot be shared"]),
    ([1, 2], ["JSON object"]),
])
def test_bad_configs_say_what_is_wrong_in_one_line(config, words):
    with pytest.raises(StudioError) as error:
        spec_from_config(config, "mine")
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words)


def test_unknown_models_and_hub_ids_are_refused(tmp_path):
    with pytest.raises(StudioError, match="unknown model"):
        load_model_spec("no-such-model")
    with pytest.raises(StudioError, match="hub id"):
        load_model_spec("someone/some-model")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(StudioError, match="not valid JSON"):
        load_model_spec(tmp_path)


# the estimate --------------------------------------------------------------------------------
@pytest.mark.parametrize("settings", [
    dict(rank=0), dict(seq=0), dict(batch=-1), dict(grad_accum=0), dict(rank=10 ** 6), dict(seq=10 ** 9),
    dict(method="magic"), dict(optimizer="lion"), dict(lora_dropout=1.0), dict(rank=2.5), dict(num_virtual_tokens=0),
])
def test_impossible_plans_are_refused(settings):
    with pytest.raises(StudioError):
        Plan(**settings).validate()
    with pytest.raises(StudioError):
        estimate_memory(catalog("SmolLM2-135M-Instruct"), Plan(**settings))


@pytest.mark.alone
def test_importing_the_estimate_does_not_import_torch_and_estimates_are_fast():
    code = "import sys, engine.memory.autofit; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    spec, plan = catalog("Llama-3.1-70B"), Plan(method="full", grad_checkpointing=True)
    started = time.perf_counter()
    for _ in range(100):
        estimate_memory(spec, plan)
    assert time.perf_counter() - started < 2.0  # 5 ms an estimate at most; it takes well under one


def _quantised_bits(spec, plan) -> float:
    estimate = estimate_memory(spec, plan)
    kept_16bit = 2 * (spec.embedding_params + spec.lm_head_params + spec.norm_params)
    return (estimate.items["weights"] - kept_16bit) * 8 / spec.linear_params


def test_nf4_weights_cost_half_a_byte_plus_block_scales():
    spec = catalog("Llama-3.1-8B")
    assert _quantised_bits(spec, Plan(method="qlora", double_quant=True)) == pytest.approx(4.127, abs=0.002)
    assert _quantised_bits(spec, Plan(method="qlora", double_quant=False)) == pytest.approx(4.5, abs=0.001)
    assert _quantised_bits(spec, Plan(method="qlora", quant="fp4", double_quant=False)) == pytest.approx(4.5, abs=0.001)
    assert _quantised_bits(spec, Plan(method="qlora", quant="int8")) == pytest.approx(8.0, abs=0.01)
    fp32 = estimate_memory(spec, Plan(method="lora", precision="fp32")).items["weights"]
    assert fp32 == 4 * spec.total_params  # an fp32 run (on a CPU) loads fp32 weights


def test_methods_order_full_over_lora_over_qlora():
    spec = catalog("Llama-3.2-1B")
    peaks = {method: estimate_memory(spec, Plan(method=method, batch=2, seq=1024)).peak_allocated_bytes
             for method in ("full", "dora", "lora", "qlora")}
    assert peaks["full"] > peaks["dora"] > peaks["lora"] > peaks["qlora"]


def test_gradient_checkpointing_lowers_activations_and_a_frozen_base_loads_in_16_bits():
    spec = catalog("Llama-3.1-8B")
    plain = estimate_memory(spec, Plan(method="lora", batch=2, seq=2048))
    checkpointed = estimate_memory(spec, Plan(method="lora", batch=2, seq=2048, grad_checkpointing=True))
    assert checkpointed.items["activations"] < plain.items["activations"] / 5
    # LoRA's frozen base loads in bf16: two bytes a weight, and autocast has nothing to copy
    assert plain.items["weights"] == 2 * spec.total_params and plain.items["autocast_weight_copies"] == 0
    assert estimate_memory(spec, Plan(method="lora", precision="fp32")).items["weights"] == 4 * spec.total_params
    # Full fine-tuning keeps fp32 masters under bf16 autocast: every linear's 16-bit copy is kept for backward
    full = estimate_memory(spec, Plan(method="full", batch=2, seq=2048, optimizer="sgd"))
    assert full.peak_phase == "forward_backward" and full.items["weights"] == 4 * spec.total_params
    assert full.items["autocast_weight_copies"] == pytest.approx(2 * (spec.linear_params + spec.embedding_params),
                                                                 rel=0.01)
    assert estimate_memory(spec, Plan(method="full", precision="fp32")).items["autocast_weight_copies"] == 0
    assert estimate_memory(spec, Plan(method="qlora")).items["autocast_weight_copies"] == 0


def test_custom_target_modules_adapt_only_those_linears():
    spec = catalog("Llama-3.1-8B")
    chosen = estimate_memory(spec, Plan(method="lora", rank=8, target_modules=("q_proj", "down_proj")))
    q, down = spec.linear("q_proj"), spec.linear("down_proj")
    assert chosen.trainable_params == 8 * (q.in_features + q.out_features + down.in_features + down.out_features) \
        * spec.num_layers
    with pytest.raises(StudioError, match="no module named wqkv"):
        estimate_memory(spec, Plan(method="lora", target_modules=("wqkv",)))
    assert Plan.from_dict(chosen.plan.to_dict()) == chosen.plan  # survives JSON (a list) and back (a tuple)


def test_the_loss_holds_one_chunk_of_vocabulary_rows_not_the_whole_batchs():
    spec = catalog("Llama-3.1-8B")  # a 128k vocabulary
    # (Accumulating, so the adapter's gradients live through the forward pass and it peaks at its end.)
    plan = Plan(method="qlora", batch=2, seq=512, grad_accum=2)
    chunk = chunk_rows(spec.vocab_size) * spec.vocab_size * 8  # fp32 logits and log-probabilities
    small, large = estimate_memory(spec, plan), estimate_memory(spec, replace(plan, batch=4))
    assert small.peak_moment == large.peak_moment == "forward_end"
    # Beside the chunk: fp32 hidden states, their gathered rows and the rows' gradient, per token.
    assert small.items["logits_and_loss"] == chunk + 2 * 512 * (3 * 4 * spec.hidden_size + 16)
    assert large.items["logits_and_loss"] - small.items["logits_and_loss"] == 2 * 512 * (3 * 4 * spec.hidden_size + 16)
    assert large.items["logits_and_loss"] < 4 * 512 * spec.vocab_size * 4 / 2  # under half the batch's fp32 logits


def test_trainable_parameters_of_each_method():
    spec = catalog("Llama-3.1-8B")
    layers, hidden = spec.num_layers, spec.hidden_size
    lora = sum(16 * (lin.in_features + lin.out_features) for lin in spec.layer_linears) * layers
    assert estimate_memory(spec, Plan(method="lora", rank=16)).trainable_params == lora
    assert estimate_memory(spec, Plan(method="lora", rank=16, targets="q,v")).trainable_params \
        == 16 * (hidden + spec.q_dim + hidden + spec.kv_dim) * layers
    dora = lora + sum(lin.out_features for lin in spec.layer_linears) * layers  # a magnitude per output
    assert estimate_memory(spec, Plan(method="dora", rank=16)).trainable_params == dora
    assert estimate_memory(spec, Plan(method="prompt", num_virtual_tokens=20)).trainable_params == 20 * hidden
    assert estimate_memory(spec, Plan(method="prefix", num_virtual_tokens=20)).trainable_params \
        == 20 * layers * 2 * spec.kv_dim
    projected = estimate_memory(spec, Plan(method="prefix", num_virtual_tokens=20, prefix_projection=True))
    width = spec.kv_dim  # an embedding and the reparametrisation MLP width -> width -> layers x 2 x width
    assert projected.trainable_params == 20 * width + width * width + width + (width + 1) * layers * 2 * width
    ptuning = estimate_memory(spec, Plan(method="ptuning", num_virtual_tokens=20)).trainable_params
    assert ptuning == 20 * hidden + 3 * (hidden * hidden + hidden)
    assert estimate_memory(spec, Plan(method="full")).trainable_params == spec.total_params


def test_full_fine_tuning_peaks_at_the_optimizer_step():
    spec = catalog("Llama-3.1-8B")
    estimate = estimate_memory(spec, Plan(method="full", batch=1, seq=256, grad_checkpointing=True))
    assert estimate.peak_phase == "optimizer_step"
    assert estimate.peak_allocated_bytes == max(estimate.phases.values())
    # fp32 weights, fp32 gradients and two fp32 AdamW moments: 16 bytes a parameter
    assert estimate.peak_allocated_bytes == 16 * spec.total_params
    assert estimate.items["activations"] == estimate.items["logits_and_loss"] == 0


def test_optimizers_paged_states_stay_outside_the_allocator():
    spec = catalog("Llama-3.2-1B")
    adamw = estimate_memory(spec, Plan(method="full", seq=256))
    eight_bit = estimate_memory(spec, Plan(method="full", seq=256, optimizer="adamw_8bit"))
    paged = estimate_memory(spec, Plan(method="full", seq=256, optimizer="paged_adamw_32bit"))
    sgd = estimate_memory(spec, Plan(method="full", seq=256, optimizer="sgd"))
    assert adamw.items["optimizer_states"] == 8 * spec.total_params
    assert eight_bit.items["optimizer_states"] == pytest.approx(2 * spec.total_params, rel=0.02)
    assert paged.items["optimizer_states"] == 0 and paged.paged_optimizer_bytes == 8 * spec.total_params
    assert sgd.items["optimizer_states"] == 0
    assert adamw.peak_allocated_bytes > eight_bit.peak_allocated_bytes > paged.peak_allocated_bytes


def test_device_totals_add_the_cuda_context_and_allocator_reserve():
    spec = catalog("Qwen2.5-1.5B")
    gpu = estimate_memory(spec, Plan(), device="cuda")
    cpu = estimate_memory(spec, Plan(precision="fp32"), device="cpu")
    assert gpu.device_bytes == gpu.peak_allocated_bytes + CUDA_CONTEXT_BYTES \
        + round(gpu.peak_allocated_bytes * ALLOCATOR_RESERVE_FRACTION)
    assert cpu.device_bytes == cpu.peak_allocated_bytes
    for estimate in (gpu, cpu):
        assert list(estimate.items) == list(ITEMS) and sum(estimate.items.values()) == estimate.device_bytes
    assert gpu.fits(2 * gpu.device_bytes) and not gpu.fits(gpu.device_bytes)  # a 10% margin by default
    assert json.loads(json.dumps(gpu.to_dict()))["plan"]["method"] == "lora"


def test_eager_attention_adds_sequence_squared_terms_that_sdpa_avoids():
    spec = catalog("Llama-3.2-1B")
    def activations(attention: str, seq: int) -> int:
        return estimate_memory(spec, Plan(batch=1, seq=seq, attention=attention)).items["activations"]
    assert activations("sdpa", 4096) / activations("sdpa", 2048) == pytest.approx(2, rel=0.05)
    assert activations("eager", 4096) / activations("eager", 2048) > 2.5
    gemma = estimate_memory(catalog("Gemma-2-2B"), Plan(seq=1024))
    assert any("eager" in note for note in gemma.notes)  # soft-capped attention cannot run in sdpa


def test_targets_follow_the_recipe():
    with pytest.raises(StudioError, match="no q_proj, v_proj"):
        estimate_memory(catalog("Phi-3-mini-4k"), Plan(targets="q,v"))
    attention = estimate_memory(catalog("Phi-3-mini-4k"), Plan(targets="attention"))
    assert attention.trainable_params == 16 * (3072 + 3072) * 32  # only o_proj: its q/k/v are fused


# auto-fit ------------------------------------------------------------------------------------
def test_auto_fit_finds_a_plan_that_fills_a_24gib_gpu_for_llama_3_8b():
    spec = catalog("Llama-3.1-8B")
    fit = auto_fit(spec, 24 * GiB)
    assert fit.fits and fit.suggestion is None
    used = estimate_memory(spec, fit.plan).device_bytes
    assert used == fit.estimate.device_bytes and 0.80 * 24 * GiB <= used <= 0.90 * 24 * GiB
    # LoRA's bf16 base (16 GB) fits beside a loss that holds one chunk of logits, not the batch's.
    assert fit.plan.method == "lora"
    assert fit.plan.batch * fit.plan.grad_accum >= 16
    assert len(fit.explanations) >= 5 and all(line.endswith(".") for line in fit.explanations)


def test_auto_fit_sizes_the_length_to_the_dataset():
    stats = {"p50": 200, "p90": 500, "p95": 700, "p99": 1000, "max": 3000}  # as `data inspect` reports them
    fit = auto_fit(catalog("Qwen2.5-1.5B"), 16 * GiB, dataset_stats=stats)
    assert fit.fits and fit.plan.seq == 1024  # p99 rounded up to a multiple of 64
    assert any("99%" in line for line in fit.explanations)
    small = auto_fit(catalog("SmolLM2-360M"), 80 * GiB, dataset_stats=LengthStats(100, 300, 400, 500),
                     preferences={"method": "full", "effective_batch": 8})
    assert small.plan.method == "full" and small.plan.batch == 8 and not small.plan.grad_checkpointing


def test_auto_fit_says_plainly_when_nothing_fits_and_what_would():
    fit = auto_fit(catalog("Llama-3.1-70B"), 6 * GiB)
    assert not fit.fits
    assert fit.explanations[0].startswith("Nothing fits")
    assert fit.suggestion and any(name in fit.suggestion for name in list_catalog())


@pytest.mark.parametrize("memory", [-1, 0, 10 ** 18, 2.5, True])
def test_auto_fit_refuses_impossible_memory(memory):
    with pytest.raises(StudioError):
        auto_fit(catalog("SmolLM2-135M-Instruct"), memory)


def test_memory_sizes_parse_like_people_write_them():
    assert parse_bytes("24GiB") == 24 * GiB and parse_bytes("24GB") == 24 * 10 ** 9
    assert parse_bytes("8000MiB") == 8000 << 20 and parse_bytes("1.5 gib") == 3 * GiB // 2
    for bad in ("-3GB", "0", "lots", "12 parsecs", "2000TB"):
        with pytest.raises(StudioError):
            parse_bytes(bad)


# calibration ---------------------------------------------------------------------------------
# What a GPU's max_memory_allocated reads, and its CPU counterpart (the profiler's live tensor bytes).
ALLOCATOR_METRICS = ("cuda_max_allocated", "cpu_allocated")
NEVER_LOW = 0.05  # the bound: an estimate that runs low lets auto-fit plan an out-of-memory run


def _reports() -> list:
    reports = []
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        if "rows" in report and "tolerance" in report:
            reports.append(pytest.param(report, id=path.stem))
    return reports


def _calibration_rows() -> list:
    params = []
    for report in (param.values[0] for param in _reports()):
        for index, row in enumerate(report["rows"]):
            for metric, measured in row.get("measured", {}).items():
                params.append(pytest.param(row, metric, measured, report["tolerance"][metric],
                                           id=f"{report['date']}-{index}-{row['model']}-{metric}"))
    return params


def _estimated(row: dict) -> int:
    return estimate_memory(spec_from_config(row["config"], row["model"]), Plan(**row["plan"]),
                           row["device"]).peak_allocated_bytes


def test_calibration_results_were_recorded():
    assert _calibration_rows(), "run bench/memory_calibration.py to record measurements"


@pytest.mark.parametrize("row, metric, measured, tolerance", _calibration_rows())
def test_estimate_matches_every_recorded_measurement(row, metric, measured, tolerance):
    # Allocator measurements: at most 5% under and 10% over; RSS is allowed its stated 15% both ways.
    assert tolerance <= (0.15 if metric == "cpu_rss_growth" else 0.10)
    low = NEVER_LOW if metric in ALLOCATOR_METRICS else tolerance
    estimate = _estimated(row)
    assert -low * measured <= estimate - measured <= tolerance * measured, (
        f"{row['model']} {Plan(**row['plan']).describe()}: estimated {estimate:,}, measured {measured:,} ({metric})")


@pytest.mark.parametrize("report", _reports())
def test_median_error_of_each_calibration_is_within_five_percent(report):
    for metric in ALLOCATOR_METRICS:
        errors = [abs(_estimated(row) - row["measured"][metric]) / row["measured"][metric]
                  for row in report["rows"] if metric in row.get("measured", {})]
        if errors:
            assert statistics.median(errors) <= NEVER_LOW, f"{metric}: median error {statistics.median(errors):.1%}"


# the command line ----------------------------------------------------------------------------
def lora_studio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio.launch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


def test_cli_estimate_json_prints_the_itemised_estimate():
    result = lora_studio("estimate", "--model", "Llama-3.1-8B", "--method", "qlora", "--rank", "32", "--batch", "2",
                         "--seq", "1024", "--grad-checkpointing", "--optimizer", "paged_adamw_8bit",
                         "--device-memory", "24GiB", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"peak_allocated_bytes", "device_bytes", "items", "fits", "plan"} <= set(report)
    assert report["fits"] is True and set(report["items"]) == set(ITEMS)
    assert report["plan"]["rank"] == 32 and report["plan"]["optimizer"] == "paged_adamw_8bit"
    assert sum(report["items"].values()) == report["device_bytes"]
    human = lora_studio("estimate", "--model", "starter", "--method", "lora", "--device-memory", "8000MiB")
    assert human.returncode == 0 and "peak allocated" in human.stdout and "fits" in human.stdout


def test_cli_estimate_fit_returns_the_plan_and_its_reasons():
    result = lora_studio("estimate", "--model", "Llama-3.1-8B", "--method", "lora", "--device-memory", "24GB",
                         "--fit", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["fits"] is True and report["plan"]["method"] == "qlora" and report["explanations"]
    assert report["device_bytes"] <= 0.9 * 24e9


@pytest.mark.parametrize("args", [
    ("--model", "nope", "--method", "lora"),
    ("--model", "starter", "--method", "lora", "--rank", "0", "--device-memory", "8GB"),
    ("--model", "starter", "--method", "lora", "--batch", "many", "--device-memory", "8GB"),
    ("--model", "starter", "--method", "sorcery", "--device-memory", "8GB"),
    ("--model", "starter", "--method", "lora", "--device-memory=-3GB"),
])
def test_cli_estimate_bad_input_is_one_readable_line(args):
    result = lora_studio("estimate", *args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
