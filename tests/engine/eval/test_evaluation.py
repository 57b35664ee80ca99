"""An evaluation end to end on the tiny model: the set read from a dataset, the candidates
checked before loading, every candidate's answers scored, the document and the CLI's output."""

from __future__ import annotations

import json
import math
import threading

import pytest

from engine.chat.session import ChatSession
from engine.cli.main import main
from engine.errors import StudioError
from engine.eval.candidates import resolve_candidates
from engine.eval.evalset import load_evalset
from engine.eval.metrics import rouge_l
from engine.eval.runner import EvalSettings, EvalStopped, evaluate
from engine.eval.scoring import plan_scores
from lora_adapters import library_adapter, write_peft_adapter

ROWS = [("What is the capital of France?", "Paris is the capital of France."),
        ("Say hello.", "Hello! How are you today?"),
        ("Add two numbers in Python.", "def add(a, b): return a + b"),
        ("What does the fox do?", "The quick brown fox jumps over the lazy dog.")]


def _write_rows(path, rows=ROWS, **extra):
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                         **{key: values[i] for key, values in extra.items()}}) for i, (q, a) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write_rows(tmp_path_factory.mktemp("evalset") / "rows.jsonl")


@pytest.fixture
def pirate(tiny_model_dir):
    return library_adapter(tiny_model_dir, "pirate")


def test_the_set_is_the_prompts_and_their_reference_answers(dataset, tmp_path):
    evalset = load_evalset(dataset=dataset)
    assert [example.reference for example in evalset.examples] == [answer for _question, answer in ROWS]
    assert evalset.examples[1].prompt == [{"role": "user", "content": "Say hello."}]
    assert evalset.examples[1].where == "line 2" and evalset.has_references
    # The hash is the content's: the same rows elsewhere are the same set; one changed answer is another.
    assert load_evalset(dataset=_write_rows(tmp_path / "copy.jsonl")).hash == evalset.hash
    changed = _write_rows(tmp_path / "changed.jsonl", [*ROWS[:3], ("What does the fox do?", "It sleeps.")])
    assert load_evalset(dataset=changed).hash != evalset.hash
    assert len(load_evalset(dataset=dataset, limit=2).examples) == 2


def test_sets_that_cannot_be_evaluated_are_refused_in_one_line(dataset, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("Plain text only.\n\nAnother paragraph.\n", encoding="utf-8")
    with pytest.raises(StudioError, match="plain text, which holds no prompts"):
        load_evalset(dataset=text)
    with pytest.raises(StudioError, match="has no column 'answer'; its columns are messages"):
        load_evalset(dataset=dataset, label_column="answer")
    with pytest.raises(StudioError, match="records no held-out rows"):
        load_evalset(run_dir=tmp_path)
    with pytest.raises(StudioError, match="give one of them"):
        load_evalset()


def test_accuracy_takes_labels_from_a_column_or_from_the_references_by_regex(tmp_path):
    rows = [("2 + 2?", "The answer is 4."), ("3 + 4?", "The answer is 7.")]
    labelled = load_evalset(dataset=_write_rows(tmp_path / "sums.jsonl", rows, answer=["4", "7"]),
                            label_column="answer")
    assert [example.label for example in labelled.examples] == ["4", "7"]
    assert "accuracy" in plan_scores(labelled).metrics
    by_regex = plan_scores(load_evalset(dataset=tmp_path / "sums.jsonl"), answer_regex=r"answer is (\d+)")
    assert by_regex.labels == ["4", "7"]
    with pytest.raises(StudioError, match="accuracy needs a label for every example"):
        plan_scores(load_evalset(dataset=tmp_path / "sums.jsonl"), ["accuracy"])


def test_a_set_without_references_scores_nothing_against_them_and_says_so(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n"
                            for q, _a in ROWS), encoding="utf-8")
    plan = plan_scores(load_evalset(dataset=path))
    assert plan.metrics == ["answer_length"]
    assert "no reference answer" in plan.notes[0] and "the judge and the forgetting check still run" in plan.notes[0]


def test_an_adapter_for_another_base_is_refused_naming_both(tiny_model_dir, tmp_path, pirate):
    from tiny_model import build_tiny_model

    other = build_tiny_model(tmp_path / "other-base", seed=5)
    with pytest.raises(StudioError, match=f"adapter 'pirate' was trained on {tiny_model_dir}, not on {other}"):
        resolve_candidates(str(other), ["pirate"])
    with pytest.raises(StudioError, match="unknown adapter 'nobody'"):
        resolve_candidates(str(tiny_model_dir), ["nobody"])
    labels = [candidate.label for candidate in resolve_candidates(str(tiny_model_dir), ["pirate", "pirate"])]
    assert labels == ["base", "pirate", "pirate (2)"]


def test_each_candidate_answers_every_prompt_and_is_scored_on_its_answers(tiny_model_dir, dataset, pirate):
    evalset = load_evalset(dataset=dataset)
    candidates = resolve_candidates(str(tiny_model_dir), ["pirate"])
    progress: list[tuple[int, int]] = []
    settings = EvalSettings(max_new_tokens=12, batch_size=3, forgetting_prompts=3)
    document = evaluate(str(tiny_model_dir), candidates, evalset, settings,
                        progress=lambda done, total, _message: progress.append((done, total)))
    assert [c["label"] for c in document["candidates"]] == ["base", "pirate"]
    # 2 x (4 answers + 4 loss rows), 3 base answers + 2 x 3 forgetting steps, 2 x 4 judgements.
    assert document["set"]["hash"] == evalset.hash and progress[-1] == (33, 33)
    assert all(done <= total for done, total in progress) and [d for d, _t in progress] == sorted(d for d, _t in progress)
    base, tuned = document["candidates"]
    assert base["judge"] is None and base["forgetting"] is None
    assert tuned["judge"]["comparisons"] == 4 and tuned["judge"]["low"] <= tuned["judge"]["win_rate"] <= tuned["judge"]["high"]
    assert [e["answers"]["pirate"]["judge"] for e in document["examples"]].count(None) == 0
    assert tuned["forgetting"]["prompts"] == 3 and tuned["forgetting"]["kl"] > 0
    for candidate in document["candidates"]:
        assert candidate["scores"]["perplexity"] == pytest.approx(math.exp(candidate["scores"]["loss"]))
    assert base["scores"]["loss"] != tuned["scores"]["loss"]
    # The answers are the ones a chat with each candidate gives; their scores are computed from them.
    chat = ChatSession(str(tiny_model_dir))
    chat.set_adapter("pirate")
    first = document["examples"][0]
    assert first["answers"]["pirate"]["text"] == chat.generate(evalset.examples[0].prompt, max_new_tokens=12).reply
    chat.close()
    for candidate in document["candidates"]:
        label = candidate["label"]
        per_example = [rouge_l(e["answers"][label]["text"], e["reference"]) for e in document["examples"]]
        assert candidate["scores"]["rouge_l"] == pytest.approx(sum(per_example) / len(per_example))
        assert candidate["signatures"]["bleu"].startswith("nrefs:1|")
    assert document["candidates"][1]["speed"]["merged_tokens_per_s"] > 0


def test_stopping_an_evaluation_keeps_nothing(tiny_model_dir, dataset):
    stop = threading.Event()
    stop.set()
    with pytest.raises(EvalStopped, match="evaluation stopped: nothing was saved"):
        evaluate(str(tiny_model_dir), resolve_candidates(str(tiny_model_dir)), load_evalset(dataset=dataset),
                 EvalSettings(max_new_tokens=4), stop_event=stop)


def test_cli_prints_a_json_line_per_example_then_the_scoreboard(tiny_model_dir, dataset, tmp_path, capsys,
                                                              studio_home):
    adapter = write_peft_adapter(tiny_model_dir, tmp_path / "folder-adapter")
    other = write_peft_adapter(tiny_model_dir, tmp_path / "other-adapter", seed=9)
    code = main(["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--include-base",
                 "--combination", str(adapter), str(other),
                 "--dataset", str(dataset), "--metrics", "rouge_l", "exact_match", "--max-new-tokens", "6",
                 "--forgetting-prompts", "2", "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and len(lines) == len(ROWS) + 1
    assert set(lines[0]["example"]["answers"]) == {"base", "folder-adapter", "folder-adapter + other-adapter"}
    board = lines[-1]["scoreboard"]
    assert [(c["label"], c["kind"]) for c in board["candidates"]] == [
        ("base", "base"), ("folder-adapter", "adapter"), ("folder-adapter + other-adapter", "combination")]
    combined = (line["example"]["answers"] for line in lines[:-1])
    assert any(a["folder-adapter + other-adapter"]["text"] != a["folder-adapter"]["text"] for a in combined)
    assert set(board["candidates"][0]["scores"]) == {"rouge_l", "exact_match"}
    assert board["candidates"][1]["forgetting"]["prompts"] == 2 and board["candidates"][1]["judge"]["comparisons"] == 4
    # The whole document is kept, and the report is written from it.
    (results,) = (studio_home / "evaluations").glob("*.json")
    assert json.loads(results.read_text())["candidates"][1]["scores"] == board["candidates"][1]["scores"]
    assert main(["eval", "report", str(results), "--output", str(tmp_path / "report.html")]) == 0
    assert "folder-adapter" in (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "rouge_l", "bleu_score"], "unknown metric 'bleu_score': the metrics are loss, perplexity"),
    (["--answer-regex", "(unclosed"], "the answer regex '(unclosed' does not compile"),
    (["--adapter", "nobody"], "unknown adapter 'nobody'"),
    (["--metrics", "accuracy"], "accuracy needs a label for every example"),
])
def test_cli_refuses_bad_input_in_one_line_before_loading(tiny_model_dir, dataset, capsys, extra, message):
    code = main(["eval", "--model", str(tiny_model_dir), "--include-base", "--dataset", str(dataset), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and message in err and "\n" not in err
