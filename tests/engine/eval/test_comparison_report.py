"""The comparison report, rendered from results documents written by hand, with the candidates' costs
read from run folders and adapter folders as training leaves them (no model is loaded)."""

from __future__ import annotations

import json
import re

import pytest
from eval_documents import candidate, example, judged, results_document
from lora_adapters import empty_safetensors
from run_folders import T0, started, write_run

from engine.errors import StudioError
from engine.eval.report import write_report
from engine.paths import adapters_dir
from engine.run.events import RunFinished, StepMetrics

GiB = 2**30


def _trained(name: str, peak_gib: float, method: str):
    """An adapter folder whose run measured ``peak_gib`` at its one step."""
    run = write_run(f"20260101-10000{len(name)}-{name}", [
        started(T0, total=1),
        StepMetrics(time=T0 + 1, step=1, total_steps=1, epoch=1.0, loss=1.0, learning_rate=1e-3,
                    tokens_per_second=250.0, memory_allocated=int(peak_gib * GiB), elapsed_s=1.0),
        RunFinished(time=T0 + 95, status="completed", step=1)])
    folder = adapters_dir() / name
    folder.mkdir()
    empty_safetensors(folder / "adapter_model.safetensors")
    (folder / "studio.json").write_text(json.dumps({"method": method, "run_dir": str(run)}), encoding="utf-8")
    return folder


@pytest.fixture
def document():
    pirate, qlora = _trained("pirate", 1.5, "lora"), _trained("pirate-q", 0.75, "qlora")
    examples = [
        example(0, "Who are you?", "A pirate, arr.", {"base": ("I am an assistant.", 0.1, None),
                                                       "pirate": ("A pirate, arr!", 0.9, "win"),
                                                       "pirate-q": ("<script>alert(1)</script>", 0.0, "loss")}),
        example(1, "Where is the ship?", "At sea.", {"base": ("At sea.", 1.0, None),
                                                     "pirate": ("Ashore, matey.", 0.0, "loss"),
                                                     "pirate-q": ("At sea, arr.", 0.8, "win")}),
    ]
    return results_document([
        candidate("base", None, {"rouge_l": 0.21, "loss": 2.31, "bleu": 12.3}),
        candidate("pirate", pirate, {"rouge_l": 0.58, "loss": 1.12, "bleu": 30.25},
                  judge=judged(0.675, 0.46, 0.84), forgetting={"kl": 0.1234, "changed": 0.31, "prompts": 100},
                  speed={"adapter_tokens_per_s": 21.0, "merged_tokens_per_s": 33.5}),
        candidate("pirate-q", qlora, {"rouge_l": 0.49, "loss": 1.3, "bleu": 25.0},
                  judge=judged(0.55, 0.33, 0.76), forgetting={"kl": 0.09, "changed": 0.2, "prompts": 100}),
    ], examples=examples)


def test_html_report_holds_the_table_the_plot_and_the_examples(document, tmp_path):
    output = write_report([document], tmp_path / "report.html")
    page = output.read_text(encoding="utf-8")
    rows = {row.split("</td>")[0].split(">")[-1]: row for row in re.findall(r"<tr><td.*?</tr>", page)}
    assert set(rows) == {"base", "pirate", "pirate-q"}
    # Quality with the best of each column marked, the judge with its interval, forgetting, costs.
    assert '<td class="best">0.580</td>' in rows["pirate"] and "<td>2.310</td>" in rows["base"]
    assert "0.68 (0.46–0.84)" in rows["pirate"] and "12 won, 3 tied, 5 lost of 20" in rows["pirate"]
    assert "0.1234" in rows["pirate"] and "31%" in rows["pirate"]
    assert "1.5 GiB" in rows["pirate"] and '<td class="best">768.0 MiB</td>' in rows["pirate-q"]
    assert "1 min 35 s" in rows["pirate"] and "<td>250</td>" in rows["pirate"]  # wall time and tokens/s
    assert "<td>21.0</td><td>33.5</td>" in rows["pirate"] and rows["pirate-q"].endswith("<td>—</td><td>—</td></tr>")
    assert "ROUGE-L ↑" in page and "loss ↓" in page and "qlora" in rows["pirate-q"]

    [svg] = re.findall(r"<svg.*?</svg>", page, re.S)
    assert svg.count("<circle") == 2 and "base 0.21" in svg  # one point per trained candidate, the base a line
    assert "peak training memory (GiB)" in svg and ">pirate-q</text>" in svg
    assert "http" not in page and "<script>" not in page and "&lt;script&gt;alert(1)" in page
    assert "Where pirate beat the base" in page and "Where pirate-q fell behind" in page


def test_markdown_report_with_its_plot_beside_it(document, tmp_path):
    for item in document["examples"]:  # no judge: the examples are picked by their ROUGE-L against the base's
        for answer in item["answers"].values():
            answer["judge"] = None
    output = write_report([document], tmp_path / "my report.md")
    text = output.read_text(encoding="utf-8")
    assert "#### Where pirate beat the base\n\n**example 0 (line 1)**: ROUGE-L 0.100 → 0.900" in text
    assert "#### Where pirate fell behind\n\n**example 1 (line 2)**: ROUGE-L 1.000 → 0.000" in text
    [line] = [line for line in text.splitlines() if line.startswith("| pirate |")]
    assert "| **0.580** |" in line and "| 0.68 (0.46–0.84) |" in line and "| **30.2** |" in line
    assert "![quality against peak training memory](<my report-plot-1.svg>)" in text
    svg = (tmp_path / "my report-plot-1.svg").read_text(encoding="utf-8")
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.count("<circle") == 2
    assert "> &lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_bad_input_is_one_line_and_writes_nothing(document, tmp_path):
    other_base = {**document, "model": "other", "model_fingerprint": "fp-other", "created": "2026-12-07T00:00:00"}
    for docs, output, refusal in (
            ([], "r.html", "there are no evaluation results"),
            ([document], "r.pdf", "written as .html or .md: r.pdf is neither"),
            ([document, other_base], "r.html", "come from different base models \\(other, tiny\\)"),
            ([{"candidates": []}], "r.md", "not an evaluation's results"),
            ([document], "missing/r.html", "does not exist")):
        with pytest.raises(StudioError, match=refusal) as refused:
            write_report(docs, tmp_path / output)
        assert "\n" not in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["studio-home"]
