"""The engine's loss (engine.train.lean_loss, through StudioTrainer.compute_loss) against the
stock one: the same loss and gradients for every method and batching, the same eval loss, and
a peak memory without the batch's logits on a model with a large vocabulary."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainingArguments

from engine.memory import loss_chunk
from engine.run.config import RunConfig
from engine.train import lean_loss, loading, methods
from engine.train.batching import make_collator
from engine.train.trainer import StudioTrainer
from tiny_model import build_tiny_model

# The memory calibration's measure of the peak of live tensor bytes on a CPU (the profiler's allocator events).
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from memory_calibration import profiled_peak  # noqa: E402

TOLERANCE = 1e-5


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 8 rows, so that a tiny batch spans several and their seams are tested."""
    monkeypatch.setattr(loss_chunk, "MIN_CHUNK_ROWS", 8)
    monkeypatch.setattr(loss_chunk, "CHUNK_BYTES", 1)


@pytest.fixture(scope="module")
def untied_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny model with an output head of its own (not the embedding matrix)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("untied")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, tie_word_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.copy_(torch.randn_like(model.lm_head.weight) * 0.05)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_model_dir / name).exists():
            (folder / name).write_bytes((tiny_model_dir / name).read_bytes())
    return folder


def engine_model(model_dir: Path, method: str, batching: str = "padded"):
    """The base model loaded and the method attached as a run does (no dropout: deterministic)."""
    from transformers import AutoTokenizer

    config = RunConfig(model=str(model_dir), dataset="-", method=method, rank=4, alpha=8, dropout=0.0,
                       num_virtual_tokens=4, batching=batching)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    model = methods.attach(loading.load_model(model_dir, config, "fp32", "cpu"), config, tokenizer)
    return model, tokenizer


def trainer_for(model, tokenizer, out: str, cls=StudioTrainer, **extra) -> Trainer:
    args = TrainingArguments(output_dir=out, use_cpu=True, report_to="none", remove_unused_columns=False,
                             per_device_eval_batch_size=3, disable_tqdm=True)
    return cls(model=model, args=args, processing_class=tokenizer, **extra)


def rows(seed: int = 0, count: int = 3) -> list[dict[str, list[int]]]:
    """Rows of different lengths whose first tokens (the prompt) are not trained on."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        length = 30 - 5 * index
        ids = torch.randint(4, 390, (length,), generator=generator).tolist()
        prompt = 3 + 2 * index
        out.append({"input_ids": ids, "attention_mask": [1] * length, "labels": [-100] * prompt + ids[prompt:]})
    return out


def loss_and_gradients(compute, model) -> tuple[float, dict[str, torch.Tensor], list[torch.Size]]:
    """The loss, every gradient, and the shapes of the tensors autograd kept for the backward pass."""
    model.zero_grad(set_to_none=True)
    kept = []

    def keep(tensor):
        kept.append(tensor.shape)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = compute()
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}, kept


@pytest.mark.parametrize("method, batching, untied", [
    ("lora", "padded", False), ("lora", "padding_free", False), ("dora", "padded", False),
    ("qlora", "padded", False), ("full", "padded", False), ("full", "padding_free", False),
    ("full", "padded", True), ("prompt", "padded", False), ("prefix", "padded", False),
    ("ptuning", "padded", False),
])
def test_loss_and_every_gradient_equal_the_stock_trainers(method, batching, untied, tiny_model_dir, untied_model_dir,
                                                            small_chunks):
    model, tokenizer = engine_model(untied_model_dir if untied else tiny_model_dir, method, batching)
    trainer = trainer_for(model, tokenizer, tempfile.mkdtemp())
    batch = make_collator(tokenizer, batching)(rows())
    # With gradient accumulation the Trainer divides by the tokens of all the accumulated batches.
    counted = trainer._get_num_items_in_batch([batch], torch.device("cpu"))
    for num_items in (None, 2 * counted):
        stock = loss_and_gradients(
            lambda: Trainer.compute_loss(trainer, model, dict(batch), num_items_in_batch=num_items), model)
        lean = loss_and_gradients(lambda: trainer.compute_loss(model, dict(batch), num_items_in_batch=num_items),
                                  model)
        assert lean[0] == pytest.approx(stock[0], abs=TOLERANCE)
        assert lean[1].keys() == stock[1].keys() and stock[1]
        for name, grad in stock[1].items():
            assert torch.allclose(lean[1][name], grad, atol=TOLERANCE, rtol=0), name
        # The stock loss keeps vocabulary-sized tensors (log-softmax's output) for backward; this one none.
        vocabulary = model.get_output_embeddings().weight.shape[0]
        assert any(shape and shape[-1] == vocabulary for shape in stock[2])
        assert not any(shape and shape[-1] == vocabulary for shape in lean[2])
    if method == "full":  # the head trains; for the tied one its gradient adds to the embedding lookup's
        head = model.get_output_embeddings().weight
        assert head.grad is not None and head.grad.abs().sum() > 0


def test_gemma2_soft_capped_logits_give_the_stock_loss_and_gradients(small_chunks):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    # A cap low enough that tanh bends the logits, so the cap's own gradient is tested.
    config = Gemma2Config(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=1.5,
                          attn_implementation="eager")
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config)
    batch = {key: torch.tensor([row[key][:16] for row in rows()]) for key in ("input_ids", "attention_mask", "labels")}
    labels = batch.pop("labels")
    stock = loss_and_gradients(lambda: model(**batch, labels=labels).loss, model)
    lean = loss_and_gradients(lambda: lean_loss.model_loss(model, model, batch, labels), model)
    assert lean[0] == pytest.approx(stock[0], abs=TOLERANCE)
    for name, grad in stock[1].items():
        assert torch.allclose(lean[1][name], grad, atol=TOLERANCE, rtol=0), name
    assert model.config.final_logit_softcapping == 1.5  # set aside for the forward pass only


def test_under_bf16_autocast_the_head_computes_in_bf16_as_the_stock_one(tiny_model_dir):
    model, _ = engine_model(tiny_model_dir, "full")
    ids = torch.tensor([row["input_ids"][:16] for row in rows()])

    def under_autocast(compute):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return compute()

    stock = loss_and_gradients(lambda: under_autocast(lambda: model(input_ids=ids, labels=ids).loss), model)
    lean = loss_and_gradients(lambda: under_autocast(lambda: lean_loss.model_loss(model, model, {"input_ids": ids}, ids)),
                              model)
    in_fp32 = loss_and_gradients(lambda: model(input_ids=ids, labels=ids).loss, model)
    # The same bf16 logits, upcast for the loss: equal to the last bit, where fp32 logits differ.
    assert lean[0] == pytest.approx(stock[0], abs=1e-6) and abs(in_fp32[0] - stock[0]) > 1e-6
    for name, grad in stock[1].items():  # bf16 matmuls summed in another order: within bf16's rounding
        assert (lean[1][name] - grad).abs().max() <= 0.02 * grad.abs().max(), name


def test_eval_loss_is_the_stock_trainers(tiny_model_dir, tmp_path):
    from datasets import Dataset

    model, tokenizer = engine_model(tiny_model_dir, "lora")
    data = Dataset.from_list(rows(seed=1, count=5))
    collate = make_collator(tokenizer, "padded")
    trainer = trainer_for(model, tokenizer, str(tmp_path), eval_dataset=data, data_collator=collate)
    stock = trainer_for(model, tokenizer, str(tmp_path), cls=Trainer, eval_dataset=data,
                        data_collator=collate).evaluate()
    assert trainer.evaluate()["eval_loss"] == pytest.approx(stock["eval_loss"], abs=TOLERANCE)
    # A prediction that returns the logits still gets them, with the same loss.
    predicted = trainer.predict(data)
    assert predicted.predictions.shape[-1] == len(tokenizer)
    assert predicted.metrics["test_loss"] == pytest.approx(stock["eval_loss"], abs=TOLERANCE)


def test_a_large_vocabulary_trains_without_the_batchs_logits(tmp_path):
    # 64k vocabulary entries, 1024 predicted tokens: the stock loss's fp32 logits alone are 256 MiB.
    model_dir = build_tiny_model(tmp_path / "wide", vocab_size=65536)
    model, tokenizer = engine_model(model_dir, "lora")
    trainer = trainer_for(model, tokenizer, str(tmp_path))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 390, (4, 257), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    logits_bytes = 4 * 256 * 65536 * 4

    def step(compute):
        return lambda: compute(model, dict(batch)).backward()

    stock = profiled_peak(step(lambda m, b: Trainer.compute_loss(trainer, m, b)))
    lean = profiled_peak(step(trainer.compute_loss))
    # The stock loss holds the fp32 logits two or three times over; the lean one two fp32 tensors
    # of a chunk's rows at a time (its logits and their log-softmax), whatever the batch.
    assert stock - lean > 1.5 * logits_bytes
    assert lean < 2.5 * loss_chunk.chunk_rows(65536) * 65536 * 4
