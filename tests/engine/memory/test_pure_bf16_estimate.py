"""Pure bf16 full fine-tuning in the estimate, auto-fit and the CLI: bf16 weights and gradients,
torch-optimi's bf16 AdamW states with their Kahan buffer, no autocast weight copies; auto-fit
plans it for full fine-tuning on a bf16 GPU. (The CPU calibration rows in bench/results hold the
items against measured peaks.)"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine.errors import StudioError
from engine.memory.autofit import auto_fit
from engine.memory.estimate import estimate_memory
from engine.memory.plan import Plan
from engine.memory.planning import fit_run, plan_for
from engine.models.spec import load_model_spec
from engine.run.config import RunConfig

GiB = 1 << 30


@pytest.fixture(scope="module")
def spec():
    return load_model_spec("Llama-3.2-1B")


def test_pure_bf16_keeps_weights_gradients_and_adamw_states_in_bf16(spec):
    params = spec.total_params
    masters = estimate_memory(spec, Plan(method="full", batch=1, seq=512))
    pure = estimate_memory(spec, Plan(method="full", batch=1, seq=512, pure_bf16=True))
    assert (masters.items["weights"], pure.items["weights"]) == (4 * params, 2 * params)
    assert pure.items["autocast_weight_copies"] == 0
    assert pure.phases["optimizer_step"] == (2 + 2 + 6) * params  # weights, gradients, two moments and the Kahan buffer
    assert masters.phases["optimizer_step"] == (4 + 4 + 8) * params
    assert pure.peak_allocated_bytes < 0.65 * masters.peak_allocated_bytes
    assert any("pure bf16" in note for note in pure.notes) and "pure bf16" in pure.plan.describe()
    # The 8-bit optimizers keep their own state whatever the weights' dtype: only weights and gradients halve.
    eight_bit = estimate_memory(spec, Plan(method="full", batch=1, seq=512, optimizer="adamw_8bit", pure_bf16=True))
    assert eight_bit.items["optimizer_states"] == estimate_memory(
        spec, Plan(method="full", batch=1, seq=512, optimizer="adamw_8bit")).items["optimizer_states"]
    assert eight_bit.phases["optimizer_step"] < pure.phases["optimizer_step"]


@pytest.mark.parametrize("settings", [dict(method="lora"), dict(method="full", precision="fp16"),
                                      dict(method="full", precision="fp32")])
def test_a_plan_refuses_pure_bf16_outside_full_fine_tuning_in_bf16(settings):
    with pytest.raises(StudioError, match="pure bf16 applies to full fine-tuning in bf16 only"):
        Plan(pure_bf16=True, **settings).validate()


def test_a_run_config_plans_pure_bf16_where_it_resolves_to_bf16():
    config = RunConfig(model="m", dataset="d", method="full")
    assert plan_for(config, "cuda", bf16=True).pure_bf16
    assert not plan_for(config, "cuda", bf16=False).pure_bf16  # fp16 GPUs train fp32 masters with loss scaling
    assert not plan_for(config, "cpu").pure_bf16  # auto is fp32 on a CPU
    assert plan_for(replace(config, precision="bf16"), "cpu").pure_bf16
    assert not plan_for(replace(config, pure_bf16="off"), "cuda").pure_bf16
    assert not plan_for(replace(config, method="lora"), "cuda").pure_bf16


def test_auto_fit_plans_full_fine_tuning_on_a_bf16_gpu_in_pure_bf16(spec):
    config = RunConfig(model="m", dataset="d", method="full", batch_size=8)
    pure = fit_run(config, spec, "cuda", 24 * GiB)
    masters = fit_run(replace(config, pure_bf16="off"), spec, "cuda", 24 * GiB)
    assert pure.fits and pure.plan.pure_bf16 and any("pure bf16" in line for line in pure.explanations)
    assert masters.fits and not masters.plan.pure_bf16
    # Without fp32 masters the plan needs fewer memory savers, or fits a larger micro-batch.
    assert (pure.plan.optimizer, pure.plan.batch) != (masters.plan.optimizer, masters.plan.batch)
    for fit in (pure, masters):  # sized with the accumulation they train with
        assert fit.estimate.device_bytes <= 0.9 * 24 * GiB and fit.plan.batch * fit.plan.grad_accum >= 8
    # Called directly, auto-fit plans pure bf16 for full fine-tuning in bf16 by default.
    assert auto_fit(spec, 24 * GiB, preferences={"method": "full"}).plan.pure_bf16
    assert not auto_fit(spec, 24 * GiB, preferences={"method": "full", "precision": "fp16"}).plan.pure_bf16


def test_cli_estimate_takes_pure_bf16_and_refuses_it_for_other_methods(capsys):
    from engine.cli.main import main

    def estimate(*flags: str) -> tuple[int, str, str]:
        code = main(["estimate", "--model", "Llama-3.2-1B", "--device-memory", "24GiB", "--json", *flags])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = estimate("--method", "full")
    auto = json.loads(out)
    assert code == 0 and auto["plan"]["pure_bf16"] is True and auto["items"]["autocast_weight_copies"] == 0
    code, out, _ = estimate("--method", "full", "--pure-bf16", "off")
    assert code == 0 and json.loads(out)["peak_allocated_bytes"] > auto["peak_allocated_bytes"]
    code, _, err = estimate("--method", "lora", "--pure-bf16", "on")
    assert code != 0 and err.strip().startswith("error: pure bf16 applies to full fine-tuning only")
    assert len(err.strip().splitlines()) == 1
