"""Class 7 of issue 23: files from disk are not trusted either. A GGUF whose header lies, a GGUF
LoRA that does not fit its base, edited events, a control.json that is not a command, a tampered
trash record: each is refused in one line (or, for what is only read, skipped) and nothing in
the home changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from gguf_models import write_gguf
from lora_adapters import library_adapter
from helpers import run_cli
from refusals import assert_home_unchanged, assert_refused, home_snapshot, library_entries
from run_folders import T0, started, step

from engine.paths import adapters_dir, models_dir, runs_dir
from engine.run.control import ControlReader, send_command
from engine.run.events import RunFinished, read_events


# a GGUF model that does not hold what its header says ---------------------------------------
def _gguf_cases() -> dict[str, tuple[dict[str, Any], str]]:
    import numpy as np

    return {
        # The header counts a third layer the file has no tensors for: transformers would have
        # made it up at random.
        "header-lies-about-layers": ({"blocks": 3}, "its header says 3 layers but it holds tensors for layers 0 to 1"),
        "a-tensor-missing": ({"tamper": lambda name, data: None if name == "blk.1.ffn_down.weight" else data},
                             "1 tensors missing from the file (such as model.layers.1.mlp.down_proj.weight)"),
        "a-tensor-of-the-wrong-shape": ({"tamper": lambda name, data: data[:32] if name == "blk.0.ffn_up.weight"
                                         else data}, "1 tensors of the wrong shape"),
        "a-layer-the-header-does-not-count": ({"extra": ("blk.7.attn_q.weight", np.zeros((64, 64), np.float32))},
                                              "its header says 2 layers but it holds tensors for layers 0 to 7"),
        "a-tensor-no-llama-has": ({"extra": ("secret.weight", np.zeros((4,), np.float32))},
                                  "1 tensors that a llama model of 2 layers does not have (such as secret.weight)"),
    }


@pytest.mark.parametrize("case", list(_gguf_cases()))
def test_a_gguf_that_does_not_hold_what_its_header_says_is_not_added(case, tiny_model_dir, tmp_path, capsys):
    options, message = _gguf_cases()[case]
    gguf_file = write_gguf(tiny_model_dir, tmp_path / f"{case}.gguf", **options)
    before = home_snapshot()
    assert_refused(*run_cli(["models", "add", gguf_file], capsys), message)
    assert_home_unchanged(before)
    assert sorted(p.name for p in models_dir().iterdir()) == []  # no staging folder left either


def test_an_honest_gguf_is_still_added(tiny_model_dir, tmp_path, capsys):
    gguf_file = write_gguf(tiny_model_dir, tmp_path / "honest.gguf")
    code, out, err = run_cli(["models", "add", gguf_file, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["ready"] is True


# a GGUF LoRA that does not fit its base -------------------------------------------------------
def _misfit(tiny_model_dir: Path, change: Callable[[dict], None]) -> Path:
    """A library adapter for the tiny model whose weights were then changed by ``change``."""
    from safetensors.torch import load_file, save_file

    entry = library_adapter(tiny_model_dir, "misfit")
    weights = entry / "adapter_model.safetensors"
    tensors = load_file(weights)
    change(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})
    return entry


_LORA_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


@pytest.mark.parametrize("change, message", [
    (lambda t: t.__setitem__(_LORA_A, t[_LORA_A][:, :32].contiguous()),
     "does not fit its base: model.layers.0.self_attn.q_proj.weight is [64, 64] in the base, its LoRA pair is A [4, 32]"),
    (lambda t: t.update({_LORA_A.replace("layers.0", "layers.9"): t[_LORA_A].clone(),
                         _LORA_A.replace("layers.0", "layers.9").replace("lora_A", "lora_B"):
                             t[_LORA_A.replace("lora_A", "lora_B")].clone()}),
     "adapts model.layers.9.self_attn.q_proj.weight, which its base model does not have"),
    (lambda t: t.pop(_LORA_A.replace("lora_A", "lora_B")), "lacks one half of its LoRA pair"),
], ids=["wrong-shape", "a-layer-the-base-lacks", "half-a-pair"])
def test_a_gguf_lora_that_does_not_fit_its_base_is_not_written(change, message, tiny_model_dir, tmp_path, capsys):
    _misfit(tiny_model_dir, change)
    out = tmp_path / "out"
    out.mkdir()
    before = home_snapshot()
    assert_refused(*run_cli(["adapters", "gguf", "misfit", "--lora-only", "--base", tiny_model_dir,
                             "--output", out / "misfit.gguf"], capsys), message)
    assert list(out.iterdir()) == []  # neither the LoRA, nor the base's GGUF, nor a Modelfile
    assert_home_unchanged(before)


# events.jsonl edited by hand ---------------------------------------------------------------------
def _run_with_hostile_events() -> Path:
    """A run whose events hold, among good ones, losses that are not numbers, unknown events,
    fields of the wrong type and lines that are not objects."""
    folder = runs_dir() / "20260101-100000-edited"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": ["not", "a", "name"], "dataset": "/d/pirate.jsonl",
                                                    "batch_size": "four", "grad_accum": 1e400}))
    good = [started(T0, total=5), step(T0 + 1, 1, 2.0), step(T0 + 2, 2, 1.5)]
    bad_steps = [{**step(T0 + 3, 3, 1.0).to_dict(), "loss": loss} for loss in ("low", None, [1.0], {"v": 1}, True)]
    lines = [json.dumps(event.to_dict()) for event in good]
    lines += [json.dumps(event) for event in bad_steps]
    lines += [
        '{"event": "StepMetrics", "time": 1, "step": 3, "total_steps": 5, "epoch": 0.3, "loss": NaN, '
        '"learning_rate": 0.001}',
        '{"event": "StepMetrics", "time": 1, "step": "3", "total_steps": 5, "epoch": 0.3, "loss": 1.0, '
        '"learning_rate": 0.001}',
        '{"event": "EvalMetrics", "time": 1, "step": 2, "eval_loss": "good"}',
        '{"event": "Explode", "time": 1}', '{"event": ["StepMetrics"]}', "[1, 2, 3]", '"a string"', "null",
        "[" * 100_000,
        json.dumps(RunFinished(time=T0 + 9, status="exploded", step=2).to_dict()),
    ]
    not_utf8 = b"\xff\xfe{}"
    (folder / "events.jsonl").write_bytes("\n".join(lines).encode() + b"\n" + not_utf8 + b"\n")
    return folder


def test_events_with_losses_that_are_not_numbers_are_skipped_by_every_reader(capsys):
    folder = _run_with_hostile_events()
    events = read_events(folder / "events.jsonl")
    assert [type(e).__name__ for e in events] == ["RunStarted", "StepMetrics", "StepMetrics"]

    code, out, err = run_cli(["runs", "list", "--json"], capsys)
    assert code == 0, err
    run = json.loads(out)[0]
    assert (run["steps"], run["final_loss"], run["model"], run["status"]) == (2, 1.5, "", "interrupted")
    code, out, err = run_cli(["runs", "list"], capsys)
    assert code == 0 and "step 2/5 loss 1.5000" in out, err

    from engine.jobs.history import read_curves, read_record

    curves = read_curves(folder)
    assert (curves.loss.steps, curves.loss.values) == ([1, 2], [2.0, 1.5])
    assert curves.eval_loss.steps == []
    assert read_record(folder).spark == (2.0, 1.5)


# control.json that is not a command -----------------------------------------------------------
@pytest.mark.parametrize("content", [
    "[]", '"stop"', "null", "42", "not json", '{"command": 5}', '{"command": "explode"}',
    '{"command": "stop", "save": "yes"}', '{"command": ["stop"]}', "[" * 3000, '{"command": "stop"}' + " " * 5000,
], ids=["list", "string", "null", "number", "not-json", "number-command", "unknown-command", "save-not-bool",
        "list-command", "nested", "too-large"])
def test_a_control_file_that_is_not_a_command_is_ignored(content, tmp_path):
    reader = ControlReader(tmp_path)
    send_command(tmp_path, "pause")
    assert reader.command == "pause"
    (tmp_path / "control.json").write_text(content)
    assert reader.poll() == {"command": "pause", "save": True}  # the last good command stands
    assert reader.problem
    send_command(tmp_path, "stop", save=False)
    assert reader.poll() == {"command": "stop", "save": False}
    assert reader.problem is None


# a tampered trash record -----------------------------------------------------------------------
def _deleted(tiny_model_dir: Path, capsys) -> Path:
    """A library adapter moved into the trash with the CLI; its holder in the trash."""
    library_adapter(tiny_model_dir, "pirate")
    code, out, err = run_cli(["adapters", "delete", "pirate", "--json"], capsys)
    assert code == 0, err
    return adapters_dir() / ".trash" / json.loads(out)["id"]


def _outside(home: Path) -> list[str]:
    return sorted(p.name for p in home.parent.iterdir())


@pytest.mark.parametrize("tamper, message", [
    (lambda holder: {"name": "../../victim"}, "names '../../victim', which is not a valid name"),
    (lambda holder: {"name": "../../../outside"}, "names '../../../outside', which is not a valid name"),
    (lambda holder: {"name": "/etc"}, "names '/etc', which is not a valid name"),
    (lambda holder: {"name": ["pirate"]}, "is damaged"),
    (lambda holder: {"size_bytes": "many"}, "is damaged"),
    (lambda holder: [], "is damaged"),
    (lambda holder: {"name": "elsewhere"}, "names 'elsewhere', which leads outside"),
], ids=["dotdot-to-a-library-entry", "dotdot-out-of-the-home", "absolute", "name-not-text", "size-not-a-number",
        "not-an-object", "a-link-out"])
def test_a_tampered_trash_record_restores_nothing(tamper, message, tiny_model_dir, studio_home, capsys):
    holder = _deleted(tiny_model_dir, capsys)
    library_adapter(tiny_model_dir, "victim")
    (holder / "elsewhere").symlink_to(studio_home.parent, target_is_directory=True)
    record = json.loads((holder / "deleted.json").read_text())
    change = tamper(holder)
    (holder / "deleted.json").write_text(json.dumps({**record, **change} if isinstance(change, dict) else change))
    outside, trash = _outside(studio_home), sorted(p.name for p in holder.iterdir())
    before = home_snapshot()

    assert_refused(*run_cli(["adapters", "restore", holder.name], capsys), message)
    assert_home_unchanged(before)
    assert library_entries() == [".trash", "victim"]
    assert sorted(p.name for p in holder.iterdir()) == trash
    assert _outside(studio_home) == outside
    code, out, err = run_cli(["adapters", "trash", "--json"], capsys)  # the listing still lists
    assert code == 0 and json.loads(out) == {"trash": []}, err


def test_an_untampered_trash_record_still_restores(tiny_model_dir, capsys):
    holder = _deleted(tiny_model_dir, capsys)
    code, out, err = run_cli(["adapters", "restore", holder.name], capsys)
    assert code == 0, err
    assert library_entries() == [".trash", "pirate"]


# the other records the engine reads back ----------------------------------------------------------
def test_a_model_store_record_with_a_path_that_is_not_text_is_no_entry(capsys):
    entry = models_dir() / "edited"
    entry.mkdir(parents=True)
    (entry / "studio_model.json").write_text(json.dumps({"source": "folder", "path": ["/etc"]}))
    code, out, err = run_cli(["models", "list", "--json"], capsys)
    assert code == 0, err
    assert "edited" not in [model["name"] for model in json.loads(out)["models"]]


@pytest.mark.parametrize("state", ["[]", '{"global_step": "many"}', '{"log_history": [1, 2]}', '{"epoch": "one"}'])
def test_a_checkpoint_whose_trainer_state_is_edited_is_not_complete(state, tmp_path):
    from engine.run.checkpoints import checkpoint_problem

    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    (folder / "trainer_state.json").write_text(state)
    assert "trainer_state.json is damaged" in checkpoint_problem(folder)


@pytest.mark.parametrize("version", ['"two"', "null", "[1]", "1e400"])
def test_a_chat_transcript_with_a_version_that_is_not_a_number_is_refused(version, tmp_path):
    from engine.chat.transcripts import load_transcript
    from engine.errors import StudioError

    path = tmp_path / "chat.json"
    path.write_text('{"format": "lora-studio-chat", "version": ' + version + ', "messages": []}')
    with pytest.raises(StudioError, match="is not a whole number"):
        load_transcript(path)
