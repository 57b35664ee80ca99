"""Every file type and row format: detection on a corpus of samples, column mapping,
folders, the hub, real Alpaca data, the CLI, and a fuzz of every parser."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.data.dataset import DataOptions, Sample, load_dataset_file, open_dataset, preview_dataset
from engine.data.examples import IGNORE_INDEX, tokenize_conversation
from engine.data.scan import scan_dataset
from engine.data.readers import CHUNK_CHARS, TextReader
from engine.errors import StudioError
from helpers import ROOT, TESTS, run_cli

CORPUS = TESTS / "data" / "formats"
CODE_ALPACA = ROOT.parent / "shared" / "data" / "code_alpaca_2k.json"


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}


# file -> (file type, detected format, good rows, the first row's conversation)
EXPECTED = {
    "messages_multiturn.jsonl": ("jsonl", "messages", 3, [
        system("You are a terse assistant."), user("What is the capital of France?"), assistant("Paris."),
        user("And of Italy?"), assistant("Rome.")]),
    "messages_in_cell.csv": ("csv", "messages", 1, [user("Hi!"), assistant("Hello there.")]),
    "sharegpt_multiturn.json": ("json", "sharegpt", 2, [
        system("You answer like a sailor."), user("How deep is the sea?"),
        assistant("Deeper than any anchor chain, matey."), user("And the tallest wave?"),
        assistant("Taller than the mainmast.")]),
    "sharegpt_system_field.jsonl": ("jsonl", "sharegpt", 2, [
        system("You are a librarian."), user("Recommend a book."), assistant("Try Moby-Dick.")]),
    "alpaca_history.jsonl": ("jsonl", "alpaca", 2, [
        system("You translate greetings."), user("Say good morning in French."), assistant("Bonjour."),
        user("And in German?"), assistant("Guten Morgen.")]),
    "prompt_completion.jsonl": ("jsonl", "prompt_completion", 2, [
        user("Complete the proverb: A stitch in time"), assistant(" saves nine.")]),
    "qa.csv": ("csv", "qa", 3, [user("What is 2 + 2?"), assistant("4")]),
    "qa_query_response.tsv": ("tsv", "qa", 2, [user("What colour is the sky?"), assistant("Blue.")]),
    "qa_wrapped.json": ("json", "qa", 2, [user("Who wrote Hamlet?"), assistant("Shakespeare.")]),
    "text_documents.jsonl": ("jsonl", "text", 2, [
        {"role": "text", "content": "The lighthouse keeper climbed the stairs every evening at dusk."}]),
    "text_lines.txt": ("text", "text", 3, [
        {"role": "text", "content": "The first document is a single line about ships."}]),
    "text_paragraphs.txt": ("text", "text", 1, [{"role": "text", "content": (
        "Chapter one. The ship left the harbour at dawn,\nand the crew sang as the sails filled.\n\n"
        "Chapter two. By noon the coast was gone\nand only gulls followed them.")}]),
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_corpus_has_an_expectation_for_every_sample():
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_sample_is_detected_and_read_right(name):
    kind, dataset_format, rows, first = EXPECTED[name]
    dataset = load_dataset_file(CORPUS / name)

    assert (dataset.kind, dataset.format) == (kind, dataset_format)
    assert dataset.problems == [] and len(dataset.conversations) == rows
    assert dataset.conversations[0] == first


def test_details_of_the_samples_survive_reading():
    messages = load_dataset_file(CORPUS / "messages_multiturn.jsonl").conversations
    assert messages[2][0] == user("Count to three.")  # OpenAI content parts are joined
    assert load_dataset_file(CORPUS / "sharegpt_system_field.jsonl").conversations[1][0] == user("Is it long?")
    completion = load_dataset_file(CORPUS / "prompt_completion.jsonl").conversations[1]
    assert completion == [system("Finish proverbs."), user("Early to bed"), assistant("and early to rise.")]
    source = open_dataset(CORPUS / "qa.csv")
    assert source.mapping == {"question": "Question", "answer": "Answer"} and source.ignored_columns == ["Source"]
    samples = preview_dataset(source).samples
    assert [s.line for s in samples] == [2, 3, 4]  # a quoted cell may span lines; rows start where they start
    assert samples[2].conversation[0] == user("A question\r\nover two lines?")
    wrapped = preview_dataset(open_dataset(CORPUS / "qa_wrapped.json")).samples
    assert [s.line for s in wrapped] == [4, 5]


def test_multi_turn_samples_train_exactly_every_reply_token(tokenizer):
    for name in ("sharegpt_multiturn.json", "alpaca_history.jsonl", "messages_multiturn.jsonl"):
        conversation = load_dataset_file(CORPUS / name).conversations[0]
        example = tokenize_conversation(conversation, tokenizer, max_length=1024)
        trained = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
        replies = "".join(m["content"] + "<|im_end|>\n" for m in conversation if m["role"] == "assistant")
        assert tokenizer.decode(trained) == replies, name
        everything = tokenize_conversation(conversation, tokenizer, max_length=1024, train_on="all")
        assert everything.labels == everything.input_ids


def test_real_alpaca_data_is_read_with_its_two_empty_answers_found():
    if not CODE_ALPACA.is_file():
        pytest.skip(f"{CODE_ALPACA} is not here")
    source = open_dataset(CODE_ALPACA)
    report = scan_dataset(source)

    assert (source.kind, source.format) == ("json", "alpaca")
    assert (report.total_rows, report.good_rows, report.bad_rows) == (2017, 2015, 2)
    assert report.empty_answers == 2 and report.duplicates == 0
    assert all(p.reason == "'output' is empty" for p in report.problems)
    assert [p.line for p in report.problems] == [5 * 237 + 2, 5 * 1859 + 2]  # each row takes five lines


# --- column mapping ----------------------------------------------------------------------------

def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_unknown_columns_are_named_and_a_mapping_reads_them(tmp_path):
    path = _write_csv(tmp_path / "de.csv", ["Frage", "Antwort", "Kontext"],
                      [["Wie spät ist es?", "Zehn Uhr.", "Uhr"], ["Wo ist Berlin?", "In Deutschland.", ""]])
    with pytest.raises(StudioError, match=r"cannot tell the format from its columns \(Frage, Antwort, Kontext\)"):
        open_dataset(path)

    dataset = load_dataset_file(path, DataOptions(columns={"question": "Frage", "answer": "Antwort"}))
    assert dataset.format == "qa" and dataset.conversations[0] == [user("Wie spät ist es?"), assistant("Zehn Uhr.")]
    alpaca = load_dataset_file(path, DataOptions("alpaca", {"instruction": "Frage", "input": "Kontext",
                                                            "output": "Antwort"}))
    assert alpaca.conversations[0] == [user("Wie spät ist es?\n\nUhr"), assistant("Zehn Uhr.")]
    assert alpaca.conversations[1][0] == user("Wo ist Berlin?")


def test_a_chosen_format_overrides_detection_and_finds_the_rest_by_name(tmp_path):
    path = tmp_path / "both.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c", "answer": "a"}) + "\n", encoding="utf-8")
    assert open_dataset(path).format == "prompt_completion"
    chosen = open_dataset(path, DataOptions("qa", {"answer": "answer"}))
    assert chosen.mapping == {"question": "prompt", "answer": "answer"}
    assert load_dataset_file(path, DataOptions("qa", {"answer": "answer"})).conversations[0][1] == assistant("a")


@pytest.mark.parametrize(("options", "message"), [
    (DataOptions("qa", {"answr": "Answer"}), "the qa format has no field answr"),
    (DataOptions(columns={"question": "Question", "answer": "Reply"}), "has no column 'Reply' for answer"),
    (DataOptions("alpaca"), "no column for instruction, output in the alpaca format"),
    (DataOptions("text"), "no column for text"),
    (DataOptions("chatml"), "unknown format 'chatml'"),
    (DataOptions(columns={"colour": "Source"}), "unknown field(s) colour"),
])
def test_a_wrong_mapping_is_one_readable_line(options, message):
    with pytest.raises(StudioError) as caught:
        open_dataset(CORPUS / "qa.csv", options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_column_names_with_line_breaks_keep_messages_on_one_line(tmp_path):
    path = tmp_path / "odd.jsonl"
    rows = [{"ques\ntion": "a", "ans\nwer": "b"}, {"ques\ntion": "c", "ans\nwer": ""}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    with pytest.raises(StudioError) as caught:
        open_dataset(path)
    assert "columns (ques\\ntion, ans\\nwer)" in str(caught.value) and "\n" not in str(caught.value)

    dataset = load_dataset_file(path, DataOptions("qa", {"question": "ques\ntion", "answer": "ans\nwer"}))
    assert [p.reason for p in dataset.problems] == ["'ans\\nwer' is empty"]


# --- file types ---------------------------------------------------------------------------------

def test_parquet_tables_with_nested_messages_and_plain_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    chats = [{"messages": [user(f"Question {i}?"), assistant(f"Answer {i}.")], "id": i} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(chats), tmp_path / "chats.parquet", row_group_size=1000)
    source = open_dataset(tmp_path / "chats.parquet")
    report = scan_dataset(source)
    assert (source.kind, source.format, report.good_rows) == ("parquet", "messages", 3000)

    pq.write_table(pa.table({"instruction": ["Add 2 and 2.", "Say hi."], "output": ["4", ""]}),
                   tmp_path / "alpaca.parquet")
    dataset = load_dataset_file(tmp_path / "alpaca.parquet")
    assert dataset.conversations == [[user("Add 2 and 2."), assistant("4")]]
    assert [(p.where(), p.reason) for p in dataset.problems] == [("row 2", "'output' is empty")]

    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not really parquet PAR1")
    with pytest.raises(StudioError, match="broken.parquet is not a readable Parquet file"):
        open_dataset(tmp_path / "broken.parquet")


def test_json_files_are_read_by_their_content(tmp_path):
    lines = tmp_path / "lines.json"  # one object per line, though named .json
    lines.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n', encoding="utf-8")
    assert open_dataset(lines).kind == "jsonl" and len(load_dataset_file(lines).conversations) == 2

    single = tmp_path / "single.json"  # one pretty-printed row
    single.write_text(json.dumps({"instruction": "a", "output": "b"}, indent=2), encoding="utf-8")
    assert load_dataset_file(single).conversations == [[user("a"), assistant("b")]]

    several = tmp_path / "splits.json"
    several.write_text(json.dumps({"train": [{"text": "a"}], "test": [{"text": "b"}]}), encoding="utf-8")
    assert load_dataset_file(several).conversations == [[{"role": "text", "content": "a"}]]
    ambiguous = tmp_path / "ambiguous.json"
    ambiguous.write_text(json.dumps({"first": [{"text": "a"}], "second": [{"text": "b"}]}), encoding="utf-8")
    with pytest.raises(StudioError, match=r"holds several lists of rows \(first, second\)"):
        open_dataset(ambiguous)

    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"text": "a"},\n  {"text": "b"\n  {"text": "c"}\n]', encoding="utf-8")
    with pytest.raises(StudioError, match="broken.json is not valid JSON: Expecting ',' delimiter at line 4"):
        load_dataset_file(broken)


def test_bad_csv_rows_are_reported_by_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"\xef\xbb\xbfquestion,answer\n"
                     b"Good one?,Yes.\n"
                     b"Too,many,fields\n"
                     b"Caf\xe9?,Latin-1 bytes.\n"
                     b"No answer?,\n"
                     b"Last?,Indeed.\n")
    dataset = load_dataset_file(path)

    assert [c[0]["content"] for c in dataset.conversations] == ["Good one?", "Last?"]
    assert [(p.line, p.reason) for p in dataset.problems] == [
        (3, "has 3 fields; the header line has 2"),
        (4, "not UTF-8 text"),
        (5, "'answer' is empty"),
    ]


def test_plain_text_is_one_document_per_line_or_chunks_that_keep_every_word(tmp_path):
    # Short paragraphs share chunks; the one of 400 words (about 4,000 characters) is cut in two.
    paragraphs = [" ".join(f"word{p}_{w}" for w in range(400 if p == 5 else 20 + 9 * p)) for p in range(12)]
    path = tmp_path / "book.txt"
    path.write_text("\n\n".join(p + " " for p in paragraphs), encoding="utf-8")  # editors leave trailing spaces

    chunks = load_dataset_file(path).conversations
    assert open_dataset(path).text_split == "chunks"
    texts = [c[0]["content"] for c in chunks]
    assert all(len(t) <= CHUNK_CHARS for t in texts) and len(texts) < len(paragraphs)
    assert " ".join(texts).split() == " ".join(paragraphs).split()

    lines = load_dataset_file(path, DataOptions(text_split="lines")).conversations
    assert [c[0]["content"].strip() for c in lines] == paragraphs
    small = list(TextReader(path, "chunks", chunk_chars=300).items())
    assert all(len(row.value["text"]) <= 300 for row in small) and small[1].line > 1


def test_a_folder_reads_every_dataset_file_in_it_and_names_the_file_of_each_problem(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "shards"
    (folder / "more").mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2"}\n', encoding="utf-8")
    _write_csv(folder / "b.csv", ["question", "answer"], [["q3", "a3"]])
    pq.write_table(pa.table({"question": ["q4", "q5"], "answer": ["a4", ""]}), folder / "more" / "c.parquet")
    (folder / "broken.json").write_text("[{", encoding="utf-8")
    (folder / "README.md").write_text("# Shards\n", encoding="utf-8")
    (folder / ".hidden.jsonl").write_text("junk\n", encoding="utf-8")

    source = open_dataset(folder)
    dataset = load_dataset_file(folder)
    assert (source.kind, source.format, source.skipped_files) == ("folder", "qa", ["README.md"])
    assert [c[0]["content"] for c in dataset.conversations] == ["q1", "q3", "q4"]
    assert [p.where() for p in dataset.problems] == ["a.jsonl line 2", "broken.json", "more/c.parquet row 2"]
    # Each row says what its number counts: a line of a text file, a row of a table.
    assert [(s.file, s.unit, s.line) for s in source.items() if isinstance(s, Sample)] == \
        [("a.jsonl", "line", 1), ("b.csv", "line", 2), ("more/c.parquet", "row", 1)]
    assert "not valid JSON" in dataset.problems[1].reason


def test_a_hub_id_is_tried_only_when_no_such_path_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StudioError, match="tatsu-lab/alpaca is not a file or folder here, and the Hugging Face "
                                          "hub is switched off"):
        open_dataset("tatsu-lab/alpaca")
    with pytest.raises(StudioError, match="dataset not found: .*missing/train.jsonl"):
        open_dataset(tmp_path / "missing" / "train.jsonl")


def test_an_unknown_file_type_is_named(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(StudioError, match=r"unknown file type \.xlsx; LoRA Studio reads \.jsonl, \.json, \.csv"):
        open_dataset(path)


# --- the command line ---------------------------------------------------------------------------

def _inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio.launch", "data", "inspect", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_data_inspect_reports_format_counts_lengths_and_first_problems(tiny_model_dir, tmp_path, capsys):
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}. " * (1 + 5 * (i % 3))}
            for i in range(30)]
    lines = [json.dumps(r) for r in rows] + ["{broken", json.dumps({"question": "Empty?", "answer": ""})]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # Against a model's tokenizer in this process (a child would add only its imports of transformers);
    # the two below run as the user runs them.
    code, out, err = run_cli(["data", "inspect", path, "--model", tiny_model_dir, "--max-length", "80",
                              "--val-fraction", "0.1", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert (report["kind"], report["format"]) == ("jsonl", "qa")
    assert (report["rows"], report["good_rows"], report["bad_rows"], report["empty_answers"]) == (32, 30, 2, 1)
    assert report["problems"] == [
        {"line": 31, "file": "", "unit": "line", "reason": "not valid JSON (Expecting property name enclosed in "
                                                           "double quotes at column 2)"},
        {"line": 32, "file": "", "unit": "line", "reason": "'answer' is empty"}]
    assert report["validation"] == {"fraction": 0.1, "train_rows": 27, "validation_rows": 3}
    assert set(report["token_percentiles"]) == {"p50", "p90", "p95", "p99", "max"}
    # A third of the answers are eleven sentences long: those rows run past 80 tokens.
    assert (report["truncated"], report["truncated_share"]) == (10, 0.3333)
    assert report["token_percentiles"]["max"] > 80 > report["token_percentiles"]["p50"]

    mapped = _inspect(str(CORPUS / "qa.csv"), "--columns", "question=Answer,answer=Question", "--json")
    assert json.loads(mapped.stdout)["mapping"] == {"question": "Answer", "answer": "Question"}
    wrong = _inspect(str(CORPUS / "qa.csv"), "--columns", "question=Nope")
    assert wrong.returncode != 0 and wrong.stderr.strip().count("\n") == 0
    assert "has no column 'Nope' for question" in wrong.stderr


# --- fuzz: random rows and random bytes through every parser ------------------------------------

_KEYS = ["messages", "conversations", "instruction", "input", "output", "system", "history", "prompt",
         "completion", "question", "answer", "query", "response", "text", "id"]
_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=15)
_json_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_message = st.fixed_dictionaries({
    "role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": st.text(max_size=15)})
_sharegpt_message = st.fixed_dictionaries({
    "from": st.sampled_from(["system", "human", "gpt", "bot"]), "value": st.text(max_size=15)})
_cell = st.text(max_size=15) | st.lists(_message, max_size=4) | st.lists(_sharegpt_message, max_size=4) | _json_values
_random_row = st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), _cell, max_size=4)
_words = st.text(max_size=15).filter(str.strip)
# Well-formed rows of each format too, or nearly every fuzzed file would be refused before its rows are read.
_good_rows = [
    st.builds(lambda q, a: {"messages": [user(q), assistant(a)]}, _words, _words),
    st.builds(lambda q, a: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
              _words, _words),
    st.builds(lambda q, i, a: {"instruction": q, "input": i, "output": a}, _words, st.text(max_size=10), _words),
    st.builds(lambda q, a: {"prompt": q, "completion": a}, _words, _words),
    st.builds(lambda q, a: {"question": q, "answer": a}, _words, _words),
    st.builds(lambda t: {"text": t}, _words),
]
_rows = st.lists(_random_row, min_size=1, max_size=6) | st.sampled_from(_good_rows).flatmap(
    lambda good: st.lists(good | good | _random_row, min_size=1, max_size=6))


def _as_bytes(rows: list[dict], layout: str, path: Path) -> bytes:
    if layout == "jsonl":
        return "\n".join(json.dumps(row) for row in rows).encode()
    if layout == "json":
        return json.dumps(rows, indent=1).encode()
    if layout == "wrapped":
        return json.dumps({"data": rows}).encode()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if layout == "tsv" else ",")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([json.dumps(row[c]) if not isinstance(row.get(c, ""), str) else row.get(c, "")
                         for c in columns])
    return buffer.getvalue().encode()


def _check(path: Path, tokenizer) -> None:
    """A dataset whose counts add up, or one StudioError line; never anything else."""
    try:
        source = open_dataset(path)
        report = scan_dataset(source, tokenizer)
        dataset = load_dataset_file(path)
    except StudioError as error:
        assert "\n" not in str(error)
        return
    assert report.total_rows == report.good_rows + report.bad_rows
    assert len(report.token_lengths) == report.good_rows
    assert 0 <= report.duplicates < max(1, report.good_rows) and report.empty_answers <= report.bad_rows
    # The tokenizer pass may refuse rows the template cannot render; reading alone never does.
    assert len(dataset.conversations) >= report.good_rows and dataset.total_rows == report.total_rows


_SUFFIX = {"jsonl": ".jsonl", "json": ".json", "wrapped": ".json", "csv": ".csv", "tsv": ".tsv"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows, layout=st.sampled_from(sorted(_SUFFIX)))
def test_fuzzed_rows_in_every_text_layout_give_a_dataset_or_a_studio_error(tmp_path, tokenizer, rows, layout):
    path = tmp_path / f"fuzz{_SUFFIX[layout]}"
    path.write_bytes(_as_bytes(rows, layout, path))
    _check(path, tokenizer)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_rows)
def test_fuzzed_rows_in_parquet_give_a_dataset_or_a_studio_error(tmp_path, tokenizer, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
        pq.write_table(table, tmp_path / "fuzz.parquet")
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        assume(False)  # rows Arrow cannot hold in one table never reach a Parquet file
    _check(tmp_path / "fuzz.parquet", tokenizer)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       suffix=st.sampled_from([".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet", ""]))
def test_random_bytes_under_every_name_give_a_dataset_or_a_studio_error(tmp_path, tokenizer, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    _check(path, tokenizer)


def test_a_folder_dataset_never_reads_a_link_to_a_file_outside_it(tmp_path):
    from engine.data.dataset import DataOptions, open_dataset

    secret = tmp_path / "secret.txt"
    secret.write_text("the password is hunter2\n")
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "rows.jsonl").write_text('{"question": "hi", "answer": "arr"}\n')
    (folder / "more.txt").symlink_to(secret)
    source = open_dataset(str(folder), DataOptions())
    assert "more.txt" in source.skipped_files
    assert all("hunter2" not in str(item) for item in source.items())
