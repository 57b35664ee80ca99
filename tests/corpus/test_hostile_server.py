"""Hostile requests to the local server: each is answered with OpenAI's error JSON and the right
status, in one line, the server keeps answering, and the studio's home is left as it was (no
endpoint reads or writes a file)."""

from __future__ import annotations

from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from engine.serve.server import LocalServer, ServeSettings
from lora_adapters import library_adapter
from refusals import assert_home_unchanged, home_snapshot

HELLO = [{"role": "user", "content": "hi"}]
GOOD = {"model": "pirate", "messages": HELLO, "max_tokens": 2}

# (what is sent to /v1/chat/completions, the status, OpenAI's error code when it has one)
CASES = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"\xff\xfe\x00", 400, None),
    (b"", 400, None),
    (b"[" * 100_000 + b"]" * 100_000, 400, None),
    (b'{"model": "pirate", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, None),
    (b'{"model": "pirate", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', 400, None),
    ({**GOOD, "model": "../../etc/passwd"}, 404, "model_not_found"),
    ({**GOOD, "model": str(Path(__file__))}, 404, "model_not_found"),
    ({**GOOD, "model": "pirate\x00"}, 404, "model_not_found"),
    ({**GOOD, "model": "p" * 100_000}, 404, "model_not_found"),
    ({**GOOD, "model": 7}, 400, None),
    ({k: v for k, v in GOOD.items() if k != "model"}, 400, None),
    ({**GOOD, "temperature": -1}, 400, None),
    ({**GOOD, "temperature": 1e308}, 400, None),
    ({**GOOD, "temperature": "hot"}, 400, None),
    ({**GOOD, "top_p": 0}, 400, None),
    ({**GOOD, "top_p": 1.5}, 400, None),
    ({**GOOD, "top_k": -7}, 400, None),
    ({**GOOD, "repetition_penalty": 0}, 400, None),
    ({**GOOD, "max_tokens": 0}, 400, None),
    ({**GOOD, "max_tokens": -1}, 400, None),
    ({**GOOD, "max_tokens": 10**30}, 400, None),
    ({**GOOD, "seed": -5}, 400, None),
    ({**GOOD, "seed": 2**70}, 400, None),
    ({**GOOD, "n": 3}, 400, None),
    ({**GOOD, "logprobs": True}, 400, None),
    ({**GOOD, "presence_penalty": 1.0}, 400, None),
    ({**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, None),
    ({**GOOD, "response_format": {"type": "json_schema"}}, 400, None),
    ({**GOOD, "logit_bias": {"99999": -100}}, 400, None),
    ({**GOOD, "logit_bias": {"five": -100}}, 400, None),
    ({**GOOD, "logit_bias": {"5": -101}}, 400, None),
    ({**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, None),
    ({**GOOD, "stop": [""]}, 400, None),
    ({**GOOD, "messages": []}, 400, None),
    ({**GOOD, "messages": "hi"}, 400, None),
    ({**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
    ({**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, None),
    ({**GOOD, "messages": [{"role": "user", "content": "sea " * 3000}]}, 400, "context_length_exceeded"),
    ({**GOOD, "messages": [{"role": "user", "content": "x" * (3 * 1024 * 1024)}]}, 413, None),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir) -> Path:
    home = tmp_path_factory.mktemp("hostile-serve-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        library_adapter(tiny_model_dir, "pirate", seed=1)
    return home


@pytest.fixture(scope="module")
def server(home, tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(home))
        served = LocalServer(ServeSettings(model=str(tiny_model_dir), adapters=["pirate"], port=0, device="cpu",
                                           api_key="s3cret"))
        served.start()
        yield served
        served.stop()


def _post(url: str, body, key: str = "s3cret") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers=headers, timeout=60)
    return httpx.post(url, json=body, headers=headers, timeout=60)


def _assert_openai_error(response: httpx.Response, status: int, code) -> None:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize("body, status, code", CASES, ids=range(len(CASES)))
def test_a_bad_request_gets_openai_error_json_and_its_status(server, home, monkeypatch, body, status, code):
    monkeypatch.setenv("LORA_STUDIO_HOME", str(home))
    before = home_snapshot()
    _assert_openai_error(_post(f"{server.url}/chat/completions", body), status, code)
    assert_home_unchanged(before)


def test_completions_refuse_what_they_cannot_do(server):
    url = f"{server.url}/completions"
    for body in ({"model": "pirate", "prompt": ["one", "two"]}, {"model": "pirate", "prompt": [[1, 2, 3]]},
                 {"model": "pirate", "prompt": "hi", "echo": True}, {"model": "pirate", "prompt": "hi", "best_of": 2},
                 {"model": "pirate", "prompt": "hi", "suffix": "end"}):
        _assert_openai_error(_post(url, body), 400, None)


def test_a_wrong_or_missing_key_is_refused_before_anything_is_read(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Bearer s3cret-and-more"}):
        response = httpx.post(f"{server.url}/chat/completions", json=GOOD, headers=headers, timeout=60)
        _assert_openai_error(response, 401, "invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()


def test_no_other_path_or_method_is_served(server):
    root = server.url.removesuffix("/v1")
    for path in ("/docs", "/openapi.json", "/redoc", "/v1/files", "/v1/../etc/passwd", "/etc/passwd"):
        _assert_openai_error(httpx.get(root + path, timeout=60), 404, None)
    _assert_openai_error(httpx.get(f"{server.url}/chat/completions", timeout=60), 405, None)


def test_after_every_hostile_request_the_server_still_answers(server):
    client = openai.OpenAI(base_url=server.url, api_key="s3cret", max_retries=0)
    for body, _status, _code in CASES[:8]:
        _post(f"{server.url}/chat/completions", body)
    reply = client.chat.completions.create(model="pirate", messages=HELLO, max_tokens=2)
    assert reply.usage.completion_tokens >= 1
