"""Numbers, run configs and module patterns from users, checked once at the edge (issue 23,
class 6 and the run-config part of class 7): nan, inf, huge, negative, bool and wrong-type
values are refused in one line with exit code 2 before anything is loaded or written; an edited
run config.json is refused before any code uses it; an adapter's module regex is matched under a
time bound, never by peft's unstoppable ``re``."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from engine.adapters.library import PEFT_CONFIG
from engine.core import patterns
from engine.errors import StudioError
from engine.paths import adapters_dir
from engine.run.rundir import RunDir
from helpers import run_cli, write_messages_dataset
from lora_adapters import write_peft_adapter
from refusals import assert_home_unchanged, assert_refused, home_snapshot, library_entries
from run_folders import completed_run

# A pattern that Python's re (and, past a bound, regex) backtracks on for minutes against a
# module name such as model.layers.0.self_attn.q_proj.
BACKTRACKING = r"(\w|.)*q_pro"


@pytest.fixture
def peft_folder(tiny_model_dir, tmp_path) -> Path:
    return write_peft_adapter(tiny_model_dir, tmp_path / "adapter")


def _refused(argv: list, capsys, message: str) -> str:
    before = home_snapshot()
    line = assert_refused(*run_cli(argv, capsys), message)
    assert_home_unchanged(before)
    return line


# Numbers on the command line ----------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["train", "--model", "m", "--dataset", "d", "--val-fraction", "nan"],
    ["train", "--model", "m", "--dataset", "d", "--lr", "inf"],
    ["train", "--model", "m", "--dataset", "d", "--epochs=-inf"],
    ["train", "--model", "m", "--dataset", "d", "--alpha", "1e999"],  # float() makes it inf
    ["chat", "--model", "m", "--repetition-penalty", "nan"],
    ["chat", "--model", "m", "--temperature", "inf"],
    ["chat", "--model", "m", "--top-p", "NaN"],
    ["adapters", "combine", "a", "b", "--weights", "nan", "1", "--name", "blend"],
    ["adapters", "combine", "a", "b", "--weights", "1", "2", "--how", "ties", "--density", "nan", "--name", "x"],
    ["data", "inspect", "d.jsonl", "--val-fraction", "inf"],
])
def test_nan_and_inf_are_refused_when_the_command_line_is_read(argv, capsys):
    line = _refused(argv, capsys, "must be a finite number")
    assert "--help" in line


@pytest.mark.parametrize("argv", [
    ["train", "--model", "m", "--dataset", "d", "--rank", "1e3"],
    ["train", "--model", "m", "--dataset", "d", "--max-steps", "2.5"],
    ["chat", "--model", "m", "--max-new-tokens", "0x10"],
    ["estimate", "--model", "m", "--method", "lora", "--batch", "nan"],
    ["runs", "export", "r", "--output", "o", "--gpus", "1" * 40],
])
def test_a_whole_number_must_be_written_as_one(argv, capsys):
    _refused(argv, capsys, "must be a whole number")


def test_any_usage_mistake_is_one_line_with_exit_code_2(capsys):
    _refused(["train", "--no-such-flag"], capsys, "unrecognized arguments")
    _refused(["chat"], capsys, "required: --model")
    _refused(["train", "--method", "lora\nfull"], capsys, "invalid choice")


@pytest.mark.parametrize("option, value, message", [
    ("--repetition-penalty", "0", "repetition penalty must be a positive number"),
    ("--repetition-penalty", "1e300", "repetition penalty must be at most 100"),
    ("--temperature", "-0.5", "temperature"),
    ("--top-p", "0", "top-p must be more than 0"),
    ("--top-k", "-1", "top-k"),
    ("--seed", str(2 ** 40), "seed must be between 0 and"),
])
def test_chat_sampling_out_of_range_is_refused_before_any_model_loads(option, value, message, capsys):
    # The model does not exist: the refusal names the setting, so it came first.
    _refused(["chat", "--model", "no-such-model", "--prompt", "hi", option, value], capsys, message)


def test_combine_weights_out_of_range_write_nothing(peft_folder, capsys):
    for name in ("one", "two"):  # two real adapters in the library, as an import leaves them
        shutil.copytree(peft_folder, adapters_dir() / name)
    for weights in (["1e300", "1"], ["1", "-101"]):
        _refused(["adapters", "combine", "one", "two", "--weights", *weights, "--name", "blend"], capsys,
                 "must be between -100 and 100")
    _refused(["adapters", "combine", "one", "two", "--weights", "1", "--name", "blend"], capsys,
             "one weight per adapter")
    assert library_entries() == ["one", "two"]


def test_the_engine_refuses_what_a_caller_passes_past_the_command_line(tiny_model_dir):
    from engine.adapters.combine import combine_adapters
    from engine.chat.blends import Blend
    from engine.chat.sampling import check_sampling
    from engine.data.split import split_counts

    for weight in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(StudioError, match="weight of a"):
            Blend((("a", weight), ("b", 1.0)))
        with pytest.raises(StudioError, match="weight of a"):
            combine_adapters(["a", "b"], [weight, 1.0], name="blend")
    with pytest.raises(StudioError, match="repetition penalty"):
        check_sampling(16, 0.0, 0.9, 0, float("nan"))
    with pytest.raises(StudioError, match="max new tokens"):
        check_sampling(True, 0.0, 0.9, 0, 1.0)
    with pytest.raises(StudioError, match="validation share"):
        split_counts(10, float("nan"))


def test_data_inspect_refuses_its_options_before_reading(tmp_path, capsys):
    # The file does not exist: the refusal names the option, so it came first.
    _refused(["data", "inspect", str(tmp_path / "missing.jsonl"), "--val-fraction", "0.9"], capsys,
             "validation share must be between 0 and 0.5")
    _refused(["data", "inspect", str(tmp_path / "missing.jsonl"), "--max-length", "0"], capsys,
             "max length must be between 1 and")


def test_train_refuses_numbers_out_of_range_before_a_run_folder_exists(tiny_model_dir, tmp_path, capsys):
    data = write_messages_dataset(tmp_path / "pirate.jsonl")
    base = ["train", "--model", tiny_model_dir, "--dataset", data, "--max-steps", "1"]
    _refused([*base, "--val-fraction", "0.9"], capsys, "validation share must be between 0 and 0.5")
    _refused([*base, "--rank", "100000"], capsys, "rank must be between 1 and 4,096")
    _refused([*base, "--seed", str(2 ** 40)], capsys, "seed must be between 0 and")
    _refused([*base, "--alpha", "1e9"], capsys, "alpha must be at most")
    _refused([*base, "--batch", "-3"], capsys, "batch size must be a positive number")


# An edited run config.json --------------------------------------------------------------------

GOOD_CONFIG = {"model": "tiny", "dataset": "/d/pirate.jsonl", "max_steps": 5}


@pytest.mark.parametrize("field, value, message", [
    ("rank", "16", "rank must be a positive number, got '16'"),
    ("rank", 16.5, "rank must be a whole number"),
    ("lr", float("nan"), "learning rate must be a positive number, got nan"),  # json writes NaN, and reads it back
    ("alpha", float("inf"), "alpha must be a positive number, got inf"),
    ("epochs", "3", "epochs must be a positive number"),
    ("use_rslora", 1, "use rslora must be true or false"),
    ("model", ["tiny"], "model must be text"),
    ("dataset", "d" * 5000, "dataset is 5,000 characters long"),
    ("device", "cpu\n", "device must not hold control characters"),
    ("name", "pirate\nv2", "may only use letters, digits"),
    ("columns", {"question": 1}, "columns 'question' must be text"),
    ("fsdp", [], "fsdp must be a JSON object"),
    ("seed", 2 ** 40, "seed must be between 0 and"),
    ("seed", "42", "seed must be a whole number"),
    ("val_fraction", "0.1", "validation share must be between 0 and 0.5"),
    ("max_grad_norm", None, "max grad norm must be between 0 and"),
    ("method", ["lora"], "method must be text"),
    ("memory_limit", 6, "memory limit must be text"),
])
def test_an_edited_run_config_is_refused_before_anything_uses_it(field, value, message, tmp_path, capsys):
    run = completed_run(config={**GOOD_CONFIG, field: value})
    config = RunDir(run).config
    written = config.read_bytes()
    _refused(["train", "--resume", run], capsys, message)
    _refused(["train", "--resume", run, "--more-steps", "5"], capsys, message)
    _refused(["runs", "export", run, "--output", tmp_path / "exported"], capsys, message)
    _refused(["train", "--config", config], capsys, message)
    assert config.read_bytes() == written
    assert not (tmp_path / "exported").exists()


@pytest.mark.parametrize("content, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (json.dumps({**GOOD_CONFIG, "prompt_init_text": "x" * (2 << 20)}), "KiB: no run config is that long"),
    (json.dumps([GOOD_CONFIG]), "must be a JSON object"),
])
def test_a_run_config_that_is_no_config_is_refused(content, message, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(content, encoding="utf-8")
    _refused(["train", "--config", config], capsys, message)


def test_the_run_list_still_lists_a_run_whose_config_was_edited(capsys):
    completed_run(config={**GOOD_CONFIG, "rank": "sixteen", "batch_size": [4]})
    code, out, _ = run_cli(["runs", "list"], capsys)
    assert code == 0 and "completed" in out


# Module patterns in an adapter --------------------------------------------------------------------

def _edit_config(folder: Path, **changes) -> Path:
    path = folder / PEFT_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(changes)
    path.write_text(json.dumps(config), encoding="utf-8")  # NaN is written as NaN, as an editor could
    return folder


def test_a_backtracking_target_modules_regex_is_refused_within_the_bound(peft_folder, tiny_model_dir, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(patterns, "REGEX_SECONDS", 0.05)
    _edit_config(peft_folder, target_modules=BACKTRACKING)
    for argv in (["adapters", "import", peft_folder],
                 ["chat", "--model", tiny_model_dir, "--adapter", peft_folder, "--prompt", "hi"],
                 ["adapters", "merge", peft_folder, "--base", tiny_model_dir, "--output", peft_folder.parent / "m"],
                 ["adapters", "gguf", peft_folder, "--lora-only", "--output", peft_folder.parent / "a.gguf"]):
        started = time.monotonic()
        _refused(argv, capsys, "takes too long to match module names")
        assert time.monotonic() - started < 5
    assert not (peft_folder.parent / "m").exists() and not (peft_folder.parent / "a.gguf").exists()


def test_loading_matches_a_regex_itself_under_the_bound(peft_folder, tiny_model_dir, monkeypatch):
    """The real module names are tried when the adapter loads, and peft gets the names, not the regex."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.adapters.base_model import load_peft

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    _edit_config(peft_folder, target_modules=r"model\.layers\.\d+\.self_attn\.(q|k|v)_proj")
    loaded = load_peft(model, peft_folder, "pirate")
    targets = loaded.peft_config["pirate"].target_modules
    assert not isinstance(targets, str) and targets and all(name.endswith(("q_proj", "k_proj", "v_proj"))
                                                            for name in targets)
    monkeypatch.setattr(patterns, "REGEX_SECONDS", 0.05)
    _edit_config(peft_folder, target_modules=BACKTRACKING)
    started = time.monotonic()
    with pytest.raises(StudioError, match="takes too long"):
        load_peft(loaded, peft_folder, "again", loaded)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("changes, message", [
    ({"target_modules": "(q_proj"}, "is not a valid regular expression"),
    ({"exclude_modules": BACKTRACKING}, "takes too long"),
    ({"lora_alpha": float("nan")}, "lora_alpha=nan: it must be a finite number"),
    ({"r": 10 ** 9}, "no real adapter has more than"),
    ({"rank_pattern": {"(a+)+$": 4}}, "simple patterns"),
    ({"rank_pattern": {"q_proj": float("inf")}}, "rank_pattern must map module names to ranks"),
    ({"modules_to_save": ["(a|aa)+"]}, "simple patterns"),
    ({"layers_pattern": "layers|(x+)+"}, "simple patterns"),
])
def test_an_adapter_config_with_bad_numbers_or_patterns_is_not_imported(changes, message, peft_folder, monkeypatch,
                                                                        capsys):
    monkeypatch.setattr(patterns, "REGEX_SECONDS", 0.05)
    _edit_config(peft_folder, **changes)
    _refused(["adapters", "import", peft_folder], capsys, message)
