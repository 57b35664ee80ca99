"""Chat sessions on the tiny model with real adapters built by peft at test time."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from engine.chat import CHATML_TEMPLATE, ChatSession
from engine.errors import StudioError
from engine.library import ADAPTER_META

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
# A template no tokenizer ships, so seeing it in the prompt proves where it came from.
MARKED_TEMPLATE = (
    "{% for message in messages %}[[{{ message['role'] }}|{{ message['content'] }}]]{% endfor %}"
    "{% if add_generation_prompt %}[[assistant]]{% endif %}"
)


def _save_lora(model, folder: Path, seed: int) -> Path:
    """A LoRA on q/v with random B, so that (unlike a fresh LoRA) it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    peft_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    made = {
        name: _save_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / name, seed)
        for name, seed in (("pirate", 1), ("poet", 2))
    }
    # The same architecture at half the width: its adapter cannot fit the tiny model.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.to_dict()
    narrow = LlamaConfig(**{**base, "hidden_size": 32, "intermediate_size": 64})
    made["foreign"] = _save_lora(LlamaForCausalLM(narrow), root / "foreign", 3)
    return made


@pytest.fixture
def session(tiny_model_dir):
    chat = ChatSession(str(tiny_model_dir), device="cpu", threads=2)
    chat.load()
    yield chat
    chat.close()


def _reply(chat: ChatSession, **kwargs) -> str:
    return chat.generate(HELLO, max_new_tokens=12, **kwargs).reply


def test_adapters_change_the_reply_and_swap_without_reloading_the_base(session, adapters, monkeypatch):
    from peft import PeftModel

    loads: list[str] = []
    original_load = PeftModel.load_adapter

    def counting_load(self, path, *args, **kwargs):
        loads.append(path)
        return original_load(self, path, *args, **kwargs)

    monkeypatch.setattr(PeftModel, "load_adapter", counting_load)
    base_model = session.base_model
    q_proj = base_model.model.layers[0].self_attn.q_proj
    base_weight = q_proj.weight

    base = _reply(session)
    session.set_adapter(str(adapters["pirate"]))
    assert session.adapter == str(adapters["pirate"])
    pirate = _reply(session)
    assert pirate != base

    session.set_adapter(None)
    assert session.adapter is None
    assert _reply(session) == base

    session.set_adapter(str(adapters["poet"]))
    poet = _reply(session)
    session.set_adapter(str(adapters["pirate"]))
    assert poet not in (base, pirate)
    assert _reply(session) == pirate

    # One base, wrapped in place: the same module objects and the same weight storage.
    assert session.base_model is base_model
    wrapped = base_model.model.layers[0].self_attn.q_proj
    assert wrapped.get_base_layer() is q_proj
    assert wrapped.get_base_layer().weight.data_ptr() == base_weight.data_ptr()
    assert len(loads) == 2  # each adapter read from disk once, however often it was chosen


def test_library_names_resolve(session, adapters, studio_home):
    shutil.copytree(adapters["pirate"], studio_home / "adapters" / "pirate")
    session.set_adapter("pirate")
    assert session.adapter == "pirate"
    by_name = _reply(session)
    session.set_adapter(str(adapters["pirate"]))
    assert _reply(session) == by_name


def test_streamed_pieces_make_up_the_reply(session):
    pieces: list[str] = []
    reply = session.generate(HELLO, max_new_tokens=16, on_token=pieces.append)
    assert pieces and "".join(pieces) == reply.reply
    assert reply.tokens > 0 and reply.tokens_per_second > 0 and reply.time_to_first_token_s > 0
    assert not reply.stopped
    assert set(reply.to_dict()) >= {"reply", "tokens", "tokens_per_second", "time_to_first_token_s"}


def test_stop_event_ends_the_reply_early(session):
    stop = threading.Event()
    full = session.generate(HELLO, max_new_tokens=40, temperature=0.0)
    stopped = session.generate(HELLO, max_new_tokens=40, on_token=lambda _piece: stop.set(), stop_event=stop)
    assert stopped.stopped
    assert stopped.tokens < full.tokens
    assert full.reply.startswith(stopped.reply)


def test_a_failing_on_token_stops_generation_and_the_session_goes_on(session):
    expected = _reply(session)

    def broken_view(_piece: str) -> None:
        raise RuntimeError("the view went away")

    with pytest.raises(RuntimeError, match="the view went away"):
        session.generate(HELLO, max_new_tokens=200, on_token=broken_view)
    assert not [t for t in threading.enumerate() if t.name == "chat-generate"]
    assert _reply(session) == expected


def test_sampling_is_repeatable_with_a_seed(session):
    settings = dict(max_new_tokens=12, temperature=1.2, top_k=50, top_p=0.95, seed=7)
    assert session.generate(HELLO, **settings).reply == session.generate(HELLO, **settings).reply


def test_the_adapters_saved_chat_template_is_what_the_model_sees(session, adapters, tmp_path, monkeypatch):
    templated = shutil.copytree(adapters["pirate"], tmp_path / "templated")
    (templated / ADAPTER_META).write_text(json.dumps({"chat_template": MARKED_TEMPLATE}), encoding="utf-8")
    fed: list[str] = []
    original_call = type(session.tokenizer).__call__
    monkeypatch.setattr(
        type(session.tokenizer), "__call__", lambda tok, text, **kw: fed.append(text) or original_call(tok, text, **kw)
    )

    assert session.render_prompt(HELLO).startswith("<|im_start|>user\n")  # the tokenizer's own
    session.set_adapter(str(templated))
    expected = "[[user|What is the capital of France?]][[assistant]]"
    assert session.render_prompt(HELLO) == expected
    session.generate(HELLO, max_new_tokens=2)
    assert fed == [expected]


def test_a_model_without_a_chat_template_gets_chatml(tiny_model_dir, tmp_path):
    bare = shutil.copytree(tiny_model_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config_file = bare / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")

    chat = ChatSession(str(bare), device="cpu")
    try:
        from jinja2 import Template

        expected = Template(CHATML_TEMPLATE).render(messages=HELLO, add_generation_prompt=True)
        assert chat.render_prompt(HELLO) == expected
        assert chat.generate(HELLO, max_new_tokens=2).tokens > 0
    finally:
        chat.close()


@pytest.mark.parametrize(
    "messages", [[], [{"role": "user", "content": "  "}], [{"role": "user"}]], ids=["none", "blank", "no-content"]
)
def test_empty_or_malformed_conversations_are_refused(session, messages):
    with pytest.raises(StudioError):
        session.generate(messages)


def test_a_conversation_longer_than_the_context_is_refused(session):
    long = [{"role": "user", "content": "The quick brown fox jumps over the lazy dog. " * 400}]
    with pytest.raises(StudioError, match=r"the conversation is \d+ tokens; this model's context is 1024 tokens"):
        session.generate(long)


def test_unknown_adapter_is_refused(session):
    with pytest.raises(StudioError, match="unknown adapter"):
        session.set_adapter("no-such-adapter")
    assert session.adapter is None


def test_an_adapter_for_another_base_is_refused_and_the_session_survives(session, adapters):
    base = _reply(session)
    # Refused as the first adapter (nothing wrapped the base yet) ...
    with pytest.raises(StudioError, match="made for a different base model"):
        session.set_adapter(str(adapters["foreign"]))
    assert session.adapter is None
    assert _reply(session) == base

    session.set_adapter(str(adapters["pirate"]))
    pirate = _reply(session)
    assert pirate != base
    # ... and next to a loaded one, which stays active and unchanged.
    with pytest.raises(StudioError, match="made for a different base model"):
        session.set_adapter(str(adapters["foreign"]))
    assert session.adapter == str(adapters["pirate"])
    assert _reply(session) == pirate
    session.set_adapter(None)
    assert _reply(session) == base


def test_the_recorded_base_fingerprint_must_match(session, adapters, tiny_model_dir, tmp_path):
    from engine.models import model_fingerprint

    def recorded(name: str, fingerprint: str) -> str:
        folder = shutil.copytree(adapters["pirate"], tmp_path / name)
        meta = {"base_model": name, "base_model_fingerprint": fingerprint}
        (folder / ADAPTER_META).write_text(json.dumps(meta), encoding="utf-8")
        return str(folder)

    with pytest.raises(StudioError, match="trained on other-model"):
        session.set_adapter(recorded("other-model", "0123456789abcdef"))
    session.set_adapter(recorded("tiny", model_fingerprint(tiny_model_dir)))
    assert session.adapter is not None
