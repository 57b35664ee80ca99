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
