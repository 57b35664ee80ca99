"""Preference files as a user brings them: each layout detected and read as the pairs TRL trains
on, token ids equal to a real DPOTrainer's, and each bad file refused with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ROOT

from engine.data.dataset import DataOptions, open_dataset
from engine.data.preference import (check_preferences, objective_problem, preference_counts, read_preferences,
                                     tokenise_pair)
from engine.errors import StudioError

DEMO = ROOT / "tests" / "data" / "preference" / "dpo_en_demo_slice.json"
_HI = [{"role": "user", "content": "What is the capital of France?"}]
_PAIR = {"prompt": _HI, "chosen": [{"role": "assistant", "content": "Paris."}],
         "rejected": [{"role": "assistant", "content": "London, I think."}]}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_each_layout_is_read_as_the_pairs_trl_trains_on(tmp_path):
    system = {"role": "system", "content": "Be brief."}
    files = {
        # Intel/orca_dpo_pairs: system / question / chosen / rejected as text
        "preference": [{"system": "Be brief.", "question": _HI[0]["content"], "chosen": "Paris.",
                        "rejected": "London, I think."}],
        # HH-RLHF: whole transcripts sharing their start
        "preference_conversations": [{"chosen": f"\n\nHuman: {_HI[0]['content']}\n\nAssistant: Paris.",
                                      "rejected": f"\n\nHuman: {_HI[0]['content']}\n\nAssistant: London, I think.",
                                      "system": "Be brief."}],
        "sharegpt_preference": [{"conversations": [{"from": "system", "value": "Be brief."},
                                                   {"from": "human", "value": _HI[0]["content"]}],
                                 "chosen": {"from": "gpt", "value": "Paris."},
                                 "rejected": {"from": "gpt", "value": "London, I think."}}],
    }
    for layout, rows in files.items():
        source = open_dataset(_write(tmp_path / f"{layout}.jsonl", rows))
        assert source.format == layout
        assert read_preferences(source, objective="dpo").rows == [{**_PAIR, "prompt": [system, *_HI]}]
    # KTO's labelled answers, and a pair file given to KTO: unpaired, both halves with the pair's hash
    kto = open_dataset(_write(tmp_path / "kto.jsonl", [{"prompt": _HI[0]["content"], "completion": "Paris.",
                                                       "label": True}]))
    assert kto.format == "unpaired_preference"
    assert read_preferences(kto, objective="kto").rows == [{"prompt": _HI, "completion": _PAIR["chosen"],
                                                            "label": True}]
    unpaired = read_preferences(open_dataset(tmp_path / "preference.jsonl"), objective="kto")
    assert [row["label"] for row in unpaired.rows] == [True, False] and len(set(unpaired.hashes)) == 1
    # A column mapping, as for SFT
    mapped = open_dataset(_write(tmp_path / "mapped.jsonl", [{"ask": _HI[0]["content"], "good": "Paris.",
                                                             "bad": "London, I think."}]),
                          DataOptions(columns={"prompt": "ask", "chosen": "good", "rejected": "bad"}))
    assert mapped.format == "preference" and read_preferences(mapped, objective="orpo").rows == [_PAIR]
    # Code answers that look like JSON lists are answers, not message lists (code_alpaca has them)
    code = ['[0, 1, 3]', '[{"name": "Jo", "age": 30}]']
    coded = open_dataset(_write(tmp_path / "code.jsonl", [{"prompt": "List it.", "chosen": code[0], "rejected": code[1]}]))
    assert [row["chosen"][0]["content"] for row in read_preferences(coded, objective="dpo").rows] == code[:1]


def test_the_public_sharegpt_file_is_detected_and_counted(tokenizer):
    source = open_dataset(DEMO)
    assert source.format == "sharegpt_preference"
    counts = preference_counts(source, tokenizer, objective="dpo", max_length=256, bad_rows="stop")
    assert (counts.total_rows, counts.bad_rows, counts.identical) == (20, 0, 0)
    assert counts.prompt_cut > 0 and counts.rows == 20 - counts.prompt_cut  # long prompts fill 256 tokens
    assert preference_counts(source, tokenizer, objective="dpo", max_length=4096).prompt_cut == 0


def test_token_ids_are_those_of_trls_dpo_trainer(tiny_model_dir, tokenizer, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    rows = read_preferences(open_dataset(DEMO), objective="dpo").rows[:4]
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_length=4096, report_to=[], use_cpu=True,
                     per_device_train_batch_size=1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    theirs = [(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) for row in trainer.train_dataset]
    assert [tokenise_pair(tokenizer, row) for row in rows] == theirs
    # A model without a chat template renders with ChatML, as SFT trains it (its BOS first)
    from engine.data.rendering import CHATML_TEMPLATE

    bare = type(tokenizer).from_pretrained(tiny_model_dir)
    bare.chat_template = None
    prompt_ids, chosen_ids, _rejected = tokenise_pair(bare, rows[0])
    whole = bare.apply_chat_template(rows[0]["prompt"] + rows[0]["chosen"], chat_template=CHATML_TEMPLATE,
                                     tokenize=True, return_dict=True)["input_ids"]
    assert prompt_ids[0] == bare.bos_token_id and prompt_ids + chosen_ids == list(whole)


def test_bad_files_are_refused_with_one_line(tmp_path):
    def refusal(rows: list, objective: str = "dpo", **options) -> str:
        with pytest.raises(StudioError) as caught:
            read_preferences(open_dataset(_write(tmp_path / "bad.jsonl", rows), DataOptions(**options)),
                             objective=objective)
        message = str(caught.value)
        assert "\n" not in message
        return message

    prompt = _HI[0]["content"]
    assert "one answer" in refusal([{"prompt": prompt, "chosen": "Paris."}] * 2)
    assert "3 of 3 rows have only one answer" in refusal([{"prompt": prompt, "chosen": "Paris.", "rejected": ""}] * 3)
    message = refusal([{"prompt": prompt, "chosen": "Paris.", "rejected": "Paris."}] * 3)
    assert "every pair" in message and "same chosen and rejected" in message and "supervised" in message
    message = refusal([{"prompt": prompt, "completion": "Paris.", "label": "good"}] * 2, "kto",
                      format="unpaired_preference")
    assert "2 of 2 rows have a label that is not true or false; first at line 1" in message
    assert "supervised fine-tuning cannot learn" in objective_problem("sharegpt_preference", "sft")
    assert "train it with supervised fine-tuning" in refusal([{"messages": _HI + _PAIR["chosen"]}])
    assert "train it with KTO" in refusal([{"prompt": prompt, "completion": "Paris.", "label": True}])
    # bad rows counted with their lines; skipped, or stopping the run
    rows = [{"prompt": prompt, "completion": "Paris.", "label": True},
            {"prompt": prompt, "completion": "Rome.", "label": "no"}]
    source = open_dataset(_write(tmp_path / "kto.jsonl", rows))
    read = read_preferences(source, objective="kto")
    assert (read.bad_rows, [problem.line for problem in read.problems]) == (1, [2])
    with pytest.raises(StudioError, match="1 of 2 rows are bad; first at line 2"):
        read_preferences(source, objective="kto", bad_rows="stop")


class _Counting:
    """The real tokenizer, counting the texts it tokenises (what the pre-run check costs)."""

    def __init__(self, tokenizer):
        self._tokenizer, self.calls = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)


def test_the_pre_run_check_tokenises_up_to_the_first_pair_that_trains_and_refuses_as_the_run_would(tokenizer,
                                                                                                 tmp_path):
    prompt = _HI[0]["content"]
    good = {"prompt": prompt, "chosen": "Paris.", "rejected": "London, I think."}
    counting = _Counting(tokenizer)
    source = open_dataset(_write(tmp_path / "pairs.jsonl", [good] * 500))
    check_preferences(source, counting, objective="dpo", max_length=256)
    assert counting.calls == 3  # one pair: its prompt, and prompt + each answer
    preference_counts(source, counting, objective="kto", max_length=256)
    assert counting.calls > 3 * 500  # the counts the Data page and data inspect show read every row

    def refusal(rows: list, objective: str = "dpo", *, max_length: int = 256, bad_rows: str = "skip",
                **options) -> str:
        with pytest.raises(StudioError) as caught:  # opening the file may refuse it already (one answer column)
            check_preferences(open_dataset(_write(tmp_path / "bad.jsonl", rows), DataOptions(**options)), tokenizer,
                              objective=objective, max_length=max_length, bad_rows=bad_rows)
        assert "\n" not in str(caught.value)
        return str(caught.value)

    def read_refusal(rows: list, objective: str = "dpo", **options) -> str:
        with pytest.raises(StudioError) as caught:
            preference_counts(open_dataset(_write(tmp_path / "bad.jsonl", rows), DataOptions(**options)), tokenizer,
                              objective=objective, max_length=256)
        return str(caught.value)

    # Each file that cannot train: the same line the run (and data inspect) gives.
    bad_files = [
        ([{**good, "rejected": "Paris."}] * 3, "dpo", {}),  # identical in every row
        ([{"prompt": prompt, "chosen": "Paris."}] * 2, "dpo", {}),  # one answer column
        ([{**good, "rejected": ""}] * 3, "dpo", {}),  # one answer in every row
        ([{"prompt": prompt, "completion": "Paris.", "label": "good"}] * 2, "kto", {"format": "unpaired_preference"}),
        ([{"messages": _HI + _PAIR["chosen"]}], "dpo", {}),  # an SFT file given to DPO
        ([{"prompt": prompt, "completion": "Paris.", "label": True}], "orpo", {}),  # KTO's answers given to ORPO
        ([good], "sft", {}),  # a preference file given to SFT
    ]
    for rows, objective, options in bad_files:
        assert refusal(rows, objective, **options) == read_refusal(rows, objective, **options)
    # Every prompt filling max length: read to the end, then refused.
    assert "the prompt of every one fills max length 4 (first at line 1" in refusal([good] * 3, max_length=4)
    # A bad row under "stop", past the first pair that trains; under "skip" the file trains.
    rows = [good, {**good, "rejected": ""}, good]
    assert "has bad rows; first at line 2: 'rejected' is empty" in refusal(rows, bad_rows="stop")
    check_preferences(open_dataset(tmp_path / "bad.jsonl"), tokenizer, objective="dpo", max_length=256)
    # One pair in a file of identical ones is something to learn.
    check_preferences(open_dataset(_write(tmp_path / "one.jsonl", [{**good, "rejected": "Paris."}] * 3 + [good])),
                      tokenizer, objective="dpo", max_length=256)
