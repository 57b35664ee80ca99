"""Ollama Modelfiles for GGUF files: the model (and its LoRA), the chat template written as the Go
template Ollama runs, the words that end a reply, and the adapter's sampling settings.

Ollama templates are Go templates, not Jinja. Each chat-template family of the model catalog has
its Go template here, written to give the very text the family's Jinja template gives (the tests
render both); a Jinja template is put in a family by the marker strings it contains. A template of
no family is left to Ollama, which reads the Jinja stored in the GGUF file.

Two rules hold for every Go template here:
- no leading BOS: llama.cpp puts the BOS token in front of the prompt itself when the GGUF says so
  (``tokenizer.ggml.add_bos_token``), where a Jinja template writes ``bos_token`` first; a BOS the
  Jinja writes later in the conversation (Llama 2's ``<s>`` before each turn) is written out;
- no trimming: Go templates cannot strip a message as some Jinja templates do (``| trim``), so a
  message with spaces or newlines around it keeps them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.data.rendering import CHATML_TEMPLATE


@dataclass(frozen=True)
class TemplateFamily:
    """A family of chat templates: the Jinja markers that name it and what Ollama needs for it."""

    name: str
    markers: tuple[str, ...]  # every one of them is in the family's Jinja text
    go_template: str
    stops: tuple[str, ...]  # the strings that end a reply (the end-of-turn and the next turn's start)


_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
_CHATML_STOPS = ("<|im_start|>", "<|im_end|>")
_LLAMA3_TURNS = """{{- range .Messages }}
{{- if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""
_LLAMA3_STOPS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")

# The first family whose markers are all in a template is its family: the narrower ones come first
# (Phi-4 is ChatML with a separator; Llama 3.1 is Llama 3 with a system block of dates).
FAMILIES: tuple[TemplateFamily, ...] = (
    TemplateFamily("Phi-4", ("<|im_start|>", "<|im_sep|>", "<|im_end|>"), """{{- range .Messages }}
{{- if eq .Role "assistant" }}{{ .Content }}<|im_end|>
{{- else }}<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>
{{- if eq .Role "user" }}<|im_start|>assistant<|im_sep|>{{ end }}
{{- end }}
{{- end }}""", ("<|im_start|>", "<|im_end|>", "<|im_sep|>")),
    # Qwen2.5, Qwen3, SmolLM2 and any other ChatML template.
    TemplateFamily("ChatML", ("<|im_start|>", "<|im_end|>"), _CHATML, _CHATML_STOPS),
    # Llama 3.1, 3.2 and 3.3: a system turn always, with the date lines. Ollama's templates have no
    # clock in the Jinja's format, so the date is the one the Jinja writes when it is given none.
    TemplateFamily("Llama 3.1", ("<|start_header_id|>", "<|eot_id|>", "Cutting Knowledge Date"),
                   """<|start_header_id|>system<|end_header_id|>

Cutting Knowledge Date: December 2023
Today Date: 26 Jul 2024

{{ .System }}<|eot_id|>""" + _LLAMA3_TURNS, _LLAMA3_STOPS),
    TemplateFamily("Llama 3", ("<|start_header_id|>", "<|eot_id|>"), """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}<|start_header_id|>assistant<|end_header_id|>

""", _LLAMA3_STOPS),
    # Gemma 2 and 3: no system turn; Gemma 3 puts the system prompt at the head of the first user
    # turn (Gemma 2's template refuses a system message; here it is treated as Gemma 3 does).
    TemplateFamily("Gemma", ("<start_of_turn>", "<end_of_turn>"), """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ if and (eq $i 1) $.System }}{{ $.System }}

{{ end }}{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
""", ("<start_of_turn>", "<end_of_turn>")),
    TemplateFamily("Phi-3", ("<|user|>", "<|assistant|>", "<|end|>"), """{{- range .Messages }}<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ end }}<|assistant|>
""", ("<|end|>", "<|system|>", "<|user|>", "<|assistant|>")),
    # Llama 2: the system prompt in the first turn, a BOS before every turn after the first.
    TemplateFamily("Llama 2", ("[INST]", "[/INST]", "<<SYS>>"), """{{- $system := .System }}
{{- $bos := "" }}
{{- range .Messages }}
{{- if eq .Role "user" }}{{ $bos }}[INST] {{ if $system }}<<SYS>>
{{ $system }}
<</SYS>>

{{ end }}{{ .Content }} [/INST]
{{- $system = "" }}{{ $bos = "<s>" }}
{{- else if eq .Role "assistant" }} {{ .Content }} </s>
{{- end }}
{{- end }}""", ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")),
    # Mistral 7B v0.3 (tokenizer v3; "[AVAILABLE_TOOLS] [" with its space tells it from Nemo's
    # tekken template): the system prompt goes in front of the last user turn.
    TemplateFamily("Mistral v3", ("[INST]", "[/INST]", "[AVAILABLE_TOOLS] ["), """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}""", ("[INST]", "[/INST]")),
)

# The studio's own ChatML for base models without a template (engine.data.rendering) writes the
# model's EOS after each reply, so the Go template for it carries that EOS text.
STUDIO_CHATML = "ChatML (LoRA Studio's, for a base model without a template)"

# The studio's sampling settings (engine.chat.sampling.SETTINGS) by the names Ollama gives them.
OLLAMA_PARAMETERS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                     "repetition_penalty": "repeat_penalty", "max_new_tokens": "num_predict", "seed": "seed"}


def template_family(chat_template: Optional[str]) -> Optional[TemplateFamily]:
    """The family of a Jinja chat template, by its markers; None for a template of no known family."""
    if not chat_template:
        return None
    return next((family for family in FAMILIES if all(marker in chat_template for marker in family.markers)), None)


def family_name(chat_template: Optional[str]) -> Optional[str]:
    """The name of a Jinja chat template's family, the studio's own ChatML included; None for none."""
    if chat_template == CHATML_TEMPLATE:
        return STUDIO_CHATML
    family = template_family(chat_template)
    return family.name if family else None


def ollama_template(chat_template: Optional[str], eos_token: Optional[str] = None
                    ) -> tuple[Optional[str], list[str], Optional[str]]:
    """The Go template, stop words and default system prompt Ollama needs for the Jinja
    ``chat_template`` (``eos_token``: the model's EOS text, which the studio's own ChatML writes
    after each reply). None, no stops and None for a template of no known family."""
    if chat_template == CHATML_TEMPLATE:
        end = "<|im_end|>"
        if eos_token and eos_token != end and _plain_text(eos_token):
            end += '{{ if eq .Role "assistant" }}' + eos_token + "{{ end }}"
        return _CHATML.replace("<|im_end|>", end), list(_CHATML_STOPS), None
    family = template_family(chat_template)
    if family is None:
        return None, [], None
    system = None
    if family.go_template == _CHATML:
        # A ChatML template's built-in system prompt (Qwen2.5's, SmolLM2's) for a conversation
        # without one: Ollama sends the Modelfile's SYSTEM then. The prompt stops at the first '<':
        # a match is then tried in time linear in the template, where one that could run past every
        # '<' went over a hostile template quadratically.
        default = re.search(r"<\|im_start\|>system(?:\\n|\n)([^{}'\"\\<]+?)<\|im_end\|>", chat_template)
        system = default.group(1) if default else None
    return family.go_template, list(family.stops), system


def sampling_parameters(settings: Optional[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """Ollama's ``PARAMETER`` name and value for each of the studio's sampling settings in ``settings``
    that holds a finite number (a seed of None, "random", is left out)."""
    parameters = []
    for name, ollama_name in OLLAMA_PARAMETERS.items():
        value = (settings or {}).get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        parameters.append((ollama_name, value))
    return parameters


def folder_eos_token(folder: Path) -> Optional[str]:
    """The EOS text of a model folder's tokenizer (``tokenizer_config.json``); None without one."""
    from engine.core.atomic import read_json_object

    eos = (read_json_object(folder / "tokenizer_config.json") or {}).get("eos_token")
    if isinstance(eos, dict):  # an AddedToken written out
        eos = eos.get("content")
    return eos if isinstance(eos, str) and eos else None


def write_modelfile(path: Path, model_file: Path, chat_template: Optional[str],
                    adapter_file: Optional[Path] = None, *, eos_token: Optional[str] = None,
                    sampling: Optional[Mapping[str, Any]] = None) -> Path:
    """An Ollama Modelfile for ``model_file`` (plus ``adapter_file`` as its LoRA); ``sampling``:
    the adapter's chat settings by the studio's names (engine.chat.sampling.SETTINGS)."""
    from engine.core.atomic import write_text

    def ref(file: Path) -> str:
        return f"./{file.name}" if file.parent == path.parent else str(file)

    template, stops, system = ollama_template(chat_template, eos_token)
    lines = ["# Ollama Modelfile written by LoRA Studio. Create the model with:",
             f"#   ollama create {re.sub(r'[^a-z0-9._-]+', '-', path.stem.lower())} -f {path.name}",
             f"FROM {ref(model_file)}"]
    if adapter_file is not None:
        lines.append(f"ADAPTER {ref(adapter_file)}")
    if template:
        lines.append(f"# The chat template ({family_name(chat_template)}), in Ollama's Go template syntax:")
        lines.append(f'TEMPLATE """{template}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in stops]
        if system:
            lines.append(f'SYSTEM """{system}"""')
    elif chat_template:
        lines.append("# The chat template is of no family LoRA Studio writes for Ollama: it is stored in the GGUF "
                     "file (tokenizer.chat_template) and Ollama reads it from there.")
    parameters = sampling_parameters(sampling)
    if parameters:
        lines.append("# Sampling, from the adapter's chat settings:")
        lines += [f"PARAMETER {name} {value}" for name, value in parameters]
    write_text(path, "\n".join(lines) + "\n")
    return path


def _plain_text(token: str) -> bool:
    # A token written into a Go template and a triple-quoted Modelfile value as it is.
    return "{{" not in token and "}}" not in token and '"""' not in token
