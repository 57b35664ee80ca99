"""The local server as its users' tools call it: the official ``openai`` client against a real
server on a free localhost port, over the tiny model and two library adapters."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from engine.chat.session import ChatSession
from engine.serve.server import LocalServer, ServeSettings
from lora_adapters import library_adapter

QUESTION = [{"role": "user", "content": "Tell me about the sea."}]
SAMPLED = dict(temperature=0.8, top_p=0.95, seed=11)


def wait_for(condition, timeout_s: float = 60) -> None:
    """Until ``condition()`` holds (the server's threads move on their own); fails past the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir) -> Path:
    """A studio home of the module's own (the server outlives each test's home), with two adapters."""
    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        library_adapter(tiny_model_dir, "pirate", seed=1)
        library_adapter(tiny_model_dir, "poet", seed=2, meta={"chat_template": None})
    return home


@pytest.fixture(scope="module")
def server(home, tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        events: list = []
        served = LocalServer(ServeSettings(model=str(tiny_model_dir), adapters=["pirate", "poet"], port=0,
                                           device="cpu", max_batch=8), on_event=events.append)
        served.start()
        served.events = events
        yield served
        served.stop()


@pytest.fixture(scope="module")
def engine_replies(home, tiny_model_dir):
    """What the engine's own chat answers, per adapter (None: the base), greedy and sampled."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        session = ChatSession(str(tiny_model_dir), device="cpu")
        replies = {}
        for adapter in (None, "pirate", "poet"):
            session.set_adapter(adapter)
            replies[adapter, "greedy"] = session.generate(QUESTION, max_new_tokens=12, temperature=0.0)
            replies[adapter, "sampled"] = session.generate(QUESTION, max_new_tokens=12, **SAMPLED)
        session.close()
        return replies


@pytest.fixture(scope="module")
def endless(tiny_model_dir) -> dict:
    """Request fields for a reply that runs to its token limit: the end-of-sequence token banned."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_model_dir).eos_token_id
    return {"temperature": 0.7, "logit_bias": {str(eos): -100}}


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def test_lists_the_base_and_each_adapter_by_its_library_name(client):
    assert [model.id for model in client.models.list()] == ["tiny-llama", "pirate", "poet"]


@pytest.mark.parametrize("model, adapter", [("tiny-llama", None), ("pirate", "pirate"), ("poet", "poet")])
def test_a_reply_is_the_engines_own_for_the_same_settings_and_seed(client, engine_replies, model, adapter):
    for kind, settings in (("greedy", {"temperature": 0.0}), ("sampled", SAMPLED)):
        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12, **settings)
        expected = engine_replies[adapter, kind]
        assert reply.choices[0].message.content == expected.reply, (model, kind)
        assert reply.usage.completion_tokens == expected.tokens
        assert reply.choices[0].finish_reason in ("stop", "length")
        assert reply.model == model


def test_each_adapter_answers_with_its_own_saved_chat_template(client, engine_replies):
    # pirate's template adds " arr" to every message; poet saved none and answers with the base's.
    pirate = client.chat.completions.create(model="pirate", messages=QUESTION, max_tokens=1, temperature=0)
    poet = client.chat.completions.create(model="poet", messages=QUESTION, max_tokens=1, temperature=0)
    base = client.chat.completions.create(model="tiny-llama", messages=QUESTION, max_tokens=1, temperature=0)
    assert poet.usage.prompt_tokens == base.usage.prompt_tokens
    assert pirate.usage.prompt_tokens > base.usage.prompt_tokens
    assert engine_replies["pirate", "greedy"].reply != engine_replies[None, "greedy"].reply


def test_a_streamed_reply_is_the_whole_reply_in_pieces_then_its_usage(client, engine_replies):
    chunks = list(client.chat.completions.create(model="pirate", messages=QUESTION, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}, **SAMPLED))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == engine_replies["pirate", "sampled"].reply
    assert len([chunk for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]) > 1
    assert chunks[-2].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == engine_replies["pirate", "sampled"].tokens


def test_a_completion_continues_plain_text_without_a_chat_template(client):
    whole = client.completions.create(model="poet", prompt="Once upon a time", max_tokens=6, temperature=0)
    streamed = client.completions.create(model="poet", prompt="Once upon a time", max_tokens=6, temperature=0,
                                         stream=True)
    assert whole.usage.completion_tokens == 6 and whole.choices[0].finish_reason == "length"
    assert "".join(chunk.choices[0].text for chunk in streamed) == whole.choices[0].text


def test_a_stop_string_ends_the_reply_before_it(client, engine_replies):
    full = engine_replies[None, "greedy"].reply
    stop = full[len(full) // 2:len(full) // 2 + 2]
    reply = client.chat.completions.create(model="tiny-llama", messages=QUESTION, max_tokens=12, temperature=0,
                                           stop=[stop])
    assert reply.choices[0].message.content == full[:full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_concurrent_clients_of_different_adapters_each_get_their_adapters_reply(server, client, engine_replies):
    batches_before = server.stats().batches
    wanted = [("pirate", "pirate"), ("poet", "poet"), ("tiny-llama", None)] * 3
    answers: dict[int, str] = {}

    def ask(index: int, model: str) -> None:
        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=12, **SAMPLED)
        answers[index] = reply.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(index, model)) for index, (model, _) in enumerate(wanted)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {index: engine_replies[adapter, "sampled"].reply for index, (_, adapter) in enumerate(wanted)}
    # Nine requests arriving together shared batches: fewer batches than requests.
    assert server.stats().batches - batches_before < len(wanted)


def test_a_client_that_leaves_a_stream_stops_its_generation(server, endless):
    before = server.stats()
    body = {"model": "pirate", "messages": QUESTION, "max_tokens": 900, "stream": True, **endless}
    with httpx.stream("POST", f"{server.url}/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any('"content"' in line for line in received)
    wait_for(lambda: server.stats().batches > before.batches)
    generated = server.stats().generated_tokens - before.generated_tokens
    assert 0 < generated < 100  # of the 900 asked for
    assert server.events[-1].status == 499 and server.events[-1].model == "pirate"


def test_a_full_queue_answers_429_with_retry_after(home, tiny_model_dir, endless):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        busy = LocalServer(ServeSettings(model=str(tiny_model_dir), port=0, device="cpu", max_queue=1, max_batch=1))
        busy.start()
    try:
        body = {"model": "tiny-llama", "messages": QUESTION, "max_tokens": 900, "stream": True, **endless}
        with httpx.stream("POST", f"{busy.url}/chat/completions", json=body, timeout=30):
            wait_for(lambda: busy.stats().running == 1)
            queued = threading.Thread(target=httpx.post, args=(f"{busy.url}/chat/completions",),
                                      kwargs={"json": {**body, "stream": False, "max_tokens": 2}, "timeout": 60})
            queued.start()
            wait_for(lambda: busy.stats().queued == 1)
            refused = httpx.post(f"{busy.url}/chat/completions", json=body, timeout=30)
        queued.join()
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    finally:
        busy.stop()


def test_refusals_before_serving(server, tiny_model_dir):
    from engine.errors import StudioError

    with pytest.raises(StudioError, match=r"other machines in: give an API key \(--api-key\)"):
        LocalServer(ServeSettings(model=str(tiny_model_dir), host="0.0.0.0"))
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(StudioError, match=f"port {port} on 127.0.0.1 is in use"):
        LocalServer(ServeSettings(model=str(tiny_model_dir), port=port, device="cpu")).start()


def test_stopping_ends_the_replies_in_progress_with_an_error_the_client_reads(home, tiny_model_dir, endless):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        stopping = LocalServer(ServeSettings(model=str(tiny_model_dir), port=0, device="cpu"))
        stopping.start()
    lines: list[str] = []

    def listen() -> None:
        body = {"model": "tiny-llama", "messages": QUESTION, "max_tokens": 900, "stream": True, **endless}
        with httpx.stream("POST", f"{stopping.url}/chat/completions", json=body, timeout=60) as response:
            lines.extend(line for line in response.iter_lines() if line)

    client = threading.Thread(target=listen)
    client.start()
    wait_for(lambda: stopping.stats().running == 1)
    stopping.stop()
    client.join()
    assert not stopping.running
    assert '"server_error"' in lines[-2] and "stopped" in lines[-2] and lines[-1] == "data: [DONE]"
