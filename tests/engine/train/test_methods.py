"""Every training method on the tiny Llama model, in this process: the engine's own set-up
(model loading, quantisation, the PEFT method, the Trainer it builds) trains a few steps,
and what it saves reloads through stock peft / transformers to the very same outputs."""

from __future__ import annotations

import math

import pytest

from engine.memory.estimate import estimate_memory
from engine.models.spec import load_model_spec
from engine.memory.planning import plan_for
from engine.train import loading, recipe
from training_runs import fit, prepare

PROBE_IDS = [[5, 17, 42, 9, 101, 7, 3, 64]]


def training_set_loss(ready) -> float:
    """The model's loss on the first rows of its own training set, as one padded batch."""
    import torch

    from engine.train.batching import make_collator

    rows = [ready.examples.train[i] for i in range(8)]
    batch = make_collator(ready.tokenizer, "padded")(rows)
    ready.model.eval()
    with torch.no_grad():
        loss = ready.model(**batch).loss.item()
    ready.model.train()
    return loss


def logits(model, ids=PROBE_IDS):
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.ones(len(ids), len(ids[0]))).logits


METHODS = {
    "lora": dict(method="lora"),
    "lora-rslora-attention": dict(method="lora", use_rslora=True, targets="attention", dropout=0.0),
    "lora-own-modules": dict(method="lora", targets="q_proj,down_proj"),
    "dora": dict(method="dora", targets="q,v"),
    "qlora-nf4-double": dict(method="qlora", quant="nf4", double_quant=True),
    "qlora-fp4": dict(method="qlora", quant="fp4", double_quant=False),
    "qlora-int8": dict(method="qlora", quant="int8"),
    "prompt-random": dict(method="prompt", num_virtual_tokens=6, lr=0.3),
    "prompt-text": dict(method="prompt", num_virtual_tokens=6, prompt_init="text",
                        prompt_init_text="Arr matey, talk like a pirate", lr=0.3),
    "prefix": dict(method="prefix", num_virtual_tokens=6, lr=0.3),
    "prefix-projection": dict(method="prefix", num_virtual_tokens=6, prefix_projection=True, lr=0.3),
    "ptuning": dict(method="ptuning", num_virtual_tokens=6, lr=0.3),
}


@pytest.mark.parametrize("settings", list(METHODS.values()), ids=list(METHODS))
def test_each_peft_method_trains_and_stock_peft_reloads_it_identically(settings, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    run, ready = prepare(tmp_path, tiny_model_dir, **settings)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    before = training_set_loss(ready)
    _, callback = fit(run, ready)
    losses = [loss for _step, loss in callback.loss_history]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert training_set_loss(ready) < before - 0.01  # it learned something

    # What trains is what the memory estimate counts.
    trainable, _total = recipe.parameter_counts(ready.model)
    estimate = estimate_memory(load_model_spec(tiny_model_dir), plan_for(ready.config, "cpu"), "cpu")
    assert trainable == estimate.trainable_params

    saved = tmp_path / "adapter"
    ready.model.save_pretrained(saved)
    quantised = {}
    if ready.config.method == "qlora":
        bnb = (BitsAndBytesConfig(load_in_8bit=True) if ready.config.quant == "int8" else
               BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=ready.config.quant,
                                  bnb_4bit_use_double_quant=ready.config.double_quant))
        quantised = dict(quantization_config=bnb, device_map={"": "cpu"})
    stock = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, **quantised), saved)
    if quantised:
        # The same kernel as the trained model: on a CPU with AVX512-BF16, stock bitsandbytes would
        # compute the reload's 4-bit layers in bf16 (engine.train.loading.keep_4bit_training_layout).
        loading.keep_4bit_training_layout(stock)
    trained = logits(ready.model)
    assert (logits(stock) - trained).abs().max().item() < 1e-5
    # And the method really changes the model (prompt tuning's logits lead with its virtual tokens').
    assert (trained[:, -base_logits.shape[1]:] - base_logits).abs().max().item() > 1e-3


def _dequantised_4bit_weights(model) -> dict:
    import bitsandbytes.functional as bnb_functional

    return {name: bnb_functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            for name, module in model.named_modules() if type(module).__name__ == "Linear4bit"}


@pytest.mark.parametrize("quant, double_quant", [("nf4", True), ("fp4", False)], ids=["nf4-double", "fp4"])
def test_a_qlora_base_survives_an_evaluation_and_a_save_on_a_cpu_with_a_bf16_inference_kernel(
        quant, double_quant, tiny_model_dir, tmp_path, monkeypatch):
    import bitsandbytes.nn.modules
    import torch

    # bitsandbytes asks the CPU, layer by layer, whether to repack 4-bit weights for its AVX512-BF16
    # inference kernel: answer as such a CPU does (the machine that found this bug had one).
    monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: True)
    run, ready = prepare(tmp_path, tiny_model_dir, method="qlora", quant=quant, double_quant=double_quant)
    loaded = _dequantised_4bit_weights(ready.model)
    assert loaded
    before = training_set_loss(ready)  # an evaluation: eval mode, no gradients
    fit(run, ready)
    assert training_set_loss(ready) < before - 0.01
    ready.model.save_pretrained(tmp_path / "adapter")  # what every checkpoint does
    after = _dequantised_4bit_weights(ready.model)
    assert all(torch.equal(loaded[name], after[name]) for name in loaded)


def test_rslora_scales_by_alpha_over_the_square_root_of_the_rank(tiny_model_dir, tmp_path):
    _run, ready = prepare(tmp_path, tiny_model_dir, method="lora", rank=16, alpha=8, use_rslora=True)
    layer = ready.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == pytest.approx(8 / 4)  # alpha / sqrt(16), not alpha / 16


def test_prompt_tuning_from_text_starts_at_the_texts_embeddings_and_saves_a_portable_config(tiny_model_dir,
                                                                                            tmp_path):
    import json

    import torch

    text = "Arr matey"
    run, ready = prepare(tmp_path, tiny_model_dir, method="prompt", num_virtual_tokens=5, prompt_init="text",
                         prompt_init_text=text)
    ids = ready.tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = ready.model.get_input_embeddings()(torch.tensor((ids * 5)[:5]))
    start = ready.model.prompt_encoder["default"].embedding.weight
    assert torch.allclose(start, expected)
    ready.model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    # No tokenizer path to look for on another machine: the start values are in the weights.
    assert saved["prompt_tuning_init"] == "RANDOM" and not saved.get("tokenizer_name_or_path")


def test_full_fine_tuning_trains_every_weight_and_reloads_identically(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run, ready = prepare(tmp_path, tiny_model_dir, method="full", lr=1e-3)
    trainable, total = recipe.parameter_counts(ready.model)
    assert trainable == total == load_model_spec(tiny_model_dir).total_params
    before = training_set_loss(ready)
    fit(run, ready)
    assert training_set_loss(ready) < before - 0.01
    ready.model.save_pretrained(tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert (logits(reloaded) - logits(ready.model)).abs().max().item() < 1e-6
