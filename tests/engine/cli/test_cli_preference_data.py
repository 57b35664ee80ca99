"""``lora-studio data inspect`` on preference files, through the real command line (the report
against a model's tokenizer in this process: a child would add only its imports of transformers)."""

from __future__ import annotations

import json

from helpers import ROOT, run_cli
from test_cli import lora_studio

DEMO = ROOT / "tests" / "data" / "preference" / "dpo_en_demo_slice.json"


def test_data_inspect_reports_the_preference_layout_and_its_counts(tiny_model_dir, tmp_path, capsys):
    code, out, err = run_cli(["data", "inspect", DEMO, "--model", tiny_model_dir, "--max-length", "256", "--json"],
                             capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["layout"] == "sharegpt_preference" and report["objective"] == "dpo"
    assert (report["rows"], report["pairs"], report["identical_pairs"], report["bad_rows"]) == (20, 20, 0, 0)
    assert 0 < report["prompts_cut_off"] < 20 and report["trained_rows"] == 20 - report["prompts_cut_off"]

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in (
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."},
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"},
        {"prompt": "Hi", "chosen": "Hello!"})))
    text = lora_studio("data", "inspect", str(pairs))
    assert text.returncode == 0, text.stderr
    assert "Pairs (prompt / chosen / rejected)" in text.stdout
    assert "3 rows (1 pair, 1 bad); identical pairs: 1" in text.stdout and "line 3: 'rejected' is missing" in text.stdout
