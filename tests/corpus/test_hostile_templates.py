"""Class 1 of issue 23: a chat template is code from whoever made the model or the adapter. A
template that loops for ever, writes gigabytes or fails in a way Jinja does not name is refused
in one line (the CLI's exit 2, never its "unexpected" path), within the bound, with nothing
written: when inspecting data, tokenising for training, chatting and merging.

The bounds are lowered here (engine.data.templates' module constants) so that each case takes
about half a second at most."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from engine.data import templates
from helpers import run_cli, write_messages_dataset
from refusals import assert_home_unchanged, assert_refused, home_snapshot

SECONDS = 0.5

ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"

# Each hostile template, and the words its refusal holds.
HOSTILE = {
    "endless loop": (ENDLESS, "ran for more than 0.5 s"),
    "include with no loader": ("{% include 'other.jinja' %}", "TypeError: no loader"),
    "division by zero": ("{{ messages | length / 0 }}", "ZeroDivisionError"),
    "integer division by zero": ("{{ 1 // (messages | length - messages | length) }}", "ZeroDivisionError"),
    "string multiplication": ("{{ 'x' * 1000000000 }}", "repeats a value into one of about 1,000,000,000"),
    "a huge power": ("{{ 2 ** 100000000 }}", "raises a number to a power too large"),
    "output of a long loop": ("{% for i in range(100000) %}{{ messages | tojson }}{% endfor %}",
                              "writes more than the 100,000 characters allowed"),
    "doubling through a macro": ("{% macro d(s, n) %}{{ d(s ~ s, n - 1) if n else s }}{% endmacro %}{{ d('ab', 60) }}",
                                 "writes more than the 100,000 characters allowed"),
    "padding in a filter": ("{{ 'x' | center(1000000000) }}", "asks center for 1,000,000,000"),
    "padding in a format": ("{{ '%0999999999d' % 1 }}", "pads a value to a width"),
    "replace into a blowup": ("{{ ('x' * 90000) | replace('', 'y' * 90000) }}", "asks replace for a value"),
    "macro recursion": ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recurses without end"),
    "exponential macro": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
                          "ran for more than 0.5 s"),
    "a type error": ("{{ messages + 1 }}", "TypeError"),
    "not Jinja at all": ("{% for %}", "is not valid Jinja"),
}


@pytest.fixture(autouse=True)
def low_bounds(monkeypatch):
    monkeypatch.setattr(templates, "MAX_SECONDS", SECONDS)
    monkeypatch.setattr(templates, "MAX_CHARS", 100_000)
    monkeypatch.setattr(templates, "_REFUSED", {})


def model_with_template(tiny_model_dir: Path, folder: Path, template: str) -> Path:
    """A copy of the tiny model whose chat_template.jinja is ``template``."""
    shutil.copytree(tiny_model_dir, folder, copy_function=shutil.copy)
    (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    return folder


@pytest.mark.parametrize("case", HOSTILE)
def test_data_inspect_refuses_a_hostile_model_template_in_one_line(case, tiny_model_dir, tmp_path, capsys):
    template, words = HOSTILE[case]
    model = model_with_template(tiny_model_dir, tmp_path / "hostile-model", template)
    data = write_messages_dataset(tmp_path / "rows.jsonl", rows=40)
    before = home_snapshot()
    started = time.monotonic()
    code, out, err = run_cli(["data", "inspect", data, "--model", model], capsys)
    line = assert_refused(code, out, err, "the chat template of model 'hostile-model'")
    assert words in line
    # One bound for the whole pass, not one per row.
    assert time.monotonic() - started < SECONDS + 2.5
    assert_home_unchanged(before)


def test_a_template_refusing_one_row_is_still_a_bad_row_not_a_refused_template(tiny_model_dir, tmp_path, capsys):
    # raise_exception is how a template says a conversation does not fit it (roles out of order).
    template = ("{% if 'moon' in messages[0].content %}"
                "{{ raise_exception('no questions about the moon') }}{% endif %}"
                + (tiny_model_dir / "chat_template.jinja").read_text())
    model = model_with_template(tiny_model_dir, tmp_path / "picky-model", template)
    data = write_messages_dataset(tmp_path / "rows.jsonl", rows=4)
    code, out, err = run_cli(["data", "inspect", data, "--model", model, "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert (report["bad_rows"], report["good_rows"]) == (1, 3)
    assert "no questions about the moon" in report["problems"][0]["reason"]


def test_the_training_pass_stops_at_a_hostile_template_and_writes_no_examples(tiny_model_dir, tmp_path):
    """The training child tokenises every row through write_examples: the run ends with the one
    line, after one bound, and leaves no examples file (nor its partial)."""
    from engine.data.dataset import DataOptions, open_dataset
    from engine.data.write import write_examples
    from engine.models.tokenizer import load_tokenizer

    model = model_with_template(tiny_model_dir, tmp_path / "hostile-model", ENDLESS)
    source = open_dataset(str(write_messages_dataset(tmp_path / "rows.jsonl", rows=40)), DataOptions())
    out = tmp_path / "run" / "examples.arrow"
    started = time.monotonic()
    with pytest.raises(templates.TemplateRefused, match="chat template of model 'hostile-model' ran for more than"):
        write_examples(source, load_tokenizer(model), 64, out)
    assert time.monotonic() - started < SECONDS + 2.5
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


@pytest.fixture
def hostile_adapter(tiny_model_dir):
    """A library adapter whose studio.json carries the endless template."""
    from lora_adapters import library_adapter

    return library_adapter(tiny_model_dir, "hostile", meta={"chat_template": ENDLESS})


def test_chat_with_an_adapter_whose_template_loops_is_refused_in_one_line(tiny_model_dir, hostile_adapter, capsys):
    started = time.monotonic()
    code, out, err = run_cli(["chat", "--model", tiny_model_dir, "--adapter", "hostile", "--prompt", "Hello",
                              "--max-new-tokens", "2"], capsys)
    assert_refused(code, out, err, "the chat template of adapter 'hostile' ran for more than 0.5 s")
    assert time.monotonic() - started < SECONDS + 10  # loading the tiny model and the adapter included


def test_a_chat_session_survives_a_refused_template(tiny_model_dir, hostile_adapter):
    """The studio's Chat page: the refusal is one StudioError line, and the session then chats on
    without the adapter, as if nothing had been raised into it."""
    from engine.chat.session import ChatSession
    from engine.errors import StudioError

    session = ChatSession(str(tiny_model_dir), device="cpu")
    session.set_adapter("hostile")
    with pytest.raises(StudioError, match="the chat template of adapter 'hostile' ran for more than") as refused:
        session.render_prompt([{"role": "user", "content": "Hello"}])
    assert "\n" not in str(refused.value)
    session.set_adapter(None)
    time.sleep(SECONDS)  # an alarm left behind would go off in here, or in the next line
    assert session.render_prompt([{"role": "user", "content": "Hello"}]).endswith("assistant\n")


def test_merge_refuses_an_adapter_whose_template_blows_up_and_writes_nothing(tiny_model_dir, tmp_path, capsys):
    from lora_adapters import library_adapter

    library_adapter(tiny_model_dir, "blowup", meta={"chat_template": "{{ 'x' * 1000000000 }}"})
    before = home_snapshot()
    output = tmp_path / "merged"
    code, out, err = run_cli(["adapters", "merge", "blowup", "--base", tiny_model_dir, "--output", output], capsys)
    assert_refused(code, out, err, "the chat template of adapter 'blowup' repeats a value")
    assert [p.name for p in tmp_path.iterdir()] == ["studio-home"]  # no output, no staging folder beside it
    assert_home_unchanged(before)


def test_a_template_over_the_size_bound_is_refused_before_it_is_compiled(tiny_model_dir, tmp_path, capsys):
    model = model_with_template(tiny_model_dir, tmp_path / "huge-template", "x" * (templates.MAX_TEMPLATE_CHARS + 1))
    data = write_messages_dataset(tmp_path / "rows.jsonl", rows=2)
    code, out, err = run_cli(["data", "inspect", data, "--model", model], capsys)
    assert_refused(code, out, err, f"characters long, more than the {templates.MAX_TEMPLATE_CHARS:,} allowed")


def test_memory_growth_ends_a_render(tiny_model_dir, monkeypatch):
    """Python-level loops that allocate (each step within the per-value bound) are stopped by the
    watchdog's memory alarm long before the time bound."""
    from engine.data.rendering import render_conversation
    from engine.models.tokenizer import load_tokenizer

    monkeypatch.setattr(templates, "MAX_SECONDS", 30.0)
    monkeypatch.setattr(templates, "MAX_GROWTH_BYTES", 100 * 1024**2)
    tokenizer = load_tokenizer(tiny_model_dir)
    greedy = "{{ (['x' * 90000] * 100000) | map('upper') | list | length }}"  # 9 GB if let run
    started = time.monotonic()
    with pytest.raises(templates.TemplateRefused, match="used more than 100 MB of memory"):
        render_conversation([{"role": "user", "content": "hi"}], tokenizer, chat_template=greedy)
    assert time.monotonic() - started < 10


def test_rendering_matches_transformers_for_real_templates(tiny_model_dir):
    """The bounded renderer gives a template what transformers' apply_chat_template gives it."""
    from engine.data.rendering import CHATML_TEMPLATE, render_conversation
    from engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}]
    fancy = ("{{ bos_token }}{% for m in messages %}{{ m.role ~ ': ' ~ m.content | trim }}"
             "{% generation %}{{ eos_token }}{% endgeneration %}\n{% endfor %}{{ messages | tojson }}"
             "{{ '%3d' | format(messages | length) }}{{ 'ab' * 2 }}{{ 'x'.center(5) }}{{ dict(a=1) | tojson }}")
    for template in (None, CHATML_TEMPLATE, fancy):
        for prompt in (False, True):
            assert render_conversation(messages, tokenizer, add_generation_prompt=prompt, chat_template=template) == \
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                              chat_template=template)


def test_ollama_system_prompt_is_found_in_linear_time():
    from engine.gguf.ollama import ollama_template

    hostile = "<|im_end|>" + "<|im_start|>system\n" * 20000  # quadratic for the old pattern: minutes
    started = time.monotonic()
    assert ollama_template(hostile)[2] is None
    assert time.monotonic() - started < 1
    assert ollama_template("<|im_start|>system\nYou are kind.<|im_end|>")[2] == "You are kind."
