"""The training options on the tiny model, in this process: each changes what it should
(and equivalent choices give the same result), through the engine's real Trainer set-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.run.config import RunConfig
from engine.run.events import StepMetrics, read_events
from engine.train import recipe
from engine.train.trainer import training_arguments
from training_runs import fit, new_run, prepare


def adapter_weights(model):
    return {name: value.detach().clone() for name, value in model.named_parameters() if value.requires_grad}


def test_run_settings_reach_the_trainer(tmp_path):
    config = RunConfig(model="m", dataset="d", optimizer="paged_adamw_8bit", lr_scheduler="cosine", warmup_steps=3,
                       weight_decay=0.01, max_grad_norm=0.5, grad_checkpointing=True, group_by_length=True,
                       keep_checkpoints=2, seed=11, max_steps=50, grad_accum=2, save_every=10)
    args = training_arguments(config, tmp_path, examples=100, has_eval=False, device="cpu", precision="fp32")
    assert (args.optim, args.lr_scheduler_type, args.warmup_steps) == ("paged_adamw_8bit", "cosine", 3)
    assert (args.weight_decay, args.max_grad_norm, args.seed) == (0.01, 0.5, 11)
    checkpointing = getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or args.gradient_checkpointing_kwargs
    assert checkpointing and kwargs == {"use_reentrant": False}
    assert args.train_sampling_strategy == "group_by_length" and args.save_total_limit == 2
    assert (args.save_steps, args.gradient_accumulation_steps, args.max_steps) == (10, 2, 50)
    constant = RunConfig(model="m", dataset="d", lr_scheduler="constant", warmup_steps=5)
    assert training_arguments(constant, tmp_path, examples=10, has_eval=False, device="cpu",
                              precision="fp32").lr_scheduler_type == "constant_with_warmup"


def test_the_same_seed_trains_the_same_run_and_another_seed_does_not(tiny_model_dir, tmp_path):
    runs = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        run, ready = prepare(tmp_path / label, tiny_model_dir, seed=seed)
        fit(run, ready)
        runs[label] = adapter_weights(ready.model)
    assert all((runs["a"][name] == runs["b"][name]).all() for name in runs["a"])
    assert any(not (runs["a"][name] == runs["c"][name]).all() for name in runs["a"])


def test_gradient_checkpointing_recomputes_the_same_gradients(tiny_model_dir, tmp_path):
    results = {}
    for checkpointing in (False, True):
        run, ready = prepare(tmp_path / str(checkpointing), tiny_model_dir, grad_checkpointing=checkpointing)
        trainer, callback = fit(run, ready)
        assert trainer.model.is_gradient_checkpointing == checkpointing
        results[checkpointing] = callback.loss_history
    assert [loss for _, loss in results[True]] == pytest.approx([loss for _, loss in results[False]], abs=1e-5)


def test_gradient_accumulation_equals_the_larger_batch(tiny_model_dir, tmp_path):
    weights = {}
    for label, batch, accumulate in (("one", 4, 1), ("two", 2, 2)):
        run, ready = prepare(tmp_path / label, tiny_model_dir, batch_size=batch, grad_accum=accumulate, max_steps=2,
                             dropout=0.0)
        fit(run, ready)
        weights[label] = adapter_weights(ready.model)
    for name, value in weights["one"].items():
        assert (value - weights["two"][name]).abs().max().item() < 1e-5, name


def test_padding_free_batches_train_exactly_like_padded_ones(tiny_model_dir, tmp_path):
    losses = {}
    for batching in ("padded", "padding_free"):
        run, ready = prepare(tmp_path / batching, tiny_model_dir, batching=batching, dropout=0.0, max_steps=3)
        trainer, callback = fit(run, ready)
        losses[batching] = [loss for _, loss in callback.loss_history]
        batch = next(iter(trainer.get_train_dataloader()))
        if batching == "padding_free":
            # One row, no padding, positions restarting at every example.
            assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
            assert int((batch["position_ids"] == 0).sum()) == 4
    assert losses["padding_free"] == pytest.approx(losses["padded"], abs=1e-4)


def test_padding_free_attention_keeps_each_row_to_itself(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from engine.train.batching import make_collator, register_varlen_attention

    rows = [[5, 17, 42, 9, 101], [7, 3, 64], [11, 12, 13, 14, 15, 16, 17]]
    packed_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=register_varlen_attention())
    alone_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    batch = make_collator(None, "padding_free")([{"input_ids": row, "labels": row} for row in rows])
    with torch.no_grad():
        packed = packed_model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                              cu_seq_lens_q=batch["cu_seq_lens_q"], cu_seq_lens_k=batch["cu_seq_lens_k"],
                              max_length_q=batch["max_length_q"], max_length_k=batch["max_length_k"]).logits[0]
        alone = torch.cat([alone_model(input_ids=torch.tensor([row])).logits[0] for row in rows])
    assert (packed - alone).abs().max().item() < 1e-5


def test_the_learning_rate_follows_the_chosen_schedule(tiny_model_dir, tmp_path):
    import torch
    from transformers import get_cosine_schedule_with_warmup

    run, ready = prepare(tmp_path, tiny_model_dir, lr_scheduler="cosine", warmup_steps=2, max_steps=8, lr=1e-2)
    fit(run, ready)
    logged = [event.learning_rate for event in read_events(run.run_dir / "events.jsonl")
              if isinstance(event, StepMetrics)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    reference = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=8)
    expected = []
    for _ in range(8):  # each step's log shows the rate that step trained with
        expected.append(reference.get_last_lr()[0])
        optimizer.step()
        reference.step()
    assert logged == pytest.approx(expected, rel=1e-6)
    assert logged[0] == 0 and logged[2] == pytest.approx(1e-2)  # a linear warm-up to the peak, then the cosine


@pytest.mark.parametrize("optimizer, library, bits, paged", [
    ("adamw", "torch", 32, False), ("adamw_8bit", "bitsandbytes", 8, False),
    ("paged_adamw_8bit", "bitsandbytes", 8, True), ("paged_adamw_32bit", "bitsandbytes", 32, True),
    ("sgd", "torch", 32, False),
])
def test_each_optimizer_is_the_one_asked_for_and_trains(optimizer, library, bits, paged, tiny_model_dir, tmp_path):
    import torch

    # Rank 64 makes some adapter tensors big enough (4096+ values) for 8-bit optimizer state.
    run, ready = prepare(tmp_path, tiny_model_dir, optimizer=optimizer, max_steps=2, rank=64, alpha=64)
    before = adapter_weights(ready.model)
    trainer, _ = fit(run, ready)
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert type(inner).__module__.split(".")[0] == library
    if library == "bitsandbytes":
        assert (inner.args.optim_bits, inner.is_paged) == (bits, paged)
        big = max((p for p in inner.state), key=lambda p: p.numel())  # small tensors keep 32-bit state anyway
        assert inner.state[big]["state1"].dtype == (torch.uint8 if bits == 8 else torch.float32)
    else:
        assert type(inner).__name__ == ("SGD" if optimizer == "sgd" else "AdamW")
    after = adapter_weights(ready.model)
    assert any(not torch_equal(before[name], after[name]) for name in before)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_length_grouped_batches_hold_rows_of_similar_length(tiny_model_dir, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    run, ready = prepare(tmp_path, tiny_model_dir, group_by_length=True)
    trainer, _ = recipe.build_trainer(run, ready, lambda total: None)
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)


def test_early_stopping_ends_the_run_when_the_eval_loss_stops_improving(tiny_model_dir, tmp_path):
    # A learning rate too small to move the loss: no evaluation after the first is better.
    run = new_run(tmp_path, tiny_model_dir, lr=1e-12, max_steps=40, val_fraction=0.25, eval_every=1,
                  early_stopping_patience=2, name="patient")
    finished = recipe.train(run)
    assert finished.status == "completed" and finished.step == 3  # evaluations at 1, 2, 3; none beat the first
    meta = json.loads((Path(finished.adapter) / "studio.json").read_text())
    assert meta["best_step"] == 1 and len(meta["eval_history"]) == 3


def test_a_loss_that_blows_up_stops_the_run_with_advice_and_saves_nothing(tiny_model_dir, tmp_path):
    from engine.adapters.library import list_adapters

    # Plain SGD, no clipping, an absurd learning rate: the loss overflows within a few steps.
    run = new_run(tmp_path, tiny_model_dir, method="full", lr=1e30, optimizer="sgd", max_grad_norm=0.0, max_steps=30)
    finished = recipe.train(run)
    assert finished.status == "failed" and finished.step < 30
    assert finished.error.startswith("the loss became ") and "lower the learning rate (now 1e+30)" in finished.error
    assert list_adapters() == []
    assert not list((run.run_dir / "checkpoints").glob("checkpoint-*"))  # the broken state is not kept
