"""Full fine-tuning in pure bf16 on the tiny model, through the engine's recipe on the CPU (whose
autocast computes bf16 too): it follows the fp32-master run's loss curve, saves a bf16 model, and
a run resumed from a checkpoint (Kahan buffers and all) continues the very same curve."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.errors import StudioError
from engine.run.config import RunConfig
from engine.train import recipe
from training_runs import fit, new_run, prepare

STEPS = 20
# Measured on this model: the pure-bf16 curve stays within 0.003 of the fp32-master one over 40
# steps (mean 0.0008), where torch's AdamW over the same bf16 weights drifts 0.046 above it.
CURVE_TOLERANCE = 0.01
SETTINGS = dict(method="full", precision="bf16", lr=1e-4, max_steps=STEPS, batch_size=2, max_length=48, dropout=0.0)


def losses(callback) -> list[float]:
    return [loss for _, loss in callback.loss_history]


@pytest.fixture(scope="module")
def pure_run(tiny_model_dir, tmp_path_factory):
    """A whole pure-bf16 run (model saved into the store), with a checkpoint half-way. In a home of the
    module's own: a module fixture runs before each test's own home is set, and the model store it
    saves into must not be the user's (nor shared between the workers that each run this module)."""
    folder = tmp_path_factory.mktemp("pure")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(folder / "home"))
        run = new_run(folder, tiny_model_dir, save_every=STEPS // 2, keep_checkpoints=0, name="pure", **SETTINGS)
        finished = recipe.train(run)
    assert finished.status == "completed", finished.error
    return run, finished


@pytest.fixture(scope="module")
def master_curve(tiny_model_dir, tmp_path_factory):
    import torch

    run, ready = prepare(tmp_path_factory.mktemp("master"), tiny_model_dir, pure_bf16="off", **SETTINGS)
    assert ready.model.dtype == torch.float32
    trainer, callback = fit(run, ready)
    assert trainer.args.bf16  # the fp32 masters train under bf16 autocast
    return losses(callback)


def curve_of(run) -> list[float]:
    from engine.run.events import StepMetrics, read_events

    return [event.loss for event in read_events(run.run_dir / "events.jsonl") if isinstance(event, StepMetrics)]


def test_pure_bf16_follows_the_loss_curve_of_fp32_masters(pure_run, master_curve):
    run, _ = pure_run
    pure = curve_of(run)
    assert len(pure) == len(master_curve) == STEPS
    assert max(abs(a - b) for a, b in zip(pure, master_curve)) < CURVE_TOLERANCE
    assert pure[-1] < pure[0] - 0.1  # and it learns


def test_a_pure_bf16_run_saves_a_bf16_model_that_loads(pure_run):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from engine.run.checkpoints import checkpoint_folders

    _, finished = pure_run
    [weights] = Path(finished.model).glob("*.safetensors")
    with safe_open(str(weights), "pt") as saved:
        assert {saved.get_tensor(name).dtype for name in saved.keys()} == {torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(finished.model, dtype="auto")
    assert model.dtype == torch.bfloat16
    # The checkpoint keeps the optimizer's Kahan compensation beside its bf16 moments.
    checkpoint = checkpoint_folders(pure_run[0].run_dir)[-1]
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)["state"]
    first = next(iter(state.values()))
    assert {first[key].dtype for key in ("exp_avg", "exp_avg_sq", "kahan_comp")} == {torch.bfloat16}


def test_a_resumed_pure_bf16_run_continues_the_same_loss_curve(pure_run, tmp_path):
    from engine.run.rundir import RunDir

    run, finished = pure_run
    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / f"checkpoint-{STEPS}")  # as if it had stopped after the first checkpoint
    RunDir(copy).events.unlink()
    config = json.loads(RunDir(copy).config.read_text())
    RunDir(copy).config.write_text(json.dumps({**config, "name": "pure-resumed"}))
    resumed = recipe.train(recipe.Run(copy))
    assert resumed.status == "completed" and resumed.step == STEPS
    continued = curve_of(recipe.Run(copy))
    assert len(continued) == STEPS // 2
    assert continued == pytest.approx(curve_of(run)[STEPS // 2:], abs=1e-6)


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "sgd"])
def test_other_optimizers_train_bf16_weights_as_they_are(optimizer, tiny_model_dir, tmp_path):
    import torch

    run, ready = prepare(tmp_path, tiny_model_dir, method="full", precision="bf16", optimizer=optimizer, lr=1e-2,
                         max_steps=2, max_length=48)
    before = {name: value.detach().clone() for name, value in ready.model.named_parameters()}
    trainer, _ = fit(run, ready)
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(inner).__module__.split(".")[0] == ("bitsandbytes" if optimizer == "adamw_8bit" else "torch")
    after = dict(ready.model.named_parameters())
    assert {value.dtype for value in after.values()} == {torch.bfloat16}
    assert any(not torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("settings, message", [
    (dict(method="lora", pure_bf16="on"), "pure bf16 applies to full fine-tuning only (LoRA trains fp32 weights"),
    (dict(method="full", precision="fp16", pure_bf16="on"), "pure bf16 trains in bf16 and this run computes in fp16"),
    (dict(method="full", pure_bf16="sometimes"), "unknown pure bf16 setting 'sometimes'"),
])
def test_pure_bf16_where_it_cannot_apply_is_refused_in_one_line(settings, message):
    with pytest.raises(StudioError, match=message.replace("(", r"\(")) as refused:
        RunConfig.from_dict(dict(model="m", dataset="d", **settings))
    assert "\n" not in str(refused.value)
