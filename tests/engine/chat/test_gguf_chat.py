"""Chat with a GGUF file in real llama.cpp (llama-cpp-python): the tiny model with an adapter,
merged and written as a GGUF, renders, tokenises and answers as the model with the adapter does,
streams, stops and reseeds."""

from __future__ import annotations

import threading

import pytest
from gguf_models import merged_gguf
from lora_adapters import write_peft_adapter

from engine.chat.blends import GgufFile
from engine.chat.gguf_session import GgufFiles, GgufSession
from engine.chat.session import ChatSession
from engine.errors import StudioError

pytest.importorskip("llama_cpp", reason="llama.cpp (llama-cpp-python) is not installed here")

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "Hello! How are you today?"},
]


@pytest.fixture(scope="module")
def model_and_file(tiny_model_dir, tmp_path_factory):
    """The tiny model with a pirate adapter, and the two merged in a GGUF file."""
    root = tmp_path_factory.mktemp("gguf-chat")
    # On every linear layer and at full scale, so that replies are words, not the plain model's newlines.
    adapter = write_peft_adapter(tiny_model_dir, root / "pirate", scale=1.0, targets=ALL_LINEAR)
    gguf = merged_gguf(tiny_model_dir, adapter, root / "pirate.gguf")
    model, file = ChatSession(str(tiny_model_dir), device="cpu"), GgufSession(gguf, threads=1)
    model.set_adapter(str(adapter))
    yield model, file
    model.close()
    file.close()


def test_the_file_renders_and_tokenises_the_conversation_as_the_model_does(model_and_file):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model, file = model_and_file
    prompt = file.render_prompt(CONVERSATION)
    assert prompt == model.render_prompt(CONVERSATION)
    assert file.chat_template()[1] == "file 'pirate.gguf'"
    # What llama-cpp-python's create_chat_completion would render from the file's own template.
    template = file.chat_template()[0]
    assert Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="<|endoftext|>")(
        messages=CONVERSATION).prompt == prompt
    assert file.prompt_ids(CONVERSATION) == model.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_greedy_replies_are_the_adapters_and_a_reply_streams_stops_and_reseeds(model_and_file):
    model, file = model_and_file
    for penalty in (1.0, 1.3):  # the penalty changes the reply, in both alike
        expected = model.generate(CONVERSATION, max_new_tokens=16, repetition_penalty=penalty)
        pieces: list[str] = []
        reply = file.generate(CONVERSATION, max_new_tokens=16, repetition_penalty=penalty, on_token=pieces.append)
        assert (reply.reply, reply.tokens, reply.seed) == (expected.reply, expected.tokens, None)
        assert "".join(pieces) == reply.reply and len(set(reply.reply)) > 4

    stop = threading.Event()
    stopped = file.generate(CONVERSATION, max_new_tokens=16, on_token=lambda _piece: stop.set(), stop_event=stop)
    assert stopped.stopped and stopped.tokens < expected.tokens

    sampled = dict(max_new_tokens=12, temperature=1.2, top_k=50, top_p=0.95, repetition_penalty=1.3)
    first, again = (file.generate(CONVERSATION, **sampled, seed=7) for _ in range(2))
    assert first.reply == again.reply and first.seed == 7
    assert file.generate(CONVERSATION, **sampled).seed is not None


def test_a_missing_or_broken_file_is_one_line(tmp_path):
    files = GgufFiles()
    with pytest.raises(StudioError, match="no GGUF file at"):
        files.open(GgufFile(str(tmp_path / "gone.gguf")))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(StudioError, match="llama.cpp cannot load broken.gguf") as error:
        files.open(GgufFile(str(broken)))
    assert "\n" not in str(error.value)
