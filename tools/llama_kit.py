"""Unpack llama.cpp's converter kit from the llama-cpp-python sdist the set-up built: what the
studio's GGUF export runs beside the compiled library, from the same llama.cpp commit.

``python3 tools/llama_kit.py SDIST DEST`` writes into DEST:

- ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` and their ``conversion`` package:
  llama.cpp's own Hugging Face -> GGUF converters;
- ``gguf-py``: the ``gguf`` package of that commit. The converters put it first on their path
  themselves; it is newer than the ``gguf`` release on PyPI, which the rest of the studio reads
  and writes GGUF headers with, so the two are kept apart;
- ``models``: llama.cpp's vocabulary-only GGUF files of real tokenizers and its chat templates
  (the tests build tiny models of each catalog family with them);
- ``VERSION``: the llama-cpp-python version the kit came from.

Standard library only: it runs during the set-up. Written into a staging folder and renamed into
place, so that DEST is either the whole kit or absent.
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
from pathlib import Path

# Inside vendor/llama.cpp/ of the sdist.
_WANTED = re.compile(r"(convert_hf_to_gguf\.py|convert_lora_to_gguf\.py|conversion/.+\.py|gguf-py/gguf/.+|"
                     r"models/ggml-vocab-(llama-bpe|llama-spm|qwen2|phi-3|gpt-2)\.gguf|models/templates/.+\.jinja)")


def unpack(sdist: Path, dest: Path) -> Path:
    match = re.match(r"llama_cpp_python-([\w.]+)\.tar\.gz$", sdist.name)
    if match is None:
        raise ValueError(f"{sdist.name} is not a llama-cpp-python sdist")
    staging = dest.with_name(dest.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    prefix = f"llama_cpp_python-{match.group(1)}/vendor/llama.cpp/"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            inner = member.name.removeprefix(prefix)
            if not member.isfile() or inner == member.name or not _WANTED.fullmatch(inner):
                continue
            target = staging / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, target.open("wb") as out:
                shutil.copyfileobj(source, out)
    if not (staging / "convert_hf_to_gguf.py").is_file():
        raise ValueError(f"{sdist.name} holds no llama.cpp converter")
    (staging / "VERSION").write_text(match.group(1) + "\n", encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


if __name__ == "__main__":
    print(unpack(Path(sys.argv[1]), Path(sys.argv[2])))
