"""The Ollama Modelfile's chat template says what the model's own template says: for every template
family of the catalog, a conversation rendered by the Modelfile's Go template (as Ollama runs it)
is the very text the family's real Jinja template gives (as transformers renders it). Pure text:
no model is loaded."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

import pytest

from engine.gguf.ollama import family_name, write_modelfile
from engine.data.rendering import CHATML_TEMPLATE
from engine.data.templates import render_template
from go_template import render

TEMPLATES = Path(__file__).parents[2] / "data" / "chat_templates"

SYSTEM = {"role": "system", "content": "You are a terse pirate."}
TALK = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris, matey."},
        {"role": "user", "content": "And of Spain?"}]

LLAMA3_STOPS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_STOPS = ["<|im_start|>", "<|im_end|>"]


# template file (or the studio's own ChatML), family, BOS and EOS text of the family's tokenizer,
# whether llama.cpp puts that BOS in front (the GGUF's add_bos_token), whether the template takes
# a system message, the stop words, and what else the Jinja is given.
CASES = {
    "llama-2": ("Llama 2", "<s>", "</s>", True, True, ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"], {}),
    "llama-3": ("Llama 3", "<|begin_of_text|>", "<|eot_id|>", True, True, LLAMA3_STOPS, {}),
    "llama-3.1": ("Llama 3.1", "<|begin_of_text|>", "<|eot_id|>", True, True, LLAMA3_STOPS, {}),
    # Llama 3.2 writes today's date unless it is given one; Ollama's templates have no clock in that
    # format, so the Go template writes the date the Jinja falls back on, and the Jinja is given it.
    "llama-3.2": ("Llama 3.1", "<|begin_of_text|>", "<|eot_id|>", True, True, LLAMA3_STOPS,
                  {"date_string": "26 Jul 2024"}),
    "mistral-v0.3": ("Mistral v3", "<s>", "</s>", True, True, ["[INST]", "[/INST]"], {}),
    "qwen2.5": ("ChatML", None, "<|im_end|>", False, True, CHATML_STOPS, {}),
    "qwen3": ("ChatML", None, "<|im_end|>", False, True, CHATML_STOPS, {}),
    "smollm2": ("ChatML", "<|im_start|>", "<|im_end|>", False, True, CHATML_STOPS, {}),
    "gemma-2": ("Gemma", "<bos>", "<eos>", True, False, ["<start_of_turn>", "<end_of_turn>"], {}),
    "gemma-3": ("Gemma", "<bos>", "<eos>", True, True, ["<start_of_turn>", "<end_of_turn>"], {}),
    "phi-3": ("Phi-3", "<s>", "<|endoftext|>", False, True, ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"], {}),
    "phi-4": ("Phi-4", "<|endoftext|>", "<|im_end|>", False, True, ["<|im_start|>", "<|im_end|>", "<|im_sep|>"], {}),
    # A base model without a template (here Llama 2 or Mistral's tokenizer) trains on the studio's
    # ChatML, which writes the model's EOS after each reply: the Go template carries that EOS.
    "studio-chatml": ("ChatML (LoRA Studio's, for a base model without a template)", "<s>", "</s>", True, True,
                      CHATML_STOPS, {}),
}


def jinja_template(case: str) -> str:
    return CHATML_TEMPLATE if case == "studio-chatml" else (TEMPLATES / f"{case}.jinja").read_text(encoding="utf-8")


def jinja_prompt(case: str, messages: list[dict[str, str]]) -> str:
    """The Jinja text transformers renders, less the leading BOS where llama.cpp puts that in front
    itself (the BOS rule of engine.adapters.ollama); a BOS later in the conversation stays."""
    _, bos, eos, adds_bos, _, _, extra = CASES[case]
    special = {name: token for name, token in (("bos_token", bos), ("eos_token", eos)) if token}
    context = {**special, "messages": messages, "tools": None, "documents": None,
               "add_generation_prompt": True, **extra}
    text = render_template(jinja_template(case), f"the {case} test template", context)
    if adds_bos and bos:
        assert text.startswith(bos)
        text = text[len(bos):]
    return text


def ollama_prompt(modelfile: str, messages: list[dict[str, str]]) -> str:
    """The prompt Ollama renders from the Modelfile for a chat request of ``messages``
    (server/routes.go and template/template.go): the Modelfile's SYSTEM goes in front of a
    conversation without a system message, consecutive messages of one role are merged, and the
    template gets the messages and all system messages joined as ``.System``."""
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)
    default_system = re.search(r'^SYSTEM """(.*?)"""$', modelfile, re.S | re.M)
    if default_system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system.group(1)}] + messages
    collated: list[dict[str, Any]] = []
    for message in messages:
        if collated and collated[-1]["Role"] == message["role"]:
            collated[-1]["Content"] += "\n\n" + message["content"]
        else:
            collated.append({"Role": message["role"], "Content": message["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return render(template, {"System": system, "Messages": collated, "Response": ""})


def modelfile_for(case: str, folder: Path, sampling: Optional[dict[str, Any]] = None) -> str:
    eos = CASES[case][2]
    path = write_modelfile(folder / f"{case}.Modelfile", folder / f"{case}.gguf", jinja_template(case),
                           eos_token=eos, sampling=sampling)
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_modelfile_template_renders_what_the_jinja_renders(case, tmp_path):
    family, *_, takes_system, stops, _ = CASES[case]
    assert family_name(jinja_template(case)) == family
    modelfile = modelfile_for(case, tmp_path)
    assert f"# The chat template ({family}), in Ollama's Go template syntax:" in modelfile
    assert re.findall(r'^PARAMETER stop "(.*)"$', modelfile, re.M) == stops
    conversations = [TALK, TALK[:1]] + ([[SYSTEM] + TALK] if takes_system else [])
    for messages in conversations:
        assert ollama_prompt(modelfile, messages) == jinja_prompt(case, messages), messages


def test_built_in_system_prompts_reach_ollama(tmp_path):
    """Qwen2.5 and SmolLM2 put a system prompt of their own in a conversation without one; the
    Modelfile's SYSTEM does the same in Ollama (checked above), and here is that text."""
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' \
        in modelfile_for("qwen2.5", tmp_path)
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' \
        in modelfile_for("smollm2", tmp_path)
    assert "SYSTEM" not in modelfile_for("qwen3", tmp_path)


def test_a_template_of_no_family_is_left_to_the_gguf(tmp_path):
    """Mistral Nemo's tekken template looks like Mistral v3 but spaces its turns otherwise: no Go
    template is written for it, and the Modelfile says that Ollama reads the GGUF's own."""
    nemo = (TEMPLATES / "mistral-v0.3.jinja").read_text(encoding="utf-8").replace(
        '"[AVAILABLE_TOOLS] ["', '"[AVAILABLE_TOOLS]["')
    path = write_modelfile(tmp_path / "nemo.Modelfile", tmp_path / "nemo.gguf", nemo)
    text = path.read_text(encoding="utf-8")
    assert family_name(nemo) is None and "TEMPLATE" not in text and "PARAMETER" not in text
    assert "of no family LoRA Studio writes for Ollama" in text and "Ollama reads it from there" in text


def test_sampling_parameters_come_from_the_chat_settings(tmp_path):
    settings = {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "max_new_tokens": 256,
                "seed": None}
    text = modelfile_for("qwen3", tmp_path, sampling=settings)
    assert re.findall(r"^PARAMETER (?!stop)(\w+) (.*)$", text, re.M) == [
        ("temperature", "0.7"), ("top_p", "0.9"), ("top_k", "40"), ("repeat_penalty", "1.1"), ("num_predict", "256")]
    assert "PARAMETER temperature" not in modelfile_for("phi-4", tmp_path)  # no settings: Ollama's defaults
