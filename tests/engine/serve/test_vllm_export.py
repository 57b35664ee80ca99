"""The vLLM export read as the serving machine reads it: serve.sh runs under bash from its own
folder, each --lora-modules pair names a stock PEFT folder holding the library's bytes, the
rank and template options fit the adapters; and what vLLM cannot serve is refused in one line,
leaving nothing behind. vLLM itself is not installed: the files are what is tested."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from lora_adapters import PIRATE_TEMPLATE, library_adapter, write_peft_adapter
from tiny_model import CHATML_TEMPLATE

from engine.errors import StudioError
from engine.serve.vllm_export import export_vllm


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Real PEFT adapters on the tiny model, made once in a library of their own (tests name
    them by path): good ones of ranks 8, 12 and 64, and one of each kind vLLM cannot serve."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LORA_STUDIO_HOME", str(tmp_path_factory.mktemp("vllm-library")))
        made = {f"r{rank}": library_adapter(tiny_model_dir, f"r{rank}", rank=rank) for rank in (8, 12, 64)}
        made["dora"] = library_adapter(tiny_model_dir, "dora", use_dora=True)
        made["whole-head"] = library_adapter(tiny_model_dir, "whole-head", modules_to_save=["lm_head"])
        made["uneven"] = library_adapter(tiny_model_dir, "uneven", rank=8, rank_pattern={"q_proj": 16})
        made["huge"] = library_adapter(tiny_model_dir, "huge", rank=513, targets=("q_proj",))
        made["other-base"] = library_adapter(tiny_model_dir, "other-base", meta={
            "base_model": "SmolLM2-360M", "base_model_fingerprint": "0123456789abcdef"})
        made["chatml"] = library_adapter(tiny_model_dir, "chatml", meta={"chat_template": CHATML_TEMPLATE})
        made["prompt"] = _prompt_tuning_adapter(tiny_model_dir, made["r8"].parent / "prompt")
    return made


def _prompt_tuning_adapter(base: Path, folder: Path) -> Path:
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    model.save_pretrained(folder)
    return folder


def _script_argv(script: Path) -> list[str]:
    """The words of serve.sh's exec line, its continuation lines joined as bash joins them."""
    text = script.read_text(encoding="utf-8").replace("\\\n", "")
    return shlex.split(next(line for line in text.splitlines() if line.startswith("exec ")), comments=True)


def _option(command: list[str], flag: str) -> list[str]:
    """The values given after ``flag``, up to the next option."""
    start = command.index(flag) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("--")), len(command))
    return command[start:end]


def test_serve_script_runs_each_adapter_as_the_library_holds_it(adapters, tiny_model_dir, tmp_path):
    from peft import PeftConfig

    folder = tmp_path / "vllm"
    export = export_vllm(str(tiny_model_dir), [str(adapters["r8"]), str(adapters["r12"])], folder, served_name="tiny")
    script = folder / "serve.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0 and os.access(script, os.X_OK)
    manifest = json.loads((folder / "vllm.json").read_text(encoding="utf-8"))
    command = manifest["command"]
    assert _script_argv(script) == ["exec", *command, "$@"] and export.command == command
    assert command[:4] == ["vllm", "serve", str(tiny_model_dir.resolve()), "--enable-lora"]
    assert _option(command, "--max-lora-rank") == ["16"] and _option(command, "--max-loras") == ["2"]
    assert _option(command, "--served-model-name") == ["tiny"]
    assert (folder / _option(command, "--chat-template")[0]).read_text(encoding="utf-8") == PIRATE_TEMPLATE

    # bash runs it from its own folder whatever the caller's, passing on the options it is given:
    # a stand-in vllm on PATH (vLLM is not installed here) records where and what it was asked.
    bin_folder, record = tmp_path / "bin", tmp_path / "vllm-call.txt"
    bin_folder.mkdir()
    (bin_folder / "vllm").write_text('#!/usr/bin/env bash\npwd > "$RECORD"\nprintf "%s\\n" "$@" >> "$RECORD"\n')
    (bin_folder / "vllm").chmod(0o755)
    subprocess.run(["bash", str(script), "--port", "8001"], cwd=tmp_path, check=True,
                   env={**os.environ, "PATH": f"{bin_folder}:{os.environ['PATH']}", "RECORD": str(record)})
    ran_in, *argv = record.read_text(encoding="utf-8").splitlines()
    assert Path(ran_in) == folder.resolve() and argv == [*command[1:], "--port", "8001"]

    modules = dict(pair.split("=", 1) for pair in _option(command, "--lora-modules"))
    assert list(modules) == ["r8", "r12"] == [adapter["name"] for adapter in manifest["adapters"]]
    for name, path in modules.items():
        served = Path(ran_in) / path
        assert PeftConfig.from_pretrained(str(served)).r == int(name[1:])
        assert (served / "adapter_model.safetensors").read_bytes() == \
            (adapters[name] / "adapter_model.safetensors").read_bytes()
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "./serve.sh" in readme and "curl http://localhost:8000/v1/chat/completions" in readme
    assert '"model": "r8"' in readme and '"tiny"` is the base model without any adapter' in readme


@pytest.mark.parametrize("names, rank", [(["r8"], 8), (["r12"], 16), (["r8", "r64"], 64)])
def test_max_lora_rank_is_the_smallest_vllm_takes_that_holds_every_adapter(adapters, tiny_model_dir, tmp_path,
                                                                          names, rank):
    export_vllm(str(tiny_model_dir), [str(adapters[name]) for name in names], tmp_path / "vllm")
    manifest = json.loads((tmp_path / "vllm" / "vllm.json").read_text(encoding="utf-8"))
    assert manifest["max_lora_rank"] == rank and _option(manifest["command"], "--max-lora-rank") == [str(rank)]
    assert _option(_script_argv(tmp_path / "vllm" / "serve.sh"), "--max-lora-rank") == [str(rank)]


@pytest.mark.parametrize("names, words", [
    (["r8", "dora"], "adapter 'dora' is a DoRA adapter, which vLLM does not serve"),
    (["prompt"], "adapter 'prompt' is a prompt-tuning adapter"),
    (["other-base"], "adapter 'other-base' was trained on SmolLM2-360M"),
    (["whole-head"], "also trains whole modules (lm_head)"),
    (["uneven"], "vLLM scales all of them alike"),
    (["huge"], "has rank 513, above 512"),
    (["r8", "chatml"], "adapters 'r8' and 'chatml' chat with different chat templates"),
])
def test_what_vllm_cannot_serve_is_refused_in_one_line_leaving_nothing(adapters, tiny_model_dir, tmp_path,
                                                                       names, words):
    exports = tmp_path / "exports"
    exports.mkdir()
    with pytest.raises(StudioError) as refused:
        export_vllm(str(tiny_model_dir), [str(adapters[name]) for name in names], exports / "vllm")
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert list(exports.iterdir()) == []


def test_a_folder_that_is_not_empty_is_refused_and_kept(adapters, tiny_model_dir, tmp_path):
    folder = tmp_path / "exports" / "vllm"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(StudioError, match="is not an empty folder: export into a new folder"):
        export_vllm(str(tiny_model_dir), [str(adapters["r8"])], folder)
    assert [p.name for p in folder.parent.iterdir()] == ["vllm"] and [p.name for p in folder.iterdir()] == ["notes.txt"]
    (folder / "notes.txt").unlink()  # an empty folder made for the export is filled
    export_vllm(str(tiny_model_dir), [str(adapters["r8"])], folder)
    assert (folder / "serve.sh").is_file() and [p.name for p in folder.parent.iterdir()] == ["vllm"]


@pytest.mark.starter
def test_starter_adapters_are_served_over_its_hugging_face_id(starter_in_store, tmp_path):
    from engine.models.tokenizer import load_tokenizer

    adapter = write_peft_adapter(starter_in_store, tmp_path / "starter-pirate", rank=4, targets=("q_proj",))
    export = export_vllm("starter", [str(adapter)], tmp_path / "vllm")
    assert export.command[2] == "HuggingFaceTB/SmolLM2-135M-Instruct" == _script_argv(tmp_path / "vllm" / "serve.sh")[3]
    # An adapter that records no chat template chats through the base's own, in the studio as on vLLM.
    template = (tmp_path / "vllm" / "chat_template.jinja").read_text(encoding="utf-8")
    assert template == load_tokenizer(starter_in_store).chat_template
