"""Choices that cannot run are refused before a run starts, each with a sentence that says
why and what to pick instead; no run directory is made for them."""

from __future__ import annotations

import shutil
import sys

import pytest

from engine.run.config import RunConfig
from engine.errors import StudioError
from engine.jobs.summary import list_runs
from engine.jobs.training_job import TrainingJob
from engine.models.spec import CATALOG_DIR
from engine.train import preflight
from helpers import write_messages_dataset


def _config(model_dir, dataset, **settings) -> RunConfig:
    return RunConfig(model=str(model_dir), dataset=str(dataset), max_steps=2, max_length=64, **settings)


@pytest.mark.parametrize("settings, message", [
    (dict(precision="fp16"), "fp16 mixed precision needs a CUDA GPU; on cpu use fp32"),
    (dict(method="qlora", compute_dtype="bf16"), "4-bit layers computing in bf16 need a CUDA GPU"),
    # A CPU computes bf16 (pure bf16 full fine-tuning runs there), but bitsandbytes' 4-bit layers do not.
    (dict(method="qlora", precision="bf16"), "4-bit layers computing in bf16 need a CUDA GPU"),
    (dict(method="full", pure_bf16="on"), "pure bf16 trains in bf16 and this run computes in fp32"),
    (dict(targets="q_proj,wqkv"), "the model has no module named wqkv; its linear layers are q_proj, k_proj"),
    (dict(targets="q_proj;v_proj"), "unknown targets"),
    (dict(method="prompt", batching="padding_free"), "padding-free batching cannot do: use padded batches"),
    (dict(early_stopping_patience=3), "early stopping watches the eval loss: hold out a validation share"),
    (dict(method="prompt", prompt_init="text"), "prompt tuning from a text needs the text"),
    (dict(use_rslora=True, method="prefix"), "rsLoRA scales a LoRA update"),
    (dict(memory_limit="lots"), "cannot read 'lots' as a memory size"),
    (dict(deepspeed="ds.json"), "DeepSpeed is not installed"),
])
def test_impossible_choices_are_refused_before_a_run_directory_exists(settings, message, tiny_model_dir, tmp_path):
    dataset = write_messages_dataset(tmp_path / "pirate.jsonl")
    with pytest.raises(StudioError, match=message.replace("(", r"\(")) as refused:
        TrainingJob.start(_config(tiny_model_dir, dataset, **settings))
    assert "\n" not in str(refused.value)
    assert list_runs() == []


def test_a_method_the_architecture_cannot_take_is_refused_naming_what_works(tmp_path):
    """Mamba has no attention: prompt-learning methods and LoRA's default targets do not attach."""
    from transformers import MambaConfig, MambaForCausalLM

    folder = tmp_path / "mamba"
    MambaForCausalLM(MambaConfig(vocab_size=400, hidden_size=64, num_hidden_layers=2, state_size=8)).save_pretrained(
        folder)
    with pytest.raises(StudioError) as refused:
        preflight.check_model(RunConfig(model=str(folder), dataset="d", method="prefix"), folder)
    assert str(refused.value).startswith("prefix tuning does not work with mamba models (")
    assert str(refused.value).endswith("what does: full fine-tuning")
    preflight.check_model(RunConfig(model=str(folder), dataset="d", method="full"), folder)  # and that one passes


def test_padding_free_batches_are_refused_where_attention_scores_are_soft_capped(tmp_path):
    folder = tmp_path / "gemma-2"
    folder.mkdir()
    shutil.copy(CATALOG_DIR / "Gemma-2-2B.json", folder / "config.json")
    with pytest.raises(StudioError, match="soft-caps its attention scores"):
        preflight.check_model(RunConfig(model=str(folder), dataset="d", batching="padding_free"), folder)


def test_qlora_without_bitsandbytes_says_how_to_get_it(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if it were not installed
    preflight._check_quantised_layers.cache_clear()
    try:
        with pytest.raises(StudioError, match="QLoRA needs the bitsandbytes package, which is not installed"):
            preflight.check(_config(tiny_model_dir, "d.jsonl", method="qlora"))
    finally:
        preflight._check_quantised_layers.cache_clear()


def test_an_unknown_device_is_refused_with_the_ones_there_are(tiny_model_dir):
    with pytest.raises(StudioError, match="device 'cuda:3' is not available here; choose auto or one of cpu"):
        preflight.check(_config(tiny_model_dir, "d.jsonl", device="cuda:3"))


def test_what_auto_resolves_to_on_this_machine(tiny_model_dir):
    resolved = preflight.check(_config(tiny_model_dir, "d.jsonl"))
    assert resolved == preflight.Resolved(device="cpu", precision="fp32")
