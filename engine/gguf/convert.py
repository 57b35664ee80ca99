"""llama.cpp's own converters, run on Hugging Face folders and PEFT LoRAs in a child process
(``converter_child``): the GGUF a user gets is the one llama.cpp's project would write.

Before the child starts (about ten seconds of imports), what can be refused in one line is:
a folder that is not a model, a model that needs its own code, an architecture the kit's
converter does not know. What the converter itself refuses (a tokenizer it cannot read, a tensor
it has no name for) comes back as the converter's own last error.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from engine.core.child_python import python_module_command
from engine.core.progress import ProgressFn, quiet
from engine.errors import StudioError
from engine.gguf.runtime import require
from engine.models.trust import needs_code


@dataclass(frozen=True)
class ConvertJob:
    source: str  # a model folder, or a PEFT adapter folder for a LoRA
    output: str
    outtype: str  # the converter's --outtype: f32, f16, bf16, q8_0
    kind: str = "model"  # or "lora"
    base: Optional[str] = None  # a LoRA's base model folder (its config is what the converter reads)


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StudioError(f"{folder} has no readable config.json: it is not a Hugging Face model folder") from None
    if not isinstance(config, dict):
        raise StudioError(f"{folder}/config.json is not a JSON object")
    return config


def check_convertible(folder: Path, kit: Path) -> str:
    """The model's architecture, or one line saying why llama.cpp's converter cannot take it."""
    config = read_config(folder)
    if needs_code(folder):  # an empty auto_map (Phi-4's config.json has one) names no code
        raise StudioError(f"{folder.name} needs its own code (trust_remote_code): llama.cpp's converter only "
                          "converts the architectures it knows, without running a model's code")
    names = config.get("architectures")
    arch = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    if arch is None:
        raise StudioError(f"{folder.name}'s config.json names no architecture")
    known = (kit / "conversion" / "__init__.py").read_text(encoding="utf-8")
    if f'"{arch}"' not in known:
        raise StudioError(f"llama.cpp's converter ({kit.name} {_version(kit)}) cannot convert {arch} models")
    return arch


def _version(kit: Path) -> str:
    version = kit / "VERSION"
    return version.read_text(encoding="utf-8").strip() if version.is_file() else "?"


def convert_folders(jobs: list[ConvertJob], progress: Optional[ProgressFn] = None) -> list[Optional[str]]:
    """Run every job in one converter child; for each, None when its file was written, else the
    converter's one-line reason. A file of a failed job is removed."""
    kit = require().kit
    report = progress or quiet
    for job in jobs:
        check_convertible(Path(job.base if job.kind == "lora" else job.source), kit)
    report(0, len(jobs), f"starting llama.cpp's converter ({len(jobs)} file{'s' if len(jobs) != 1 else ''})")
    child = subprocess.Popen(python_module_command("engine.gguf.converter_child", kit), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child.stdin.write(json.dumps([asdict(job) for job in jobs]))
    child.stdin.close()
    log: deque[str] = deque(maxlen=40)
    errors: list[Optional[str]] = [None] * len(jobs)
    done = 0
    # The log goes to stderr; read it in a thread, so that a full pipe never stalls the child.
    reader = threading.Thread(target=lambda: log.extend(child.stderr), daemon=True)
    reader.start()
    for line in child.stdout:
        if not line.startswith('{"job"'):
            continue
        result = json.loads(line)
        errors[result["job"]] = None if result["ok"] else result["error"]
        done += 1
        report(done, len(jobs), f"converted {Path(jobs[result['job']].source).name}")
    code = child.wait()
    reader.join(timeout=5)
    if done < len(jobs):
        last = next((line.strip() for line in reversed(log) if line.strip()), f"exit status {code}")
        for index in range(done, len(jobs)):
            errors[index] = f"llama.cpp's converter stopped: {last}"
    for job, error in zip(jobs, errors):
        if error is not None:
            Path(job.output).unlink(missing_ok=True)
    return errors


def convert(job: ConvertJob, progress: Optional[ProgressFn] = None) -> Path:
    """One conversion, or a StudioError with the converter's reason."""
    error = convert_folders([job], progress)[0]
    if error is not None:
        what = "the LoRA" if job.kind == "lora" else Path(job.source).name
        raise StudioError(f"llama.cpp's converter could not convert {what}: {error}")
    return Path(job.output)
