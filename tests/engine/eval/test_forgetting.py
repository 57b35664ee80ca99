"""The forgetting check (``engine.eval.forgetting``): the drift of a candidate's next-token
distributions from the base's on general prompts (KL per token), and the share of greedy answers
that changed, on the tiny model with a real PEFT adapter, checked against torch directly."""

from __future__ import annotations

import pytest
import torch

from engine.chat.session import ChatSession
from engine.eval.forgetting import ForgettingBaseline, load_general_prompts
from lora_adapters import write_peft_adapter


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return write_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("forgetting") / "pirate", seed=3)


@pytest.fixture(scope="module")
def baseline(session):
    return ForgettingBaseline.compute(session, load_general_prompts()[:4], max_new_tokens=8, batch_size=3)


def test_the_base_against_itself_has_not_drifted(session, adapter, baseline):
    session.set_adapter(str(adapter))
    score = baseline.check(None)
    assert (score.kl, score.changed, score.prompts) == (0.0, 0.0, 4)
    assert session.adapter == str(adapter)  # what was active before is active again


@pytest.fixture(scope="module")
def adapter_score(baseline, adapter):
    return baseline.check(str(adapter))


def test_an_adapter_drifts_by_the_kl_that_torch_computes(baseline, adapter, adapter_score, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert adapter_score.kl > 0
    assert adapter_score.describe() == {"kl": adapter_score.kl, "changed": adapter_score.changed, "prompts": 4}
    # KL(base ‖ adapter) at each position from the end of the prompt on, by torch's own kl_div,
    # one prompt at a time, and its mean over all those positions.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                      adapter).eval()
    total, positions = 0.0, 0
    for prompt, answer in zip(baseline.prompts, baseline.answers):
        prompt_ids = tokenizer(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
                               add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + tokenizer(answer, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            log_p = base(ids).logits[0, len(prompt_ids) - 1:].double().log_softmax(-1)
            log_q = tuned(ids).logits[0, len(prompt_ids) - 1:].double().log_softmax(-1)
        total += float(torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="sum"))
        positions += len(log_p)
    assert adapter_score.tokens == positions
    assert adapter_score.kl == pytest.approx(total / positions, rel=1e-6)


def test_a_candidate_on_a_session_of_its_own_is_checked_as_on_the_base_s(baseline, adapter, adapter_score,
                                                                         tiny_model_dir):
    other = ChatSession(str(tiny_model_dir), device="cpu", threads=1)  # the worker's one (conftest)
    try:
        on_its_own = baseline.check(str(adapter), session=other)
    finally:
        other.close()
    assert on_its_own.kl == pytest.approx(adapter_score.kl, rel=1e-9)
    assert on_its_own.changed == adapter_score.changed


def test_the_general_prompts_are_a_hundred_distinct_questions():
    prompts = load_general_prompts()
    questions = [messages[0]["content"] for messages in prompts]
    assert 90 <= len(prompts) <= 120
    assert len(set(questions)) == len(questions)
    assert all(len(messages) == 1 and messages[0]["role"] == "user" for messages in prompts)
