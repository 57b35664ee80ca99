"""Datasets: loading files, reporting bad rows, and masking everything but the replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data.dataset import DatasetFile, load_dataset_file, open_dataset
from engine.data.examples import IGNORE_INDEX, build_examples, tokenize_conversation, training_view
from engine.data.rendering import CHATML_TEMPLATE, chat_template_for, render_conversation
from engine.data.scan import scan_dataset
from engine.data.split import split_counts, split_indices
from engine.data.write import write_examples
from engine.errors import StudioError
from engine.paths import SAMPLE_DATASETS

# SmolLM2-Instruct's own template: ChatML that slips in a default system prompt.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONVERSATION = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Hello! How are you today?"},
    {"role": "assistant", "content": "Arr matey, I am fine!"},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
]


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write_jsonl(path: Path, rows: list) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def trained_runs(tokenizer, input_ids: list[int], labels: list[int]) -> list[str]:
    """The text of each stretch of consecutive trained tokens."""
    runs: list[list[int]] = []
    previous_trained = False
    for token, label in zip(input_ids, labels):
        trained = label != IGNORE_INDEX
        if trained:
            assert label == token
            if not previous_trained:
                runs.append([])
            runs[-1].append(token)
        previous_trained = trained
    return [tokenizer.decode(run) for run in runs]


def test_multi_turn_trains_exactly_the_replies_and_their_end_markers(tokenizer):
    example = tokenize_conversation(CONVERSATION, tokenizer, max_length=512)

    assert example is not None and not example.truncated
    assert tokenizer.decode(example.input_ids) == render_conversation(CONVERSATION, tokenizer)
    assert trained_runs(tokenizer, example.input_ids, example.labels) == [
        "Arr matey, I am fine!<|im_end|>\n",
        "Paris is the capital of France.<|im_end|>\n",
    ]
    masked_text = tokenizer.decode([t for t, l in zip(example.input_ids, example.labels) if l == IGNORE_INDEX])
    for message in CONVERSATION:
        if message["role"] != "assistant":
            assert message["content"] in masked_text


def test_chat_template_override_masks_the_templates_default_system_prompt(tokenizer):
    conversation = CONVERSATION[1:3]
    example = tokenize_conversation(conversation, tokenizer, max_length=512, chat_template=SMOLLM2_TEMPLATE)

    assert tokenizer.decode(example.input_ids).startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert trained_runs(tokenizer, example.input_ids, example.labels) == ["Arr matey, I am fine!<|im_end|>\n"]


def test_a_template_that_writes_the_bos_token_gets_exactly_one(tokenizer):
    with_bos = "{{ bos_token }}" + SMOLLM2_TEMPLATE
    example = tokenize_conversation(CONVERSATION, tokenizer, max_length=512, chat_template=with_bos)

    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids.count(tokenizer.bos_token_id) == 1
    assert example.labels[0] == IGNORE_INDEX


def test_template_whose_turns_are_not_prefixes_is_refused(tokenizer):
    # Renders "assistant:" for a written reply but "assistant" in the generation prompt.
    broken = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + (':' if m['role'] == 'assistant' else '') + '\n'"
        " + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(StudioError, match="chat template"):
        tokenize_conversation(CONVERSATION, tokenizer, max_length=512, chat_template=broken)


def test_tokenizer_without_chat_template_is_refused(tokenizer, monkeypatch):
    monkeypatch.setattr(tokenizer, "chat_template", None)
    with pytest.raises(StudioError, match="no chat template"):
        tokenize_conversation(CONVERSATION, tokenizer, max_length=512)


def test_truncation_keeps_the_start_and_drops_examples_with_nothing_left_to_learn(tokenizer, tmp_path):
    full = tokenize_conversation(CONVERSATION, tokenizer, max_length=512)
    first_reply = next(i for i, label in enumerate(full.labels) if label != IGNORE_INDEX)

    cut = tokenize_conversation(CONVERSATION, tokenizer, max_length=first_reply + 3)
    assert cut.truncated
    assert cut.input_ids == full.input_ids[: first_reply + 3]
    assert cut.labels == full.labels[: first_reply + 3]
    assert tokenize_conversation(CONVERSATION, tokenizer, max_length=first_reply) is None

    dataset = DatasetFile(path=tmp_path / "x.jsonl", format="messages", conversations=[CONVERSATION, CONVERSATION[:3]])
    examples, stats = build_examples(dataset, tokenizer, max_length=first_reply)
    assert examples == [] and stats.dropped == 2 and stats.examples == 0

    examples, stats = build_examples(dataset, tokenizer, max_length=first_reply + 3)
    assert (stats.examples, stats.truncated, stats.dropped) == (2, 2, 0)
    assert stats.total_tokens == 2 * (first_reply + 3)
    assert stats.trained_tokens == 2 * 3


def test_chat_rows_load_with_roles_and_extra_keys_kept_out(tmp_path):
    row = {"messages": [dict(message, name="x") for message in CONVERSATION], "id": 7}
    dataset = load_dataset_file(write_jsonl(tmp_path / "chat.jsonl", [row]))

    assert dataset.format == "messages"
    assert dataset.conversations == [CONVERSATION]
    assert dataset.problems == [] and dataset.total_rows == 1


def test_alpaca_rows_with_and_without_input_become_chats(tmp_path):
    rows = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue"},
        {"instruction": "Greet.", "output": "Hi", "system": "Be brief."},
    ]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    dataset = load_dataset_file(path)

    assert dataset.format == "alpaca" and dataset.problems == []
    assert dataset.conversations == [
        [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}, {"role": "assistant", "content": "5"}],
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue"}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Greet."},
            {"role": "assistant", "content": "Hi"},
        ],
    ]


def test_bad_rows_are_reported_with_their_line_numbers(tmp_path):
    good = {"messages": CONVERSATION[1:3]}
    lines = [
        good,  # 1
        '{"messages": [',  # 2
        "",  # 3: blank lines are not rows
        {"messages": [{"role": "bot", "content": "hi"}]},  # 4
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},  # 5
        [1, 2],  # 6
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]},  # 7
        {"messages": [{"role": "user", "content": "anyone?"}]},  # 8
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "\ud800"}]},  # 9
        {"messages": CONVERSATION[1:3] + [{"role": "system", "content": "late"}]},  # 10
        {"messages": [{"role": "assistant", "content": "first!"}]},  # 11
        good,  # 12
    ]
    dataset = load_dataset_file(write_jsonl(tmp_path / "mixed.jsonl", lines))

    assert len(dataset.conversations) == 2 and dataset.total_rows == 11
    reasons = {problem.line: problem.reason for problem in dataset.problems}
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "not valid JSON" in reasons[2]
    assert "role 'bot'" in reasons[4]
    assert "empty assistant" in reasons[5]
    assert "not an object" in reasons[6]
    assert "must be text" in reasons[7]
    assert "end with an assistant reply" in reasons[8]
    assert "Unicode" in reasons[9]
    assert "only the first message" in reasons[10]
    assert "start with a user message" in reasons[11]


def test_json_array_rows_are_reported_at_the_line_where_they_start(tmp_path):
    path = tmp_path / "rows.json"
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": 5}]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")  # row 2 opens on line 6
    dataset = load_dataset_file(path)

    assert [(p.line, p.reason) for p in dataset.problems] == [(6, "'output' must be text, not a JSON number")]


def test_a_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"messages": CONVERSATION}).encode())
    assert load_dataset_file(path).conversations == [CONVERSATION]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", "dataset empty.jsonl is empty"),
        ("blank.jsonl", b"\n  \n\t\n", "dataset blank.jsonl is empty"),
        ("junk.jsonl", bytes(range(256)) * 4, "dataset junk.jsonl: no usable rows (first problem, line 1: not valid"),
        ("latin1.jsonl", '{"instruction": "café"}'.encode("latin-1"),
         "dataset latin1.jsonl: no usable rows (first problem, line 1: not UTF-8 text (bad byte at column 21)"),
        ("nul.jsonl", b"\x00\x01\x02 binary", "dataset nul.jsonl: no usable rows (first problem, line 1: not valid"),
        ("none.json", b"[]", "dataset none.json has no rows"),
        ("broken.json", b'[{"instruction": "a", "output": "b"},', "dataset broken.json is not valid JSON"),
        ("scalar.json", b'"just a string"', "dataset scalar.json: no usable rows (first problem, line 1: row is a JSON "
                                       "string, not an object)"),
        ("other.jsonl", b'{"foo": 1, "bar": 2}\n', "dataset other.jsonl: cannot tell the format from its columns "
                                                      "(foo, bar)"),
    ],
)
def test_unusable_files_raise_one_readable_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(StudioError) as caught:
        load_dataset_file(path)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_missing_file_and_folder_raise_studio_errors(tmp_path):
    with pytest.raises(StudioError, match="not found.*nowhere.jsonl"):
        load_dataset_file(tmp_path / "nowhere.jsonl")
    (tmp_path / "notes.md").write_text("# About\n")
    with pytest.raises(StudioError, match="holds no dataset files"):
        load_dataset_file(tmp_path)


@pytest.mark.parametrize(
    ("name", "dataset_format", "rows", "marker"),
    [
        ("pirate_persona.jsonl", "messages", (250, 350), "Arr, matey!"),
        ("robot_alpaca.json", "alpaca", (180, 250), "BEEP BOOP."),
    ],
)
def test_sample_datasets_load_cleanly_and_keep_their_style(name, dataset_format, rows, marker, tokenizer):
    dataset = load_dataset_file(SAMPLE_DATASETS / name)

    assert dataset.format == dataset_format and dataset.problems == []
    assert rows[0] <= len(dataset.conversations) <= rows[1]
    replies = [m["content"] for c in dataset.conversations for m in c if m["role"] == "assistant"]
    assert all(reply.startswith(marker) for reply in replies)
    if dataset_format == "alpaca":
        assert all(reply == reply.upper() for reply in replies)
    else:
        assert all(reply.endswith("Yo-ho-ho!") for reply in replies)
        assert any(len(c) > 3 for c in dataset.conversations)
        assert any(c[0]["role"] == "system" for c in dataset.conversations)
    assert len(set(replies)) > 0.9 * len(replies)

    _, stats = build_examples(dataset, tokenizer, max_length=512, chat_template=SMOLLM2_TEMPLATE)
    assert stats.dropped == 0 and stats.truncated == 0


def test_training_on_all_tokens_trains_prompts_too(tokenizer):
    replies_only = tokenize_conversation(CONVERSATION, tokenizer, max_length=512)
    everything = tokenize_conversation(CONVERSATION, tokenizer, max_length=512, train_on="all")

    assert everything.input_ids == replies_only.input_ids
    assert everything.labels == everything.input_ids
    assert trained_runs(tokenizer, everything.input_ids, everything.labels) == [
        render_conversation(CONVERSATION, tokenizer)]


@pytest.fixture(scope="session")
def tokenizer_without_template(tiny_model_dir):
    """A base-model tokenizer: no chat template, and an EOS that is not ChatML's end marker."""
    from transformers import AutoTokenizer

    base = AutoTokenizer.from_pretrained(tiny_model_dir, eos_token="<|endoftext|>")
    base.chat_template = None
    return base


def test_a_base_model_without_template_trains_on_chatml_and_learns_to_stop(tokenizer_without_template):
    template, fallback = chat_template_for(tokenizer_without_template)
    assert fallback and template == CHATML_TEMPLATE
    example = tokenize_conversation(CONVERSATION, tokenizer_without_template, 512, chat_template=template)

    text = tokenizer_without_template.decode(example.input_ids)
    assert text.startswith("<|endoftext|><|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\n")
    assert trained_runs(tokenizer_without_template, example.input_ids, example.labels) == [
        "Arr matey, I am fine!<|im_end|><|endoftext|>\n",
        "Paris is the capital of France.<|im_end|><|endoftext|>\n",
    ]


def test_the_fallback_template_gives_replies_that_chat_renders_the_same_way(tokenizer_without_template):
    # Chat renders a prompt up to the reply; training's text must continue exactly from it.
    prompt = render_conversation(CONVERSATION[:2], tokenizer_without_template, add_generation_prompt=True,
                                 chat_template=CHATML_TEMPLATE)
    trained = render_conversation(CONVERSATION[:3], tokenizer_without_template, chat_template=CHATML_TEMPLATE)
    assert trained.startswith(prompt) and trained[len(prompt):] == "Arr matey, I am fine!<|im_end|><|endoftext|>\n"


def test_raw_text_is_trained_whole_between_the_models_bos_and_eos(tokenizer, tmp_path):
    path = tmp_path / "notes.jsonl"
    write_jsonl(path, [{"text": "The quick brown fox jumps over the lazy dog."}])
    dataset = load_dataset_file(path)
    assert dataset.format == "text"
    example = tokenize_conversation(dataset.conversations[0], tokenizer, max_length=512)

    assert example.labels == example.input_ids
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(example.input_ids[:-1], skip_special_tokens=True) == "The quick brown fox jumps over " \
                                                                                 "the lazy dog."


def test_the_training_view_splits_the_text_into_prompt_trained_and_cut_parts(tokenizer):
    segments, tokens = training_view(CONVERSATION, tokenizer, max_length=512)
    assert "".join(s.text for s in segments) == render_conversation(CONVERSATION, tokenizer)
    assert [s.text for s in segments if s.trained] == ["Arr matey, I am fine!<|im_end|>\n",
                                                       "Paris is the capital of France.<|im_end|>\n"]
    assert not any(s.cut for s in segments)
    assert tokens == len(tokenize_conversation(CONVERSATION, tokenizer, 512).input_ids)

    cut_at = tokens - 5
    segments, _ = training_view(CONVERSATION, tokenizer, max_length=cut_at)
    kept = tokenize_conversation(CONVERSATION, tokenizer, cut_at)
    assert "".join(s.text for s in segments if not s.cut) == tokenizer.decode(kept.input_ids)
    assert segments[-1].cut and segments[-1].trained  # the end of the last reply is cut off

    everything, _ = training_view(CONVERSATION, tokenizer, 512, train_on="all")
    assert [s.trained for s in everything] == [True]


def _mixed_rows() -> list:
    good = {"question": "What is two plus two?", "answer": "Four."}
    return [
        good,  # 1
        {"question": "Name a colour.", "answer": "Blue."},  # 2
        good,  # 3: a duplicate of line 1
        {"question": "Say nothing.", "answer": "   "},  # 4: an empty answer
        "not json {",  # 5
        {"question": "Where is Paris?", "answer": "In France. " * 40},  # 6: a long one
    ]


def test_a_scan_counts_good_bad_duplicate_and_empty_rows_and_measures_lengths(tokenizer, tmp_path):
    source = open_dataset(write_jsonl(tmp_path / "qa.jsonl", _mixed_rows()))
    fractions: list[float] = []
    report = scan_dataset(source, tokenizer, progress=fractions.append)

    assert (report.format, report.total_rows, report.good_rows, report.bad_rows) == ("qa", 6, 4, 2)
    assert (report.duplicates, report.empty_answers) == (1, 1)
    assert [(p.line, p.code) for p in report.problems] == [(4, "empty_answer"), (5, "not_json")]
    dataset = load_dataset_file(source.path)
    full = [len(tokenize_conversation(c, tokenizer, 10**6).input_ids) for c in dataset.conversations]
    assert report.token_lengths.tolist() == full
    assert report.truncated(max(full) - 1) == 1 and report.truncated(max(full)) == 0
    assert report.length_percentiles()["max"] == max(full)
    assert fractions and fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    summary = report.to_dict(max_length=64, val_fraction=0.25)
    assert summary["validation"] == {"fraction": 0.25, "train_rows": 3, "validation_rows": 1}
    assert summary["truncated"] == sum(n > 64 for n in full)


def test_the_scan_counts_the_rows_as_the_runs_tokenising_pass_makes_them_examples(tokenizer, tmp_path):
    # A bad line, an empty answer, a duplicate, a long answer max length cuts, and a prompt it fills.
    rows = [*_mixed_rows(), {"question": "Why? " * 80, "answer": "Because."}]  # 7: the long prompt
    source = open_dataset(write_jsonl(tmp_path / "qa.jsonl", rows))
    report = scan_dataset(source, tokenizer)
    max_length = int(max(report.token_lengths[:3]))  # lines 1-3 fit; lines 6 and 7 do not

    for train_on in ("assistant", "all"):
        written = write_examples(source, tokenizer, max_length, tmp_path / f"{train_on}.arrow", train_on=train_on)
        for share in (0.0, 0.5):
            assert report.row_counts(max_length, train_on, share) == written.row_counts(share)
    counts = report.row_counts(max_length, "assistant", 0.5)
    assert (counts.rows, counts.bad, counts.nothing_to_learn, counts.examples, counts.cut) == (7, 2, 1, 4, 1)
    assert counts.sentence() == (
        f"7 rows in the file: 2 bad rows and 1 whose prompt alone fills max length {max_length} skipped "
        f"→ 4 examples (1 cut to {max_length} tokens): 2 to train on, 2 held out for validation")
    assert report.to_dict(max_length, 0.5)["summary"] == counts.sentence()
    # Learning every token, the long prompt trains too (cut to max length).
    assert report.row_counts(max_length, "all").sentence() == (
        f"7 rows in the file: 2 bad rows skipped → 5 examples (2 cut to {max_length} tokens)")


def test_a_cancelled_scan_or_write_stops_and_leaves_no_file(tokenizer, tmp_path):
    source = open_dataset(write_jsonl(tmp_path / "qa.jsonl", _mixed_rows()))
    assert scan_dataset(source, cancelled=lambda: True) is None
    target = tmp_path / "out" / "examples.arrow"
    assert write_examples(source, tokenizer, 64, target, cancelled=lambda: True) is None
    assert list(target.parent.iterdir()) == []


def test_examples_written_to_arrow_equal_the_in_memory_ones(tokenizer, tmp_path):
    from datasets import Dataset

    source = open_dataset(write_jsonl(tmp_path / "qa.jsonl", _mixed_rows()))
    written = write_examples(source, tokenizer, 40, tmp_path / "examples.arrow")
    examples, stats = build_examples(load_dataset_file(source.path), tokenizer, 40)

    assert written.stats == stats and (written.total_rows, written.bad_rows) == (6, 2)
    stored = Dataset.from_file(str(written.path))
    assert stored["input_ids"] == [e.input_ids for e in examples]
    assert stored["labels"] == [e.labels for e in examples]


def test_scanning_holds_a_few_bytes_per_row_not_the_rows(tmp_path):
    import tracemalloc

    rows = 30_000
    line = json.dumps({"instruction": "Translate to French: " + "good morning " * 20, "output": "bonjour " * 20})
    path = tmp_path / "big.jsonl"
    path.write_text((line + "\n") * rows, encoding="utf-8")
    source = open_dataset(path)
    scan_dataset(source)  # once untraced, so the imports it makes are not counted
    tracemalloc.start()
    report = scan_dataset(source)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert report.good_rows == rows and report.duplicates == rows - 1
    assert path.stat().st_size > 10_000_000 and peak < 2_000_000, peak


def test_the_validation_split_is_seeded_disjoint_and_sized_as_asked():
    assert split_counts(100, 0.1) == (90, 10)
    assert split_counts(3, 0.01) == (2, 1)  # at least one row to measure on
    assert split_counts(1, 0.5) == (1, 0) and split_counts(50, 0) == (50, 0)
    train, held_out = split_indices(100, 0.1, seed=7)
    assert len(held_out) == 10 and sorted(set(train) | set(held_out)) == list(range(100))
    assert split_indices(100, 0.1, seed=7)[1].tolist() == held_out.tolist()
    assert split_indices(100, 0.1, seed=8)[1].tolist() != held_out.tolist()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_short_text = st.text(max_size=30)
_any_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool"]) | _json_values,
        "content": _short_text | _json_values,
    }
)
# Well-formed turns too, or nearly every fuzzed file would be rejected before tokenising.
_turns = st.lists(st.tuples(_short_text, _short_text), min_size=1, max_size=3).map(
    lambda pairs: [{"role": role, "content": text} for pair in pairs for role, text in zip(("user", "assistant"), pair)]
)
_rows = st.one_of(
    _json_values,
    st.fixed_dictionaries({"messages": st.lists(_any_message, max_size=5) | _json_values}),
    st.fixed_dictionaries({"messages": _turns}),
    st.fixed_dictionaries(
        {"instruction": _short_text | _json_values, "output": _short_text | _json_values},
        optional={"input": _short_text | _json_values, "system": _short_text | _json_values},
    ),
)
_json_line = _rows.map(lambda row: json.dumps(row).encode())
_lines = st.lists(st.one_of(_json_line, _json_line, _json_line, st.binary(max_size=40)), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_lines, as_array=st.booleans())
def test_any_file_content_gives_a_dataset_or_a_studio_error(tmp_path, tokenizer, lines, as_array):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"[" + b",".join(lines) + b"]" if as_array else b"\n".join(lines))
    try:
        dataset = load_dataset_file(path)
    except StudioError as error:
        assert "\n" not in str(error)
        return
    assert dataset.conversations
    assert dataset.total_rows == len(dataset.conversations) + len(dataset.problems)
    _, stats = build_examples(dataset, tokenizer, max_length=64)
    assert stats.examples + stats.dropped == len(dataset.conversations)
