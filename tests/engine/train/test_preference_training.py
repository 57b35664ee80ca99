"""Preference runs on the tiny model, through the engine's recipe and TRL's real trainers: each
objective learns to prefer the chosen answers, full fine-tuning keeps a frozen reference copy,
reference-free DPO keeps none, a run starts from an SFT adapter, and the result reloads in stock
peft with the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.run.events import StepMetrics
from engine.train import recipe
from helpers import write_pairs
from training_runs import fit, new_run, prepare

STEPS = dict(max_steps=6, batch_size=4, lr=1e-2, log_every=1, max_length=64, val_fraction=0.0)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl")


def _metrics(run) -> list[StepMetrics]:
    from engine.run.events import read_events
    from engine.run.rundir import RunDir

    return [event for event in read_events(RunDir(run.run_dir).events) if isinstance(event, StepMetrics)]


def _estimated_reference(ready) -> int:
    """The memory estimate's reference item for the run ``ready`` was set up for."""
    from engine.memory.estimate import estimate_memory
    from engine.memory.planning import plan_for
    from engine.models.spec import load_model_spec

    plan = plan_for(ready.config, "cpu", precision=ready.precision)
    return estimate_memory(load_model_spec(ready.model_path), plan, "cpu").items["reference_model"]


def _held_bytes(parameters) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in parameters)


def _train(tmp_path, model_dir, pairs, **settings):
    run, ready = prepare(tmp_path, model_dir, dataset=str(pairs), **{**STEPS, **settings})
    trainer, callback = fit(run, ready)
    run.writer.close()
    return run, ready, trainer, _metrics(run)


@pytest.mark.parametrize("objective, settings", [("dpo", {}), ("kto", {}), ("orpo", {"beta": 1.0}),
                                                 ("simpo", {"beta": 2.0})])
def test_each_objective_trains_over_lora_and_the_reward_margin_grows(tiny_model_dir, tmp_path, pairs, objective,
                                                                      settings):
    _, ready, trainer, steps = _train(tmp_path, tiny_model_dir, pairs, objective=objective, **settings)
    assert len(steps) == 6
    # (A KTO batch of good answers only has no margin: KTO scores answers one at a time, with no accuracy.)
    margins = [step.reward_margin for step in steps if step.reward_margin is not None]
    later = margins[len(margins) // 2:]
    assert len(margins) >= 4 and sum(later) / len(later) > margins[0] + 0.01, margins
    assert all(step.rewards_chosen is not None or step.rewards_rejected is not None for step in steps)
    assert all((step.reward_accuracy is None) == (objective == "kto") for step in steps)
    assert all(step.tokens_per_second for step in steps[1:])
    # A new adapter is measured against the base with the adapter off: no copy of it, no reference model.
    assert list(ready.model.peft_config) == ["default"] and getattr(trainer, "ref_model", None) is None
    assert _estimated_reference(ready) == 0  # and the memory estimate counts none


def test_full_fine_tuning_trains_against_a_frozen_reference_copy(tiny_model_dir, tmp_path, pairs):
    import torch

    _, ready, trainer, steps = _train(tmp_path, tiny_model_dir, pairs, objective="dpo", method="full", lr=1e-3)
    reference = trainer.ref_model
    assert reference is not None and reference is not ready.model
    assert not any(p.requires_grad for p in reference.parameters())
    assert _estimated_reference(ready) == _held_bytes(reference.parameters())  # loaded as the policy was
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(reference.state_dict()[name], base.state_dict()[name])  # the reference did not move
    assert not torch.equal(ready.model.state_dict()[name], base.state_dict()[name])  # the policy did
    assert steps[-1].reward_margin > steps[0].reward_margin


def test_reference_free_dpo_reads_a_uniform_reference_and_keeps_no_copy(tiny_model_dir, tmp_path, pairs):
    _, ready, trainer, steps = _train(tmp_path, tiny_model_dir, pairs, objective="dpo", method="full", lr=1e-3,
                                      reference_free=True, max_steps=3)
    assert trainer.ref_model is None
    assert set(trainer.train_dataset["ref_chosen_logps"]) == {0.0}
    # Against a uniform reference the rewards are beta times the answers' own log-probabilities: below 0.
    assert steps[0].rewards_chosen < 0 and steps[0].rewards_rejected < 0


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    """An SFT adapter of the pirate style, trained once for the module in a home of its own."""
    folder = tmp_path_factory.mktemp("sft")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(folder / "home"))
        finished = recipe.run_and_report(new_run(folder, tiny_model_dir, name="pirate-sft", max_steps=2))
    assert finished.status == "completed", finished.error
    return Path(finished.adapter)


def test_dpo_from_an_sft_adapter_saves_a_stock_adapter_that_reloads_with_identical_logits(tiny_model_dir, tmp_path,
                                                                                        pairs, sft_adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from engine.train import saving

    run, ready, trainer, steps = _train(tmp_path, tiny_model_dir, pairs, objective="dpo", beta=0.2,
                                        from_adapter=str(sft_adapter), name="pirate-dpo", max_steps=3)
    assert "ref" in ready.model.peft_config  # the starting adapter, frozen, is the reference
    copy = [parameter for name, parameter in ready.model.named_parameters() if ".ref." in name]
    assert _estimated_reference(ready) == _held_bytes(copy) > 0  # which the memory estimate counts
    config = ready.config
    meta = saving.run_meta(config, ready.model_path, ready.tokenizer, ready.device, ready.precision,
                           ready.examples.dataset_hash, [(s.step, s.loss) for s in steps], 3, steps[-1].loss, 1.0,
                           run.run_dir, trainer.state)
    saved = saving.save_adapter(config, run.run_dir, ready.model, meta)

    written = json.loads((saved / "studio.json").read_text())
    assert (written["objective"], written["beta"], written["dpo_loss"]) == ("dpo", 0.2, "sigmoid")
    assert written["from_adapter"] == str(sft_adapter)
    # TRL's frozen "ref" copy of the starting adapter is not part of the result.
    assert not [path for path in saved.iterdir() if path.is_dir()]
    ids = torch.tensor([[1, 5, 9, 42, 7, 2]])
    started = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), sft_adapter).eval()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), saved).eval()
    ready.model.eval()
    with torch.no_grad():
        assert torch.equal(ready.model(input_ids=ids).logits, reloaded(ids).logits)
        assert not torch.allclose(started(ids).logits, reloaded(ids).logits)  # it trained on from the SFT adapter


def test_a_start_adapter_from_another_base_is_refused_before_the_run(tmp_path, pairs, sft_adapter):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other-model", seed=1)
    with pytest.raises(StudioError, match="was trained on .*not on"):
        prepare(tmp_path / "dpo", other, dataset=str(pairs), objective="dpo", from_adapter=str(sft_adapter))
