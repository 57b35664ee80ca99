"""Chat sessions on the tiny model with real adapters built by peft at test time:
hot-swap, the adapter cache, combinations, compare, transcripts, memory checks, the CLI."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from engine.chat.blends import Blend, choice_label
from engine.chat.checkpoints import list_checkpoints
from engine.chat.room import room_for_training, room_to_load
from engine.chat.session import ChatSession
from engine.chat.transcripts import ChatTranscript, load_transcript, save_transcript
from engine.run.config import RunConfig
from engine.data.rendering import CHATML_TEMPLATE
from engine.errors import StudioError
from engine.adapters.library import ADAPTER_META

HELLO = [{"role": "user", "content": "What is the capital of France?"}]
# A template no tokenizer ships, so seeing it in the prompt proves where it came from.
MARKED_TEMPLATE = (
    "{% for message in messages %}[[{{ message['role'] }}|{{ message['content'] }}]]{% endfor %}"
    "{% if add_generation_prompt %}[[assistant]]{% endif %}"
)
SAMPLED = dict(temperature=1.2, top_k=50, top_p=0.95, seed=7)


def _save_lora(model, folder: Path, seed: int, rank: int = 4) -> Path:
    """A LoRA on q/v with random B, so that (unlike a fresh LoRA) it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"]))
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
        name: _save_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / name, seed, rank)
        for name, seed, rank in (("pirate", 1, 4), ("poet", 2, 8), ("critic", 3, 4))
    }
    # The same architecture at half the width: its adapter cannot fit the tiny model.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.to_dict()
    narrow = LlamaConfig(**{**base, "hidden_size": 32, "intermediate_size": 64})
    made["foreign"] = _save_lora(LlamaForCausalLM(narrow), root / "foreign", 3)
    return made


@pytest.fixture
def session(tiny_model_dir):
    chat = ChatSession(str(tiny_model_dir), device="cpu", threads=1)  # the worker's one (conftest)
    chat.load()
    yield chat
    chat.close()


def _reply(chat: ChatSession, **kwargs) -> str:
    return chat.generate(HELLO, max_new_tokens=12, **kwargs).reply


# hot-swap and the adapter cache -------------------------------------------------------------------
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


def test_the_adapter_cache_is_bounded_and_an_evicted_adapter_comes_back_unchanged(tiny_model_dir, adapters):
    chat = ChatSession(str(tiny_model_dir), device="cpu", max_cached_adapters=2)
    try:
        replies = {}
        for name in ("pirate", "poet", "critic"):
            chat.set_adapter(str(adapters[name]))
            replies[name] = _reply(chat)
        assert chat.cached_adapters == 2
        assert len(chat.base_model.model.layers[0].self_attn.q_proj.lora_A) == 2  # pirate's weights are gone
        chat.set_adapter(str(adapters["pirate"]))  # read again from disk
        assert chat.cached_adapters == 2
        assert _reply(chat) == replies["pirate"]
        chat.set_adapter(str(adapters["critic"]))
        assert _reply(chat) == replies["critic"]
    finally:
        chat.close()


def test_library_names_resolve(session, adapters, studio_home):
    shutil.copytree(adapters["pirate"], studio_home / "adapters" / "pirate")
    session.set_adapter("pirate")
    assert session.adapter == "pirate"
    by_name = _reply(session)
    session.set_adapter(str(adapters["pirate"]))
    assert _reply(session) == by_name


# combinations --------------------------------------------------------------------------------------
def test_a_combination_adds_the_adapters_changes(session, adapters):
    pirate, poet = str(adapters["pirate"]), str(adapters["poet"])
    session.set_adapter(pirate)
    alone = session.generate(HELLO, max_new_tokens=12, **SAMPLED).reply
    session.set_adapter(poet)
    poet_alone = _reply(session)

    # Weight 0 adds nothing, so pirate "combined" with a silenced poet is pirate exactly
    # (the two have different ranks, which the exact combination allows).
    session.set_adapter(Blend(((pirate, 1.0), (poet, 0.0))))
    assert session.generate(HELLO, max_new_tokens=12, **SAMPLED).reply == alone
    both = Blend(((pirate, 1.0), (poet, 1.0)))
    session.set_adapter(both)
    assert session.adapter == both
    mixed = _reply(session)
    assert mixed not in (alone, poet_alone)
    assert choice_label(Blend(((pirate, 1.0), (poet, 0.5)))) == "pirate + 0.5×poet"


def test_impossible_combinations_are_refused(session, adapters):
    with pytest.raises(StudioError, match="every weight 0"):
        Blend(((str(adapters["pirate"]), 0.0), (str(adapters["poet"]), 0.0)))
    with pytest.raises(StudioError, match="made for a different base model"):
        session.set_adapter(Blend(((str(adapters["pirate"]), 1.0), (str(adapters["foreign"]), 1.0))))
    assert session.adapter is None
    assert _reply(session) == _reply(session)


# compare -------------------------------------------------------------------------------------------
def test_compare_gives_each_column_the_reply_a_chat_would_with_one_seed(session, adapters):
    pirate, poet = str(adapters["pirate"]), str(adapters["poet"])
    blend = Blend(((pirate, 1.0), (poet, 1.0)))
    session.set_adapter(poet)
    streamed: dict[int, list[str]] = {}
    finished: list[int] = []
    results = session.compare(
        HELLO, [None, pirate, blend, str(adapters["foreign"])], max_new_tokens=12, temperature=1.0,
        on_token=lambda index, piece: streamed.setdefault(index, []).append(piece),
        on_column=lambda index, result: finished.append(index),
    )
    assert finished == [0, 1, 2, 3]
    assert session.adapter == poet  # the chat's adapter is back
    seed = results[0].reply.seed
    assert seed is not None and all(result.reply.seed == seed for result in results[:3])
    for index, choice in enumerate([None, pirate, blend]):
        session.set_adapter(choice)
        alone = session.generate(HELLO, max_new_tokens=12, temperature=1.0, seed=seed)
        assert results[index].reply.reply == alone.reply == "".join(streamed[index])
    assert results[3].reply is None and "made for a different base model" in results[3].error
    assert results[3].to_dict() == {"adapter": "foreign", "error": results[3].error}


def test_stopping_a_comparison_ends_the_column_and_skips_the_rest(session, adapters):
    stop = threading.Event()
    results = session.compare(HELLO, [None, str(adapters["pirate"])], max_new_tokens=200,
                              on_token=lambda index, piece: stop.set(), stop_event=stop)
    assert results[0].reply.stopped and results[0].reply.tokens < 200
    assert results[1].reply is None and "stopped" in results[1].error


def test_compare_refuses_too_many_columns(session):
    with pytest.raises(StudioError, match="1 to 4 columns"):
        session.compare(HELLO, [None] * 5)


# streaming -----------------------------------------------------------------------------------------
def test_streamed_pieces_make_up_the_reply_one_call_per_token(session):
    pieces: list[str] = []
    reply = session.generate(HELLO, max_new_tokens=16, on_token=pieces.append)
    assert "".join(pieces) == reply.reply
    assert len(pieces) == reply.tokens  # so a view can count tokens as they come
    assert reply.tokens > 0 and reply.tokens_per_second > 0 and reply.time_to_first_token_s > 0
    assert not reply.stopped and reply.seed is None
    assert set(reply.to_dict()) >= {"reply", "tokens", "tokens_per_second", "time_to_first_token_s"}


def test_streaming_never_shows_half_a_character(session):
    from engine.chat.streaming import Detokenizer

    text = "Arr, héllo wörld 🏴‍☠️ naïve café — 東京 ok"
    ids = session.tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = Detokenizer(session.tokenizer)
    pieces = [stream.push([token]) for token in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


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


def test_sampling_is_repeatable_with_a_seed_and_reports_a_drawn_one(session):
    assert session.generate(HELLO, max_new_tokens=12, **SAMPLED).reply == \
        session.generate(HELLO, max_new_tokens=12, **SAMPLED).reply
    drawn = session.generate(HELLO, max_new_tokens=12, temperature=1.2, top_k=50)
    assert drawn.seed is not None
    again = session.generate(HELLO, max_new_tokens=12, temperature=1.2, top_k=50, seed=drawn.seed)
    assert again.reply == drawn.reply


# templates -----------------------------------------------------------------------------------------
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


def test_a_model_without_a_chat_template_gets_chatml_as_training_does(tiny_model_dir, tmp_path):
    bare = shutil.copytree(tiny_model_dir, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config_file = bare / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_file.write_text(json.dumps(config), encoding="utf-8")

    chat = ChatSession(str(bare), device="cpu")
    try:
        from jinja2 import Template

        chat.load()
        tokens = {"bos_token": chat.tokenizer.bos_token, "eos_token": chat.tokenizer.eos_token}
        expected = Template(CHATML_TEMPLATE).render(messages=HELLO, add_generation_prompt=True, **tokens)
        assert chat.render_prompt(HELLO) == expected
        assert chat.generate(HELLO, max_new_tokens=2).tokens > 0
    finally:
        chat.close()


# bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "messages",
    [[], [{"role": "user", "content": "  "}], [{"role": "user"}],
     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ""}]],
    ids=["none", "blank", "no-content", "only-a-system-prompt"],
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
    from engine.models.store import model_fingerprint

    def recorded(name: str, fingerprint: str) -> str:
        folder = shutil.copytree(adapters["pirate"], tmp_path / name)
        meta = {"base_model": name, "base_model_fingerprint": fingerprint}
        (folder / ADAPTER_META).write_text(json.dumps(meta), encoding="utf-8")
        return str(folder)

    with pytest.raises(StudioError, match="trained on other-model"):
        session.set_adapter(recorded("other-model", "0123456789abcdef"))
    session.set_adapter(recorded("tiny", model_fingerprint(tiny_model_dir)))
    assert session.adapter is not None


def test_a_model_that_fails_to_load_says_why(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(StudioError, match="broken"):
        ChatSession(str(broken), device="cpu").load()


# transcripts ---------------------------------------------------------------------------------------
TRICKY = ChatTranscript(
    messages=[
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "Show me a heading:\n## Assistant\nand \\## User too"},
        {"role": "assistant", "content": "Arr 🏴‍☠️ café\n\n  indented\n"},
        {"role": "user", "content": ""},
    ],
    model="starter", adapter="pirate",
    settings={"temperature": 0.7, "top_p": 0.9, "top_k": 0, "repetition_penalty": 1.1, "max_new_tokens": 64,
              "seed": None},
)


@pytest.mark.parametrize("name", ["chat.json", "chat.md"])
def test_a_transcript_reads_back_exactly_as_saved(tmp_path, name):
    folder = tmp_path / "chats"
    folder.mkdir()
    path = save_transcript(folder / name, TRICKY)
    assert load_transcript(path) == TRICKY
    assert [p.name for p in folder.iterdir()] == [name]  # written atomically: no temporary left behind


def test_a_markdown_transcript_reads_as_a_document(tmp_path):
    text = save_transcript(tmp_path / "chat.md", TRICKY).read_text(encoding="utf-8")
    assert text.startswith("# Chat with starter · adapter pirate\n")
    assert "## System\n\nAnswer like a pirate.\n" in text
    assert "\\## Assistant" in text  # the message's own heading line cannot split the message


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"messages": []}', "not a LoRA Studio chat"),
    ('{"format": "lora-studio-chat", "messages": [{"role": "robot", "content": "x"}]}', "every message needs a role"),
    ('{"format": "lora-studio-chat", "messages": [], "settings": {"warp": 9}}', "unknown generation setting"),
])
def test_a_bad_transcript_gets_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(StudioError, match=message):
        load_transcript(path)


def test_transcript_files_that_cannot_be_used(tmp_path):
    with pytest.raises(StudioError, match="not found"):
        load_transcript(tmp_path / "missing.json")
    (tmp_path / "notes.md").write_text("# Shopping\n\n- eggs\n", encoding="utf-8")
    with pytest.raises(StudioError, match="no '## User' or '## Assistant' headings"):
        load_transcript(tmp_path / "notes.md")
    with pytest.raises(StudioError, match="does not exist"):
        save_transcript(tmp_path / "no-such-folder" / "chat.json", TRICKY)


# memory and checkpoints ----------------------------------------------------------------------------
def test_loading_checks_the_free_memory(tiny_model_dir):
    room = room_to_load(tiny_model_dir, "cpu")
    assert room.fits and 0 < room.needed_bytes < room.free_bytes
    assert not room_to_load(tiny_model_dir, "cpu", free_bytes=room.needed_bytes // 2).fits
    assert "needs about" in room.describe() and "free" in room.describe()


def test_a_training_run_that_would_not_fit_beside_the_chat_is_detected(session, tiny_model_dir):
    small = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=1, max_length=64, device="cpu")
    room = room_for_training(session, small)
    assert room is not None and room.fits
    huge = RunConfig(model=str(tiny_model_dir), dataset="d.jsonl", batch_size=4096, max_length=1 << 20,
                     device="cpu")
    room = room_for_training(session, huge)
    assert not room.fits and room.needed_bytes > room.free_bytes
    assert room.describe().startswith(f"training {tiny_model_dir} needs about")


def _fake_run(runs: Path, name: str, model: str, adapter: Path, steps: dict[int, bool]) -> Path:
    """A run folder as a training writes it: config.json and checkpoints, complete or not."""
    run = runs / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": model, "dataset": "d.jsonl"}), encoding="utf-8")
    for step, complete in steps.items():
        folder = shutil.copytree(adapter, run / "checkpoints" / f"checkpoint-{step}")
        (folder / "chat_template.jinja").write_text(MARKED_TEMPLATE, encoding="utf-8")
        if complete:
            (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    return run


def test_checkpoints_of_a_run_are_listed_and_chat_with_their_training_template(session, adapters, studio_home,
                                                                               tiny_model_dir):
    runs = studio_home / "runs"
    _fake_run(runs, "other-model-run", "starter", adapters["poet"], {5: True})
    _fake_run(runs, "pirate-run", str(tiny_model_dir), adapters["pirate"], {10: True, 20: False})
    listed = list_checkpoints(str(tiny_model_dir))
    assert [(c.run, c.step) for c in listed] == [("pirate-run", 10)]  # step 20 is still being written
    assert listed[0].label == "pirate-run · step 10"
    assert {c.run for c in list_checkpoints()} == {"pirate-run", "other-model-run"}

    session.set_adapter(listed[0].path)
    assert session.render_prompt(HELLO) == "[[user|What is the capital of France?]][[assistant]]"
    assert choice_label(listed[0].path) == "pirate-run/checkpoint-10"


def test_a_runs_checkpoint_with_the_weights_of_its_saved_adapter_is_not_listed_again(tiny_model_dir):
    from engine.paths import runs_dir
    from engine.train import recipe
    from training_runs import new_run

    # Checkpoints at step 2 and at the end (3); the end's weights are the adapter the run saves.
    run = new_run(runs_dir(), tiny_model_dir, max_steps=3, save_every=2, name="pirate")
    saved = Path(recipe.train(run).adapter)
    assert json.loads((saved / ADAPTER_META).read_text())["run_dir"] == str(run.run_dir)
    assert sorted(p.name for p in (run.run_dir / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2",
                                                                                         "checkpoint-3"]
    assert [c.step for c in list_checkpoints(str(tiny_model_dir))] == [2]
    # Decided by content: once the library's copy is gone, the last checkpoint is offered again.
    shutil.rmtree(saved)
    assert [c.step for c in list_checkpoints(str(tiny_model_dir))] == [3, 2]


# the command line ----------------------------------------------------------------------------------
def test_cli_compare_prints_one_json_object_per_prompt(tiny_model_dir, adapters, capsys):
    from engine.cli.main import main

    code = main(["chat", "--model", str(tiny_model_dir), "--adapter", str(adapters["pirate"]), "--adapter",
                 str(adapters["poet"]), "--combine", "--weights", "1", "0.5", "--compare", "--prompt", "Hello",
                 "--max-new-tokens", "6", "--temperature", "0.8", "--json"])
    assert code == 0
    output = json.loads(capsys.readouterr().out)
    assert [column["adapter"] for column in output["columns"]] == [None, "pirate", "poet", "pirate + 0.5×poet"]
    assert len({column["seed"] for column in output["columns"]}) == 1
    assert all(0 < column["tokens"] <= 6 for column in output["columns"])


def test_cli_chat_goes_on_over_standard_input(tiny_model_dir, adapters, capsys, monkeypatch):
    import io

    from engine.cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\nAnd then?\n\nnever read\n"))
    assert main(["chat", "--model", str(tiny_model_dir), "--adapter", str(adapters["pirate"]),
                 "--max-new-tokens", "4", "--json"]) == 0
    replies = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(replies) == 2 and all(reply["tokens"] > 0 for reply in replies)


@pytest.mark.parametrize("extra, message", [
    (["--adapter", "a", "--adapter", "b"], "unknown adapter 'a'"),
    (["--weights", "1"], "--weights goes with --combine"),
    (["--combine"], "--combine needs two or more --adapter"),
])
def test_cli_chat_refuses_bad_combinations_in_one_line(tiny_model_dir, capsys, extra, message):
    from engine.cli.main import main

    assert main(["chat", "--model", str(tiny_model_dir), "--prompt", "hi", *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_cli_chat_with_several_adapters_needs_compare_or_combine(tiny_model_dir, adapters, capsys):
    from engine.cli.main import main

    refs = [value for name in ("pirate", "poet", "critic", "foreign") for value in ("--adapter", str(adapters[name]))]
    assert main(["chat", "--model", str(tiny_model_dir), "--prompt", "hi", *refs[:4]]) == 2
    assert "add --compare" in capsys.readouterr().err
    assert main(["chat", "--model", str(tiny_model_dir), "--prompt", "hi", "--compare", *refs]) == 2
    assert "at most 4 columns" in capsys.readouterr().err


@pytest.mark.parametrize("pieces, reply", [
    (["Arr", ", matey!", "<|im_end|>"], "Arr, matey!"),
    (["Arr<|im", "_end|>", "junk after"], "Arr"),
    (["a <|i", "m not a marker"], "a <|im not a marker"),
    (["trailing <|im_"], "trailing <|im_"),
])
def test_a_literal_chatml_turn_end_never_reaches_the_reply(pieces, reply):
    from engine.chat.streaming import TurnEndFilter

    turn_end = TurnEndFilter("<|im_end|>")
    assert "".join(turn_end.push(p) for p in pieces) + turn_end.flush() == reply


def test_the_chatml_turn_end_is_cut_as_text_only_for_a_tokenizer_that_lacks_its_token(tiny_model_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from engine.chat.streaming import literal_turn_end

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    assert literal_turn_end(PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]")) == "<|im_end|>"
    assert literal_turn_end(AutoTokenizer.from_pretrained(tiny_model_dir)) is None
