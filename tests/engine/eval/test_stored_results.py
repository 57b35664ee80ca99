"""An evaluation's results kept with the adapters it scored (on a real library entry of the tiny
model), read back for the Adapters page and a report; and what each candidate cost, read from a run
folder as training leaves it."""

from __future__ import annotations

import json
import shutil

import pytest
from eval_documents import SET_HASH, candidate, results_document
from lora_adapters import library_adapter
from run_folders import T0, started, write_run

from engine.adapters.evaluations import read_evaluations
from engine.adapters.library import list_adapters, read_adapter_meta
from engine.errors import StudioError
from engine.eval.costs import candidate_costs
from engine.eval.results import gather_results, load_results, store_results
from engine.paths import evaluations_dir
from engine.run.events import RunFinished, StepMetrics

OTHER_SET = "b" * 64


def _pirate_results(pirate, outside, rouge: float, **document) -> dict:
    return results_document([candidate("base", None, {"rouge_l": 0.21, "loss": 2.3}),
                             candidate("pirate", pirate, {"rouge_l": rouge, "loss": 1.1}),
                             candidate("outside", outside, {"rouge_l": 0.4, "loss": 1.5})], **document)


def test_summaries_survive_a_reload_and_a_set_replaces_only_its_own(tiny_model_dir, tmp_path):
    pirate = library_adapter(tiny_model_dir, "pirate")
    outside = shutil.copytree(pirate, tmp_path / "outside")  # a PEFT folder that is not in the library
    first = _pirate_results(pirate, outside, 0.58)

    stored = store_results(first)
    assert stored.adapters == ["pirate"]
    assert load_results(stored.results_file) == first  # the whole document, examples and all
    assert stored.results_file.parent == evaluations_dir() and SET_HASH[:12] in stored.results_file.name
    summary = read_adapter_meta(pirate)["evaluations"][SET_HASH]
    assert summary["scores"] == {"rouge_l": 0.58, "loss": 1.1}
    assert summary["base_scores"] == {"rouge_l": 0.21, "loss": 2.3}  # before -> after, side by side
    assert summary["set"]["name"] == "pirate_persona.jsonl" and summary["results_file"] == str(stored.results_file)
    assert "evaluations" not in read_adapter_meta(outside)  # only the library is written to
    [record] = list_adapters()
    assert (record.evaluation.label, record.evaluation.score, record.evaluation.base_score,
            record.evaluation.examples) == ("ROUGE-L", 0.58, 0.21, 30)

    # Another set adds an entry, and being the newest it heads the list; the same set again replaces its own.
    store_results(_pirate_results(pirate, outside, 0.7, set_name="riddles.jsonl", set_hash=OTHER_SET,
                                  created="2026-12-07T09:00:00+00:00"))
    again = store_results(_pirate_results(pirate, outside, 0.62, created="2026-12-07T10:00:00+00:00"))
    evaluations = read_adapter_meta(pirate)["evaluations"]
    assert sorted(evaluations) == [SET_HASH, OTHER_SET]
    assert evaluations[SET_HASH]["scores"]["rouge_l"] == 0.62
    assert [s["set"]["name"] for s in read_evaluations(read_adapter_meta(pirate))] == [
        "pirate_persona.jsonl", "riddles.jsonl"]
    assert list_adapters()[0].evaluation.score == 0.62
    # A report on the adapter reads the results its studio.json points at: the newest on each set.
    assert {(d["set"]["name"], d["created"]) for d in gather_results(["pirate"])} == {
        ("pirate_persona.jsonl", "2026-12-07T10:00:00+00:00"), ("riddles.jsonl", "2026-12-07T09:00:00+00:00")}
    assert gather_results([str(again.results_file)])[0]["candidates"][1]["scores"]["rouge_l"] == 0.62


def test_a_damaged_studio_json_is_refused_and_left_untouched(tiny_model_dir, tmp_path):
    pirate = library_adapter(tiny_model_dir, "pirate")
    # Evaluations edited out of shape are not shown, never trusted half-way.
    edited = {"x": {"created": 5}, "y": "z", "w": {"created": "2026-12-06", "set": {}, "headline": {"score": "high"}}}
    (pirate / "studio.json").write_text(json.dumps({"evaluations": edited}), encoding="utf-8")
    assert list_adapters()[0].evaluation is None
    (pirate / "studio.json").write_text('{"base_model": "tiny", ', encoding="utf-8")
    with pytest.raises(StudioError, match="studio.json is damaged") as refused:
        store_results(_pirate_results(pirate, tmp_path / "nowhere", 0.58))
    assert "\n" not in str(refused.value)
    assert (pirate / "studio.json").read_text(encoding="utf-8") == '{"base_model": "tiny", '
    assert list(evaluations_dir().iterdir()) == []  # nothing written anywhere

    (tmp_path / "other.json").write_text(json.dumps({"set": {"name": "x"}}), encoding="utf-8")
    with pytest.raises(StudioError, match="is not an evaluation's results"):
        gather_results([str(tmp_path / "other.json")])
    with pytest.raises(StudioError, match="has no stored evaluation"):
        gather_results([str(pirate)])


def test_costs_come_from_the_run_folder_and_the_weights(tiny_model_dir):
    steps = [StepMetrics(time=T0 + n, step=n, total_steps=3, epoch=n / 3, loss=2.0, learning_rate=1e-3,
                         tokens_per_second=100.0 * n, memory_allocated=(n % 3 + 1) * 2**30, elapsed_s=float(n))
             for n in (1, 2, 3)]
    run = write_run("20260101-100000-pirate-lora", [started(T0, total=3), *steps,
                                                   RunFinished(time=T0 + 40, status="completed", step=3)])
    pirate = library_adapter(tiny_model_dir, "pirate", meta={"run_dir": str(run), "duration_s": 41.5})

    costs = candidate_costs(candidate("pirate", pirate, {}, speed={"adapter_tokens_per_s": 20.5,
                                                                   "merged_tokens_per_s": 31.0}))
    training = costs.training
    # The run's time as the runs history counts it (its start to its last event), the mean of the
    # steps' throughput, and the highest memory a step measured (step 2: (2 % 3 + 1) GiB).
    assert (training.wall_s, training.tokens_per_s, training.peak_memory_bytes) == (40.0, 200.0, 3 * 2**30)
    assert (training.trainable_params, training.method, training.run_dir) == (10, "lora", str(run))
    assert costs.deployment.size_bytes == (pirate / "adapter_model.safetensors").stat().st_size
    assert (costs.deployment.adapter_tokens_per_s, costs.deployment.merged_tokens_per_s) == (20.5, 31.0)

    # The run folder deleted: what only it knew is unknown, the adapter's own record and size remain.
    shutil.rmtree(run)
    gone = candidate_costs(candidate("pirate", pirate, {}))
    assert (gone.training.wall_s, gone.training.peak_memory_bytes, gone.training.trainable_params) == (41.5, None, None)
    assert gone.deployment.size_bytes > 0 and gone.deployment.adapter_tokens_per_s is None
    base = candidate_costs(candidate("base", None, {}))
    assert base.training.wall_s is None and base.deployment.size_bytes is None
