"""Serving adapters elsewhere with vLLM: ``export_vllm`` writes a new folder that runs them on
vLLM's multi-LoRA server (one base loaded once, the adapter picked by each request's ``model``)
on a machine with a GPU:

    adapters/<name>/     each adapter's PEFT files, byte for byte, with its card and studio.json
    chat_template.jinja  the chat template the adapters were trained with
    serve.sh             vllm serve BASE --enable-lora --lora-modules name=adapters/name ...
    README.md            how to run it and how to call it
    vllm.json            the same facts for tools: base, adapters, max_lora_rank, the command's argv

What vLLM would refuse, or serve differently from the studio, is refused before anything is
written, in one line naming the adapter: vLLM's PEFT reader rejects DoRA, ``modules_to_save``
and bias terms; it scales every module by one ``lora_alpha / r``, so a per-module rank or alpha
that changes the scale would be served wrong; and it takes one ``--chat-template`` for all its
adapters, so adapters trained with different templates go into separate exports (one server
each) rather than one of them being rendered with another's template. Nothing here needs vLLM.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.adapters.library import (
    ADAPTER_META,
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    now,
    read_adapter_meta,
    read_peft_config,
    resolve_adapter,
)
from engine.chat.loaded_adapters import saved_chat_template
from engine.core.atomic import staged_directory, write_json, write_text, writes_into
from engine.core.names import is_valid_name
from engine.errors import StudioError

# What ``vllm serve --max-lora-rank`` accepts (vllm.config.lora.MaxLoRARanks). Recent versions
# also take 1; 8 is the smallest value that every version takes, and a smaller rank fits in it.
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
ADAPTERS = "adapters"
CHAT_TEMPLATE = "chat_template.jinja"
SERVE_SCRIPT = "serve.sh"
MANIFEST = "vllm.json"
# An adapter's files that go with it: the PEFT pair vLLM loads, and the studio's record and card
# (so that the folder imports back into LoRA Studio as it was).
_ADAPTER_FILES = (PEFT_CONFIG, PEFT_WEIGHTS, ADAPTER_META, "README.md")
_VIRTUAL_TOKENS = {"PROMPT_TUNING": "prompt-tuning", "PREFIX_TUNING": "prefix-tuning", "P_TUNING": "P-tuning"}
_MERGE_INSTEAD = "merge it into its base (lora-studio adapters merge) and serve the merged model instead"


@dataclass(frozen=True)
class VllmAdapter:
    name: str  # what a request's ``model`` names it by: its library name
    path: str  # its folder, relative to the export folder
    rank: int  # its largest rank (``r`` and any per-module rank)


@dataclass(frozen=True)
class VllmExport:
    folder: Path
    base: str  # what vllm serve loads: a Hugging Face id, or a model folder's path
    adapters: list[VllmAdapter]
    max_lora_rank: int
    command: list[str]  # vllm serve's argv, run from ``folder`` (serve.sh adds what it is given)

    @property
    def shell_command(self) -> str:
        """The command as a person types it: into the folder, then ``vllm serve ...``."""
        return f"cd {shlex.quote(str(self.folder))}\n{command_text(self.command)}"


@dataclass(frozen=True)
class _Chosen:
    name: str
    source: Path
    rank: int
    template: Optional[str]  # the one it was trained with; None: it records none (the base's applies)


def export_vllm(model: str, adapters: list[str], out_dir: Path, *, served_name: Optional[str] = None) -> VllmExport:
    """Write the folder that serves ``adapters`` over ``model`` on vLLM into ``out_dir``, a new
    (or empty) folder; it appears whole or not at all. ``served_name``: what requests call the
    base model (vLLM's ``--served-model-name``; by default the base's id or path).

    Raises a StudioError (one line) for a folder that is not empty, and for an adapter that is
    unknown, not trained on ``model``, or one vLLM cannot serve as the studio does."""
    from engine.models.store import hub_id, resolve_model

    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise StudioError(f"{out_dir} is not an empty folder: export into a new folder")
    if not adapters:
        raise StudioError("nothing to export: choose at least one adapter to serve on vLLM")
    if served_name is not None and not served_name.strip():
        raise StudioError("the served model name is empty: give a name, or leave it out to use the base's")
    base_folder = resolve_model(model)
    base = hub_id(base_folder) or str(base_folder)
    chosen = _choose(model, base_folder, adapters, served_name or base)
    template, template_of = _shared_template(chosen, base_folder)
    max_rank = max_lora_rank(max(adapter.rank for adapter in chosen))
    listed = [VllmAdapter(adapter.name, f"{ADAPTERS}/{adapter.name}", adapter.rank) for adapter in chosen]
    command = vllm_command(base, listed, max_rank, served_name)
    export = VllmExport(out_dir.resolve(), base, listed, max_rank, command)
    manifest = {"base": base, "base_folder": str(base_folder), "served_model_name": served_name,
                "adapters": [asdict(adapter) for adapter in listed], "max_lora_rank": max_rank,
                "max_loras": len(listed), "chat_template": CHAT_TEMPLATE, "chat_template_of": template_of,
                "command": command, "written": now()}

    def write(folder: Path) -> None:
        for adapter in chosen:
            target = folder / ADAPTERS / adapter.name
            target.mkdir(parents=True)
            for name in _ADAPTER_FILES:
                if (adapter.source / name).is_file():
                    shutil.copyfile(adapter.source / name, target / name)
        write_text(folder / CHAT_TEMPLATE, template)
        script = folder / SERVE_SCRIPT
        write_text(script, _serve_script(export))
        script.chmod(0o755)
        write_text(folder / "README.md", _readme(export, base_folder, served_name, template_of))
        write_json(folder / MANIFEST, manifest)

    _write_new_folder(out_dir, write)
    return export


def max_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds adapters of ``rank`` (at most the
    largest it accepts: each adapter's rank is checked against it first)."""
    return next(value for value in VLLM_MAX_LORA_RANKS if value >= rank)


def vllm_command(base: str, adapters: list[VllmAdapter], max_rank: int, served_name: Optional[str]) -> list[str]:
    """``vllm serve``'s argv for these adapters, their paths relative to the export folder."""
    command = ["vllm", "serve", base, "--enable-lora", "--lora-modules",
               *(f"{adapter.name}={adapter.path}" for adapter in adapters),
               "--max-lora-rank", str(max_rank), "--max-loras", str(len(adapters)),
               "--chat-template", CHAT_TEMPLATE]
    return command + (["--served-model-name", served_name] if served_name else [])


def command_text(command: list[str]) -> str:
    """``command`` quoted for a shell, one option with its values per line."""
    lines: list[list[str]] = [[]]
    for word in command:
        if word.startswith("--"):
            lines.append([])
        lines[-1].append(shlex.quote(word))
    return " \\\n  ".join(" ".join(line) for line in lines)


# the adapters --------------------------------------------------------------------------------
def _choose(model: str, base_folder: Path, refs: list[str], base_name: str) -> list[_Chosen]:
    """Each adapter as the export names it, once vLLM is known to serve it as the studio does."""
    from engine.models.store import model_fingerprint

    chosen: list[_Chosen] = []
    fingerprint: Optional[str] = None
    for ref in refs:
        path = resolve_adapter(ref)
        name = path.name
        if not is_valid_name(name):
            raise StudioError(f"adapter folder {name!r} cannot name a vLLM adapter (letters, digits, '.', '_' and "
                              "'-' only): import it into the library under such a name first")
        if name in {adapter.name for adapter in chosen} or name == base_name:
            raise StudioError(f"two of the models to serve are named {name!r}, and requests pick one by its name: "
                              "rename one of the adapters first")
        meta, config = read_adapter_meta(path), read_peft_config(path)
        recorded = meta.get("base_model_fingerprint")
        if recorded:
            fingerprint = fingerprint or model_fingerprint(base_folder)
            if recorded != fingerprint:
                made_for = meta.get("base_model") or "another base model"
                raise StudioError(f"adapter {name!r} was trained on {made_for}, not on {model}: export it with "
                                  "the base it was trained on")
        rank = _servable_rank(name, config)
        chosen.append(_Chosen(name, path, rank, saved_chat_template(path, meta)))
    return chosen


def _servable_rank(name: str, config: dict[str, Any]) -> int:
    """The adapter's largest rank, or a StudioError saying why vLLM cannot serve it as PEFT does."""
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        kind = f"{_VIRTUAL_TOKENS[peft_type]} adapter (virtual tokens)" if peft_type in _VIRTUAL_TOKENS else \
            f"{peft_type} adapter"
        raise StudioError(f"adapter {name!r} is a {kind}, which vLLM does not serve: only LoRA adapters run on its "
                          "multi-LoRA server")
    if config.get("use_dora"):
        raise StudioError(f"adapter {name!r} is a DoRA adapter, which vLLM does not serve: {_MERGE_INSTEAD}")
    if config.get("modules_to_save"):
        modules = config["modules_to_save"]
        shown = ", ".join(map(str, modules)) if isinstance(modules, list) else str(modules)
        raise StudioError(f"adapter {name!r} also trains whole modules ({shown}), which vLLM's LoRA server "
                          f"does not load: {_MERGE_INSTEAD}")
    if config.get("bias", "none") != "none":
        raise StudioError(f"adapter {name!r} trains bias terms (bias={config['bias']!r}), which vLLM's LoRA server "
                          f"does not load: {_MERGE_INSTEAD}")
    rank_pattern, alpha_pattern = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    rank = max([config["r"], *rank_pattern.values()])
    if rank > VLLM_MAX_LORA_RANKS[-1]:
        raise StudioError(f"adapter {name!r} has rank {rank}, above {VLLM_MAX_LORA_RANKS[-1]}, the largest vLLM "
                          f"serves: {_MERGE_INSTEAD}")
    # vLLM scales every module by the adapter's one lora_alpha / r (over sqrt(r) with rsLoRA).
    alpha = config.get("lora_alpha", 8)  # PEFT's default when the config leaves it out
    scale = _scale(config["r"], alpha, bool(config.get("use_rslora")))
    for module in {*rank_pattern, *alpha_pattern}:
        module_scale = _scale(rank_pattern.get(module, config["r"]), alpha_pattern.get(module, alpha),
                              bool(config.get("use_rslora")))
        if not math.isclose(module_scale, scale, rel_tol=1e-6):
            raise StudioError(f"adapter {name!r} scales {module} by {module_scale:g} and its other modules by "
                              f"{scale:g}, and vLLM scales all of them alike: {_MERGE_INSTEAD}")
    return rank


def _scale(rank: int, alpha: float, rslora: bool) -> float:
    return alpha / (math.sqrt(rank) if rslora else rank)


def _shared_template(chosen: list[_Chosen], base_folder: Path) -> tuple[str, str]:
    """The one chat template every adapter chats with, and whose it is (for the README). An
    adapter that records none chats with the base's own (ChatML when it has none), as in the
    studio's chat."""
    if all(adapter.template is not None for adapter in chosen):
        base_template, fallback = None, False
    else:
        from engine.data.rendering import chat_template_for
        from engine.models.tokenizer import load_tokenizer

        base_template, fallback = chat_template_for(load_tokenizer(base_folder))
    templates: dict[str, list[str]] = {}
    for adapter in chosen:
        templates.setdefault(adapter.template or base_template, []).append(adapter.name)
    if len(templates) > 1:
        first, second = [names[0] for names in templates.values()][:2]
        raise StudioError(f"adapters {first!r} and {second!r} chat with different chat templates, and vLLM renders "
                          "every request through one: export them into separate folders (one server each)")
    if any(adapter.template is not None for adapter in chosen):
        whose = "the chat template the adapters were trained with"
    elif fallback:
        whose = "ChatML (the adapters record no template and their base has none: the studio chats in ChatML then)"
    else:
        whose = "the base model's own chat template (the adapters record none: the studio chats through it then)"
    return next(iter(templates)), whose


# the folder --------------------------------------------------------------------------------------
def _write_new_folder(out_dir: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` into a hidden sibling of ``out_dir``, renamed to it once all is written."""
    emptied = out_dir.is_dir()  # an empty folder made for the export: the finished one replaces it
    if emptied:
        out_dir.rmdir()
    try:
        with staged_directory(out_dir) as staging, writes_into(out_dir.parent):
            write(staging)
    except BaseException:
        if emptied:
            out_dir.mkdir(exist_ok=True)
        raise


def _serve_script(export: VllmExport) -> str:
    names = ", ".join(adapter.name for adapter in export.adapters)
    return "\n".join([
        "#!/usr/bin/env bash",
        f"# Serves the LoRA adapters {names} over {export.base} on vLLM's OpenAI-compatible server.",
        "# Written by LoRA Studio: see README.md. Options given to this script go on to vllm serve",
        "# (--port 8001, --api-key KEY, --tensor-parallel-size 2 ...).",
        "set -euo pipefail",
        'cd "$(dirname "$0")"  # the adapters and the chat template are named relative to this folder',
        f"exec {command_text(export.command)} \\",
        '  "$@"',
        "",
    ])


def _readme(export: VllmExport, base_folder: Path, served_name: Optional[str], template_of: str) -> str:
    first = export.adapters[0].name
    base_name = served_name or export.base
    rows = "\n".join(f"| `{adapter.path}/` | {adapter.rank} | `{adapter.name}` |" for adapter in export.adapters)
    if export.base == str(base_folder):
        where = (f"`{export.base}` is a model folder on the machine that wrote this export. To serve on another "
                 "machine, copy that folder there (config.json, the .safetensors weights and the tokenizer files) "
                 "and put its new path in `serve.sh` in place of this one.")
    else:
        where = (f"vLLM downloads `{export.base}` from the Hugging Face Hub on its first start. LoRA Studio's copy "
                 f"of it ({base_folder}) was converted from a 4-bit GGUF file, and the adapters were trained on that "
                 "copy: over the original weights they answer very nearly, not exactly, as in the studio. For "
                 "exactly the training weights, copy that folder to the server and put its path in `serve.sh` in "
                 "place of the id.")
    where = textwrap.fill(where, 100)
    request = json.dumps({"model": first, "messages": [{"role": "user", "content": "Hello!"}]})
    return f"""# {', '.join(a.name for a in export.adapters)} on vLLM

Written by LoRA Studio. This folder serves {len(export.adapters)} LoRA adapter(s) over one base model,
`{export.base}`, with vLLM's OpenAI-compatible server: the base is loaded once, and each request
picks an adapter by naming it in `model`.

## Run it

On a machine with a GPU that vLLM supports (an NVIDIA GPU with CUDA, for one):

```bash
pip install vllm
./serve.sh                      # or, from this folder:
{command_text(export.command)}
```

Options after `./serve.sh` go on to `vllm serve`: `--port 8001`, `--api-key KEY` (then every
request needs `Authorization: Bearer KEY`), `--tensor-parallel-size 2` for a model that needs two GPUs.
The server listens on port 8000 of every network interface unless told otherwise (`--host 127.0.0.1`).

{where}

- `--max-lora-rank {export.max_lora_rank}`: the smallest value vLLM takes that holds the largest adapter rank
  ({max(a.rank for a in export.adapters)}); vLLM reserves GPU memory for adapters of this rank.
- `--max-loras {len(export.adapters)}`: every adapter can be in the same batch of requests.
- `--chat-template {CHAT_TEMPLATE}`: {template_of}.
  vLLM renders every chat request through it, requests for the base model too.

## Call it

```bash
curl http://localhost:8000/v1/chat/completions \\
  -H 'Content-Type: application/json' \\
  -d '{request}'
```

```python
from openai import OpenAI

client = OpenAI(base_url="http://localhost:8000/v1", api_key="unused")  # or the --api-key you gave
reply = client.chat.completions.create(model="{first}", messages=[{{"role": "user", "content": "Hello!"}}])
print(reply.choices[0].message.content)
```

`model` names the adapter; `"{base_name}"` is the base model without any adapter.
`GET /v1/models` lists them all.

## What is here

| folder | rank | `model` |
| --- | --- | --- |
{rows}

Each adapter folder is a stock PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`),
with LoRA Studio's `studio.json` and model card. `vllm.json` holds the same facts for tools.
"""
