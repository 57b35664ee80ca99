"""Ollama Modelfiles for GGUF files: the model (and its LoRA), and the chat template
written as the Go template Ollama needs where it can be."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional


_CHATML_GO_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ if $last }}<|im_start|>assistant
{{ end }}
{{- end }}"""
_LLAMA3_GO_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}"""


def ollama_template(chat_template: Optional[str]) -> tuple[Optional[str], list[str], Optional[str]]:
    """The Go template, stop words and default system prompt Ollama needs for ``chat_template``.

    Ollama templates are Go templates, not Jinja: the two template families most models use
    (ChatML and Llama 3) are written out; for any other the Modelfile leaves TEMPLATE out and
    Ollama reads the Jinja template stored in the GGUF file.
    """
    if not chat_template:
        return None, [], None
    if "<|im_start|>" in chat_template and "<|im_end|>" in chat_template:
        # The prompt stops at the first '<': a match is then tried in time linear in the template,
        # where one that could run past every '<' went over a hostile template quadratically.
        default = re.search(r"<\|im_start\|>system(?:\\n|\n)([^{}'\"\\<]+?)<\|im_end\|>", chat_template)
        return _CHATML_GO_TEMPLATE, ["<|im_start|>", "<|im_end|>"], default.group(1) if default else None
    if "<|start_header_id|>" in chat_template and "<|eot_id|>" in chat_template:
        return _LLAMA3_GO_TEMPLATE, ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], None
    return None, [], None


def write_modelfile(path: Path, model_file: Path, chat_template: Optional[str],
                    adapter_file: Optional[Path] = None) -> Path:
    """An Ollama Modelfile for ``model_file`` (plus ``adapter_file`` as its LoRA)."""
    from engine.core.atomic import write_text

    def ref(file: Path) -> str:
        return f"./{file.name}" if file.parent == path.parent else str(file)

    template, stops, system = ollama_template(chat_template)
    lines = ["# Ollama Modelfile written by LoRA Studio. Create the model with:",
             f"#   ollama create {re.sub(r'[^a-z0-9._-]+', '-', path.stem.lower())} -f {path.name}",
             f"FROM {ref(model_file)}"]
    if adapter_file is not None:
        lines.append(f"ADAPTER {ref(adapter_file)}")
    if template:
        lines.append(f'TEMPLATE """{template}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in stops]
        if system:
            lines.append(f'SYSTEM """{system}"""')
    elif chat_template:
        lines.append("# The chat template is stored in the GGUF file (tokenizer.chat_template); Ollama reads it from there.")
    write_text(path, "\n".join(lines) + "\n")
    return path
