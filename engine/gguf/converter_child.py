"""Runs llama.cpp's converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py`` from the
kit) on a list of jobs in one process, so that torch and transformers are imported once.

Run as a module of its own (``engine.core.child_python``), never imported by the engine: the
converters need the ``gguf`` package of their own llama.cpp commit (the kit's ``gguf-py``), which
must come before the PyPI ``gguf`` the rest of the studio uses, and nothing of the engine is
imported here to keep it that way.

``python -m engine.gguf.converter_child KIT`` reads jobs as JSON from stdin, a list of
``{"kind": "model" | "lora", "source": folder, "output": file, "outtype": type, "base": folder}``,
and writes one JSON line per job to stdout: ``{"job": i, "ok": true}`` or ``{"job": i, "ok": false,
"error": "<the converter's last error>"}``. The converters' own log goes to stderr.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys


class _LastError(logging.StreamHandler):
    """The converters' log on stderr, remembering its last error: the one line the user reads."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.last: str = ""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.ERROR:
            self.last = record.getMessage().strip().splitlines()[0] if record.getMessage().strip() else ""


def _no_remote_code() -> None:
    """The converters load tokenizers with trust_remote_code=True; nothing in a model folder runs here."""
    import transformers

    for cls in (transformers.AutoTokenizer, transformers.AutoConfig):
        original = cls.from_pretrained.__func__

        def from_pretrained(klass, *args, _original=original, **kwargs):
            kwargs["trust_remote_code"] = False
            return _original(klass, *args, **kwargs)

        cls.from_pretrained = classmethod(from_pretrained)


def _name_gpt2_splitting() -> None:
    """llama.cpp names a byte-level BPE tokenizer's pre-tokenizer by hashing how it splits a check
    text, and refuses one it has never seen, even when it splits exactly as one it knows. A
    tokenizer whose tokenizer.json pre-tokenizer is GPT-2's byte-level split alone (a lone
    ByteLevel with its regular expression) splits as llama.cpp's "gpt-2" pre-tokenizer does,
    whatever its vocabulary, so it is named that. The export's agreement check then has
    llama.cpp tokenize the probe prompts and compares the ids with the model's own tokenizer."""
    from conversion.base import TextModel

    original = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            try:
                with open(os.path.join(self.dir_model, "tokenizer.json"), encoding="utf-8") as file:
                    pre = json.load(file).get("pre_tokenizer") or {}
            except (OSError, ValueError):
                raise NotImplementedError("its BPE pre-tokenizer is not one llama.cpp knows") from None
            if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
                logging.getLogger("lora-studio").info("unknown BPE pre-tokenizer: GPT-2's byte-level split, named gpt-2")
                return "gpt-2"
            raise NotImplementedError("its BPE pre-tokenizer is not one llama.cpp knows") from None

    TextModel.get_vocab_base_pre = get_vocab_base_pre


def _argv(job: dict) -> tuple[str, list[str]]:
    if job["kind"] == "lora":
        return "convert_lora_to_gguf.py", [job["source"], "--base", job["base"], "--outtype", job["outtype"],
                                           "--outfile", job["output"]]
    return "convert_hf_to_gguf.py", [job["source"], "--outtype", job["outtype"], "--outfile", job["output"]]


def _run(kit: str, job: dict, log: _LastError) -> dict:
    script, args = _argv(job)
    log.last = ""
    sys.argv = [os.path.join(kit, script), *args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            return {"ok": False, "error": log.last or f"the converter stopped (exit {exc.code})"}
    except Exception as exc:  # the converter's own refusals: unknown architecture, tokenizer, tensor
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"ok": False, "error": f"{type(exc).__name__}: {message}"}
    if not os.path.isfile(job["output"]):
        return {"ok": False, "error": log.last or "the converter wrote no file"}
    return {"ok": True}


def main(kit: str) -> int:
    sys.path[:0] = [os.path.join(kit, "gguf-py"), kit]
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local folder only: never the hub
    log = _LastError()
    logging.basicConfig(level=logging.INFO, handlers=[log])
    _no_remote_code()
    _name_gpt2_splitting()
    jobs = json.load(sys.stdin)
    for index, job in enumerate(jobs):
        result = _run(kit, job, log)
        print(json.dumps({"job": index, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
