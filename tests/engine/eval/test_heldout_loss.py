"""Held-out loss (``engine.eval.heldout_loss``): the loss training would report on each reference
answer, for the base and for an adapter, whatever the batch it is computed in."""

from __future__ import annotations

import math
import threading

import pytest

from engine.data.examples import tokenize_conversation
from engine.errors import StudioError
from engine.eval.evalset import EvalExample
from engine.eval.heldout_loss import TOKENS_PER_BATCH, heldout_loss, loss_batches
from lora_adapters import write_peft_adapter

PAIRS = [("What is the capital of France?", "Paris is the capital of France."),
         ("Hello!", "Hello! How are you today?"),
         ("Write a function that adds two numbers in Python", "def add(a, b): return a + b"),
         ("Why?", "Arr matey, the treasure be buried on the island!"),
         ("The quick brown fox jumps over the lazy dog. What does the fox do?", "It jumps.")]
EXAMPLES = [EvalExample(index, [{"role": "user", "content": question}], answer, None, f"line {index + 1}")
            for index, (question, answer) in enumerate(PAIRS)]
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return write_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("heldout") / "pirate", seed=5)


def plain_loss(tiny_model_dir, example, adapter=None):
    """The loss of one example from a freshly loaded transformers model (and PEFT adapter), with
    training's labels: what the Trainer computes for a batch of that one row."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    row = tokenize_conversation(example.conversation, tokenizer, MAX_LENGTH, chat_template=tokenizer.chat_template)
    with torch.no_grad():
        return model(input_ids=torch.tensor([row.input_ids]), labels=torch.tensor([row.labels])).loss.item()


def test_an_examples_loss_is_the_plain_models_loss_for_the_base_and_for_an_adapter(session, adapter,
                                                                                   tiny_model_dir):
    session.set_adapter(None)
    base = heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH)
    session.set_adapter(str(adapter))
    tuned = heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH)
    session.set_adapter(None)
    assert base.losses[2] == pytest.approx(plain_loss(tiny_model_dir, EXAMPLES[2]), abs=1e-5)
    assert tuned.losses[2] == pytest.approx(plain_loss(tiny_model_dir, EXAMPLES[2], adapter), abs=1e-5)
    assert abs(tuned.loss - base.loss) > 0.01  # the adapter changes how the answers are predicted
    assert base.perplexity == pytest.approx(math.exp(base.loss))


def test_batching_changes_no_examples_loss_and_the_set_is_weighted_by_tokens(session):
    session.set_adapter(None)
    alone = heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH, batch_size=1)
    together = heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH, batch_size=4)
    assert together.losses == pytest.approx(alone.losses, abs=1e-5)
    assert together.token_counts == alone.token_counts
    assert together.tokens == sum(alone.token_counts)
    weighted = sum(loss * tokens for loss, tokens in zip(alone.losses, alone.token_counts)) / alone.tokens
    assert together.loss == pytest.approx(weighted, abs=1e-6)
    assert together.loss != pytest.approx(sum(alone.losses) / len(alone.losses), abs=1e-4)


def test_rows_too_long_to_learn_or_without_a_reference_are_counted_not_scored(session):
    session.set_adapter(None)
    long_prompt = EvalExample(5, [{"role": "user", "content": "The quick brown fox. " * 30}], "Yes.", None, "line 6")
    no_reference = EvalExample(6, [{"role": "user", "content": "Hello!"}], None, None, "line 7")
    done: list[int] = []
    result = heldout_loss(session, [EXAMPLES[0], long_prompt, no_reference, EXAMPLES[1]], max_length=MAX_LENGTH,
                          batch_size=1, on_done=done.append)
    assert result.losses[1] is None and result.losses[2] is None
    assert result.losses[0] is not None and result.losses[3] is not None
    assert (result.excluded, result.no_reference) == (1, 1)
    assert done == [3, 4]
    nothing = heldout_loss(session, [long_prompt], max_length=MAX_LENGTH)
    assert (nothing.loss, nothing.perplexity, nothing.tokens) == (None, None, 0)


def test_a_set_stop_event_leaves_the_rest_unscored(session):
    stop = threading.Event()
    result = heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH, batch_size=2, stop_event=stop,
                          on_done=lambda _done: stop.set())
    assert result.stopped
    assert sum(loss is not None for loss in result.losses) == 2


def test_long_rows_go_in_smaller_batches_longest_first():
    half = TOKENS_PER_BATCH // 2
    assert loss_batches([30, 10, 20, 40], 3) == [[3, 0, 2], [1]]
    assert loss_batches([half + 1, 5, half, 7], 8) == [[0], [2, 3], [1]]


def test_bad_settings_are_refused_in_one_line(session):
    with pytest.raises(StudioError, match="batch size"):
        heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH, batch_size=0)
    with pytest.raises(StudioError, match="train on"):
        heldout_loss(session, EXAMPLES, max_length=MAX_LENGTH, train_on="replies")
