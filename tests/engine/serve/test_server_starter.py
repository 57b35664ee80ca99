"""The server over the real starter model (SmolLM2-135M-Instruct) and an adapter given as a PEFT
folder: the official client gets the engine's own replies, alone and in one batch."""

from __future__ import annotations

import threading

import openai
import pytest

from engine.chat.session import ChatSession
from engine.serve.server import LocalServer, ServeSettings
from lora_adapters import write_peft_adapter

pytestmark = pytest.mark.starter

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SETTINGS = dict(max_tokens=16, temperature=0.7, top_p=0.9, seed=5)


def test_the_starter_and_its_adapter_answer_as_the_engine_does(starter_in_store, tmp_path):
    adapter = write_peft_adapter(starter_in_store, tmp_path / "starter-pirate", seed=4, scale=0.05)
    session = ChatSession("starter", device="cpu")
    expected = {}
    for choice in (None, str(adapter)):
        session.set_adapter(choice)
        expected[choice] = session.generate(QUESTION, max_new_tokens=16, temperature=0.7, top_p=0.9, seed=5).reply
    session.close()
    assert expected[None] != expected[str(adapter)]

    server = LocalServer(ServeSettings(model="starter", adapters=[str(adapter)], port=0, device="cpu"))
    server.start()
    try:
        assert server.model_names == ["starter", "starter-pirate"]
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        answers: dict[str, str] = {}

        def ask(model: str) -> None:
            reply = client.chat.completions.create(model=model, messages=QUESTION, **SETTINGS)
            answers[model] = reply.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(model,)) for model in server.model_names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == {"starter": expected[None], "starter-pirate": expected[str(adapter)]}
    finally:
        server.stop()
