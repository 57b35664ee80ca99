"""Preference objectives in the estimate, auto-fit and the CLI: chosen and rejected answers in
one batch, the reference pass, the reference copy full fine-tuning holds, TRL's fused head for
DPO and KTO against ORPO's and SimPO's whole logits. (The CPU calibration rows in
bench/results/cpu-preference-*.json hold the items against measured peaks.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from engine.errors import StudioError
from engine.memory.estimate import estimate_memory
from engine.memory.plan import Plan
from engine.memory.planning import config_with_plan, fit_run, plan_for
from engine.models.spec import load_model_spec
from engine.run.config import RunConfig
from helpers import ROOT

GiB = 1 << 30


@pytest.fixture(scope="module")
def spec():
    return load_model_spec("Llama-3.2-1B")


def test_each_objective_counts_what_its_trainer_holds(spec):
    plan = Plan(method="lora", batch=2, seq=1024)
    sft = estimate_memory(spec, replace(plan, lora_dropout=0.0))  # TRL's trainers switch dropout off
    dpo = estimate_memory(spec, replace(plan, objective="dpo"))
    orpo = estimate_memory(spec, replace(plan, objective="orpo"))
    kto = estimate_memory(spec, replace(plan, objective="kto"))
    # Pairs run chosen and rejected side by side: twice the rows' activations of SFT at the same batch.
    assert dpo.items["activations"] == pytest.approx(2 * sft.items["activations"], rel=0.05)
    assert kto.items["activations"] == pytest.approx(sft.items["activations"], rel=0.05)
    # A new adapter's reference is the base with the adapter off: a pass, and no copy of anything.
    assert dpo.items["reference_model"] == 0 and any("adapter switched off" in note for note in dpo.notes)
    assert dpo.peak_moment == "reference_pass" or dpo.items["reference_pass"] == 0
    # Going on from a trained adapter (SFT -> DPO), TRL keeps a frozen copy of it as the reference.
    started = estimate_memory(spec, replace(plan, objective="dpo", from_adapter=True))
    assert started.items["reference_model"] == 4 * started.trainable_params
    assert started.peak_allocated_bytes - dpo.peak_allocated_bytes == 4 * started.trainable_params
    assert orpo.items["reference_model"] == orpo.items["reference_pass"] == 0
    # ORPO holds the whole logits (4 rows x 1024 x 128k in bf16, 1 GiB); DPO's fused head one tile.
    assert orpo.items["logits_and_loss"] >= 4 * 1024 * spec.vocab_size * 2
    assert dpo.items["logits_and_loss"] < orpo.items["logits_and_loss"] / 2
    assert any("fused head" in note for note in dpo.notes) and any("whole logits" in note for note in orpo.notes)
    assert "dpo lora" in dpo.plan.describe() and "pairs" in dpo.plan.describe()
    assert any("switches dropout off" in note for note in dpo.notes)


def test_full_fine_tuning_holds_a_reference_copy_unless_reference_free(spec):
    plan = Plan(method="full", batch=1, seq=512, objective="dpo", pure_bf16=True)
    dpo = estimate_memory(spec, plan)
    free = estimate_memory(spec, replace(plan, reference_free=True))
    # The reference is loaded as the policy is: bf16 weights in pure bf16, fp32 under autocast.
    assert dpo.items["reference_model"] == 2 * spec.total_params
    masters = estimate_memory(spec, replace(plan, pure_bf16=False))
    assert masters.items["reference_model"] == 4 * spec.total_params
    assert free.items["reference_model"] == 0 and free.items["reference_pass"] == 0
    assert dpo.phases["optimizer_step"] - free.phases["optimizer_step"] == 2 * spec.total_params
    with pytest.raises(StudioError, match="reference-free is a DPO setting"):
        Plan(method="full", objective="kto", reference_free=True).validate()
    with pytest.raises(StudioError, match="not prompt"):
        Plan(method="prompt", objective="dpo").validate()


def test_auto_fit_sizes_a_preference_run_from_its_config(spec):
    config = RunConfig(model="m", dataset="d", method="lora", batch_size=8, objective="dpo", max_length=2048)
    plan = plan_for(config, "cuda")
    assert (plan.objective, plan.rows, plan.from_adapter) == ("dpo", 16, False)
    started = replace(config, from_adapter="pirate-sft", rank=32)
    assert plan_for(started, "cuda").reference_adapter
    # Auto-fit sizes the starting adapter's rank and layers, and never changes them.
    kept = fit_run(started, spec, "cuda", 12 * GiB)
    assert kept.plan.from_adapter and kept.plan.rank == 32 and kept.estimate.items["reference_model"] > 0
    assert config_with_plan(started, kept.plan).rank == 32
    fit = fit_run(config, spec, "cuda", 12 * GiB)
    sft = fit_run(replace(config, objective="sft"), spec, "cuda", 12 * GiB)
    assert fit.fits and fit.plan.objective == "dpo" and fit.estimate.device_bytes <= 0.9 * 12 * GiB
    assert fit.plan.batch * fit.plan.grad_accum >= 8
    # Two rows a pair: the micro-batch of pairs is no larger than SFT's of examples.
    assert (fit.plan.seq, fit.plan.batch) <= (sft.plan.seq, sft.plan.batch) or fit.plan.grad_checkpointing
    assert config_with_plan(config, fit.plan).objective == "dpo"
    # KTO estimates its KL term from the micro-batch's other answers: never a micro-batch of one.
    kto = fit_run(replace(config, objective="kto"), load_model_spec("Llama-3.1-8B"), "cuda", 16 * GiB)
    assert kto.fits and kto.plan.batch >= 2 and kto.plan.objective == "kto"


def test_cli_estimate_takes_the_objective():
    run = subprocess.run([sys.executable, "-m", "studio.launch", "estimate", "--model", "Llama-3.2-1B", "--method",
                          "full", "--objective", "dpo", "--batch", "2", "--seq", "512", "--device-memory", "80GiB",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["plan"]["objective"] == "dpo" and report["items"]["reference_model"] > 0
    assert sum(report["items"].values()) == report["device_bytes"]
    assert any("reference copy" in note for note in report["notes"])
