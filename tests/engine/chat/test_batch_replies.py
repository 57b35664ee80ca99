"""Replies in batches (``ChatSession.generate_batch``), as evaluation generates them: the same
greedy replies as one chat at a time, in the order asked, for the base and each adapter."""

from __future__ import annotations

import threading

import pytest

from engine.chat.batches import CPU_BATCH_SIZE, GPU_BATCH_SIZE, default_batch_size, length_batches
from engine.chat.session import ChatSession
from engine.errors import StudioError
from lora_adapters import write_peft_adapter

QUESTIONS = ["What is the capital of France?", "Hello!", "Write a function that adds two numbers in Python",
             "Why?", "The quick brown fox jumps over the lazy dog. What does the fox do, and why?"]
CONVERSATIONS = [[{"role": "user", "content": question}] for question in QUESTIONS]


@pytest.fixture(scope="module")
def session(tiny_model_dir, tmp_path_factory):
    chat = ChatSession(str(tiny_model_dir), device="cpu")
    chat.load()
    yield chat
    chat.close()


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return write_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("batch") / "pirate", seed=3)


@pytest.mark.parametrize("choice", ["base", "adapter"])
def test_batched_replies_are_the_replies_of_one_chat_at_a_time(session, adapter, choice):
    session.set_adapter(None if choice == "base" else str(adapter))
    one_by_one = [session.generate(messages, max_new_tokens=16) for messages in CONVERSATIONS]
    done: list[int] = []
    batched = session.generate_batch(CONVERSATIONS, max_new_tokens=16, batch_size=3, on_done=done.append)
    assert [reply.reply for reply in batched] == [reply.reply for reply in one_by_one]
    assert [reply.tokens for reply in batched] == [reply.tokens for reply in one_by_one]
    assert done == [3, 5]


def test_the_adapter_changes_the_batched_replies(session, adapter):
    session.set_adapter(None)
    done: list[int] = []
    base = [reply.reply for reply in session.generate_batch(CONVERSATIONS, max_new_tokens=8, on_done=done.append)]
    assert done == [5]  # the CPU's default batch holds them all
    session.set_adapter(str(adapter))
    tuned = [reply.reply for reply in session.generate_batch(CONVERSATIONS, max_new_tokens=8)]
    assert base != tuned


def test_a_set_stop_event_leaves_the_remaining_replies_unanswered(session):
    stop = threading.Event()
    replies = session.generate_batch(CONVERSATIONS, max_new_tokens=4, batch_size=2,
                                     on_done=lambda _done: stop.set(), stop_event=stop)
    assert sum(reply is not None for reply in replies) == 2
    assert replies.count(None) == 3


def test_batches_group_prompts_of_like_length_longest_first():
    assert list(length_batches([3, 9, 1, 7, 5], 2)) == [[1, 3], [4, 0], [2]]


def test_the_default_batch_is_bigger_on_a_cpu_and_kept_within_its_key_value_cache():
    starter, larger = 46_080, 393_216  # bytes of cache a token: SmolLM2-135M and -1.7B in float32
    assert default_batch_size("cpu", starter, 320) == CPU_BATCH_SIZE
    assert default_batch_size("cuda:0", starter, 320) == GPU_BATCH_SIZE
    assert default_batch_size("cpu", larger, 320) == 8
    assert default_batch_size("cpu", larger, 100_000) == 1


def test_a_bad_batch_size_or_an_empty_conversation_is_refused(session):
    with pytest.raises(StudioError, match="batch size"):
        session.generate_batch(CONVERSATIONS, batch_size=0)
    with pytest.raises(StudioError, match="nothing to answer"):
        session.generate_batch([[]])


@pytest.fixture(scope="module")
def second_adapter(tiny_model_dir, tmp_path_factory):
    return write_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("batch") / "poet", seed=4, rank=8,
                              targets=("q_proj", "v_proj", "o_proj"))


def test_rows_for_different_adapters_in_one_batch_answer_as_each_would_alone(session, adapter, second_adapter):
    from engine.chat.rows import RowRequest
    from engine.data.rendering import render_conversation

    first, second = str(adapter), str(second_adapter)
    conversations = [[{"role": "user", "content": "hello " * n}] for n in (1, 4, 2, 6, 3)]
    choices = [first, None, second, first, second]
    settings = [dict(temperature=0.0), dict(temperature=0.9, top_p=0.9, seed=3),
                dict(temperature=1.0, top_k=20, repetition_penalty=1.2, seed=8, top_p=1.0),
                dict(temperature=0.7, seed=5, top_p=0.95), dict(temperature=0.0, repetition_penalty=1.3)]
    alone = []
    for messages, choice, options in zip(conversations, choices, settings):
        session.set_adapter(choice)
        alone.append(session.generate(messages, max_new_tokens=10, **{"top_p": 1.0, **options}))

    def prompt(choice, messages):
        template, owner = session.template_for(choice)
        text = render_conversation(messages, session.tokenizer, add_generation_prompt=True, chat_template=template,
                                   template_of=owner)
        return session.tokenizer(text, add_special_tokens=False)["input_ids"]

    rows = [RowRequest(prompt(choice, messages), max_new_tokens=10, **{"top_p": 1.0, **options})
            for messages, choice, options in zip(conversations, choices, settings)]
    tokens: dict[int, list[int]] = {index: [] for index in range(len(rows))}
    results = session.generate_rows(rows, choices, lambda index, ids: tokens[index].extend(ids))
    for index, reply in enumerate(alone):
        assert session.tokenizer.decode(tokens[index], skip_special_tokens=True) == reply.reply, index
        assert results[index].tokens == reply.tokens
    # The rows differ from each other: the adapters (and the base) each had their say.
    assert len({reply.reply for reply in alone}) == len(alone)
