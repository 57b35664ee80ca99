"""Merging an adapter into its base (combining adapters is ``engine.adapters.combine``).

Merging writes a plain Hugging Face model folder (safetensors shards, tokenizer with the
chat template the adapter was trained with, generation config, model card) that stock
``transformers`` loads with no PEFT at all. The arithmetic runs in float32 on the base's
full-precision weights: a QLoRA adapter is merged into the 16-bit base, never into the
4-bit copy it was trained over, which would round its update away.

Every merge is checked: probe prompts go through base+adapter and, after saving,
through the merged model as loaded back from disk; the largest logit difference and the
KL divergence between the two are reported, and a merge outside float tolerance is
flagged. This is where other tools lose quality without telling anyone.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.adapters.base_model import attach, base_warnings, find_base, load_base
from engine.core import garbage
from engine.core.progress import ProgressFn, quiet
from engine.adapters.library import now, read_adapter_meta, read_peft_config, resolve_adapter
from engine.core.atomic import check_writable, staged_directory, write_json
from engine.errors import StudioError
from engine.models import trust
from engine.models.weights import model_options

MERGE_REPORT = "studio_merge.json"
DTYPES = ("auto", "float32", "bfloat16", "float16")
# (max |logit difference|, mean KL in nats) a merge may show, by the dtype it is stored in.
# float32 is the real test of the merge arithmetic; 16-bit storage rounds every weight, so
# its bounds are those rounding alone produces on small models.
TOLERANCES = {"float32": (1e-4, 1e-6), "float16": (0.05, 1e-4), "bfloat16": (0.5, 1e-3)}
# When the check itself must run in float32 (no room for a float64 copy), its own arithmetic
# noise sets the floor.
_FLOAT32_CHECK_LOGIT, _FLOAT32_CHECK_KL = 1e-3, 1e-6
_SHARD_SIZE = "2GB"
PROBE_TOKENS = 48
PROBE_CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short poem about the sea."}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "Explain in one sentence why the sky is blue."}],
]
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. Once upon a time"


@dataclass
class Fidelity:
    """How far the merged model's next-token logits are from base+adapter's, on probe prompts."""

    prompts: int
    tokens: int
    max_abs_logit_diff: float
    mean_kl: float  # KL(base+adapter || merged) in nats, averaged over positions
    max_kl: float
    adapter_effect: float  # max |logit diff| between base and base+adapter: what the check could see
    check_precision: str  # the arithmetic both sides ran in
    tolerance_logit: float
    tolerance_kl: float
    within_tolerance: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MergeResult:
    output: str
    adapter: str
    base_model: str
    base_path: str
    dtype: str
    fidelity: Fidelity
    seconds: float
    size_bytes: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def _check_full_precision(base_path: Path) -> None:
    config = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "quantized")
        raise StudioError(
            f"base model {base_path.name} is stored quantized ({method}): merging needs its 16-bit weights, "
            "so add the original unquantized model and merge into that"
        )


def _check_mergeable(adapter: Path) -> dict[str, Any]:
    config = read_peft_config(adapter)
    if config.get("peft_type") != "LORA":
        raise StudioError(
            f"adapter {adapter.name} is a {config.get('peft_type')} adapter: only LoRA and DoRA adapters change "
            "weights that can be merged (prompt and prefix tuning add virtual tokens instead)"
        )
    return config



# probes -----------------------------------------------------------------------------------------
def probe_texts(tokenizer: Any, chat_template: Optional[str], template_of: Optional[str] = None) -> list[str]:
    """The probe prompts as text: chats through the template the adapter was trained with (when
    there is one; ``template_of`` names it), and a plain text."""
    from engine.data.rendering import render_conversation

    texts = []
    if chat_template or getattr(tokenizer, "chat_template", None):
        for conversation in PROBE_CONVERSATIONS:
            try:
                texts.append(render_conversation(conversation, tokenizer, add_generation_prompt=True,
                                                 chat_template=chat_template, template_of=template_of))
            except StudioError:
                # Some templates refuse a system message (Gemma 2's raises "System role not
                # supported"): such a model is probed with the other conversations.
                if conversation[0]["role"] != "system":
                    raise
    texts.append(PROBE_TEXT)
    return texts


def probe_inputs(tokenizer: Any, chat_template: Optional[str], template_of: Optional[str] = None) -> list[Any]:
    """Token ids of the probe prompts (``probe_texts``), at most ``PROBE_TOKENS`` each."""
    encoded = [tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :PROBE_TOKENS]
               for text in probe_texts(tokenizer, chat_template, template_of)]
    return [ids for ids in encoded if ids.shape[1] > 0]


def probe_logits(model: Any, inputs: list[Any]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits[0].double() for ids in inputs]


def compare_logits(reference: list[Any], other: list[Any], dtype: str, adapter_effect: float,
                   check_dtype: str = "float64") -> Fidelity:
    import torch

    diffs, kls = [], []
    for ref, out in zip(reference, other):
        diffs.append((ref - out).abs().max().item())
        ref_log, out_log = torch.log_softmax(ref.double(), -1), torch.log_softmax(out.double(), -1)
        kls.append((ref_log.exp() * (ref_log - out_log)).sum(-1).clamp_min(0))
    kl = torch.cat(kls)
    tol_logit, tol_kl = TOLERANCES[dtype]
    if check_dtype == "float32":
        tol_logit, tol_kl = max(tol_logit, _FLOAT32_CHECK_LOGIT), max(tol_kl, _FLOAT32_CHECK_KL)
    max_diff, mean_kl = max(diffs), kl.mean().item()
    return Fidelity(
        prompts=len(reference),
        tokens=int(kl.numel()),
        max_abs_logit_diff=max_diff,
        mean_kl=mean_kl,
        max_kl=kl.max().item(),
        adapter_effect=adapter_effect,
        check_precision=check_dtype,
        tolerance_logit=tol_logit,
        tolerance_kl=tol_kl,
        within_tolerance=max_diff <= tol_logit and mean_kl <= tol_kl,
    )


def _max_difference(first: list[Any], second: list[Any]) -> float:
    return max((a - b).abs().max().item() for a, b in zip(first, second))


# merge -------------------------------------------------------------------------------------------
def _stored_dtype(base_path: Path) -> str:
    config = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    stored = config.get("dtype") or config.get("torch_dtype")
    return stored if stored in TOLERANCES else "float32"


def merge_adapter(adapter: str | Path, output: str | Path, *, base: Optional[str] = None, dtype: str = "auto",
                  progress: Optional[ProgressFn] = None, max_shard_size: str = _SHARD_SIZE) -> MergeResult:
    """Merge ``adapter`` into its base and write the result as a new model folder ``output``.

    ``dtype`` "auto" keeps the base's stored precision. The folder appears only once it is
    complete and checked; if anything fails nothing is left at ``output``.
    """
    import torch

    started = time.perf_counter()
    report = progress or quiet
    steps = 7
    output = _new_folder(output)
    if dtype not in DTYPES:
        raise StudioError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    adapter_path = resolve_adapter(adapter)
    _check_mergeable(adapter_path)
    meta = read_adapter_meta(adapter_path)
    report(0, steps, "finding the base model")
    base_path = find_base(adapter_path, base)
    _check_full_precision(base_path)
    warnings = base_warnings(adapter_path, base_path)
    target_dtype = _stored_dtype(base_path) if dtype == "auto" else dtype

    report(1, steps, f"loading {base_path.name}")
    model, tokenizer = load_base(base_path)
    chat_template = meta.get("chat_template") or getattr(tokenizer, "chat_template", None)
    inputs = probe_inputs(tokenizer, chat_template, f"adapter {adapter_path.name!r}" if meta.get("chat_template") else None)
    report(2, steps, f"applying {adapter_path.name} and running the probe prompts")
    check_dtype = _check_precision(model)
    peft_model, reference, effect = _reference(model, adapter_path, inputs, check_dtype)
    report(3, steps, "merging the adapter into the weights")
    merged = peft_model.merge_and_unload().to(getattr(torch, target_dtype))
    with staged_directory(output) as staging:
        report(4, steps, "writing safetensors shards, tokenizer and generation config")
        merged.save_pretrained(staging, safe_serialization=True, max_shard_size=max_shard_size)
        del merged, peft_model, model
        _write_tokenizer(tokenizer, chat_template, staging)
        _copy_generation_config(base_path, staging)
        report(5, steps, "loading the merged model back and checking it against base+adapter")
        # A base with its own (trusted) code passes it on to the merged folder, which runs the same code.
        code = model_options(base_path)
        fidelity = _check_merged(staging, inputs, reference, target_dtype, effect, check_dtype, code)
        result = MergeResult(
            output=str(output), adapter=adapter_path.name, base_model=str(meta.get("base_model") or base_path.name),
            base_path=str(base_path), dtype=target_dtype, fidelity=fidelity,
            seconds=round(time.perf_counter() - started, 2),
            size_bytes=sum(f.stat().st_size for f in staging.iterdir() if f.is_file()), warnings=warnings,
        )
        report(6, steps, "writing the model card")
        write_json(staging / MERGE_REPORT, {**result.to_dict(), "merged": now(), "method": meta.get("method")})
        (staging / "README.md").write_text(_merged_card(result, meta), encoding="utf-8")
    if code["trust_remote_code"]:
        trust.trust(output)
    report(7, steps, "merged and checked" if fidelity.within_tolerance else "merged, but outside float tolerance")
    return result


def _new_folder(output: str | Path) -> Path:
    output = Path(output).expanduser()
    if output.exists():
        raise StudioError(f"{output} already exists: merge into a new folder")
    if not output.parent.is_dir():
        raise StudioError(f"folder {output.parent} does not exist")
    check_writable(output.parent)
    return output


def _reference(model: Any, adapter: Path, inputs: list[Any], check_dtype: str) -> tuple[Any, list[Any], float]:
    """The adapter applied to ``model`` (in ``check_dtype``), its probe logits, and how far they
    are from the base's own."""
    import torch

    # The base alone only shows how much the adapter changes (so that a check which sees
    # nothing means something): float32 is precise enough for that, and twice as fast.
    base_logits = probe_logits(model, inputs)
    peft_model = attach(model, adapter, "merging").to(getattr(torch, check_dtype))
    reference = probe_logits(peft_model, inputs)
    return peft_model, reference, _max_difference(reference, base_logits)


def _write_tokenizer(tokenizer: Any, chat_template: Optional[str], folder: Path) -> None:
    # The template the adapter was trained with, so chatting with the merged model renders
    # prompts exactly as training did.
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)


def _copy_generation_config(base_path: Path, folder: Path) -> None:
    source = base_path / "generation_config.json"
    if source.is_file() and not (folder / "generation_config.json").is_file():
        shutil.copy2(source, folder / "generation_config.json")


def _check_precision(model: Any) -> str:
    """float64 when a float64 copy of the model fits in free memory, else float32.

    In float32 the summation order alone moves a 30-layer model's logits by about 1e-4,
    as much as the tolerance; in float64 what is left is the merge and the stored precision.
    """
    import psutil

    needed = sum(p.numel() for p in model.parameters()) * 8 * 3 // 2
    return "float64" if psutil.virtual_memory().available > needed else "float32"


def _check_merged(folder: Path, inputs: list[Any], reference: list[Any], dtype: str, effect: float,
                  check_dtype: str, code: dict[str, Any]) -> Fidelity:
    import torch
    from transformers import AutoModelForCausalLM

    garbage.collect()
    # Loaded back by stock transformers, as a user would, and run in the reference's precision.
    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **code).to(getattr(torch, check_dtype))
    try:
        return compare_logits(reference, probe_logits(reloaded.eval(), inputs), dtype, effect, check_dtype)
    finally:
        del reloaded
        garbage.collect()


def _merged_card(result: MergeResult, meta: dict[str, Any]) -> str:
    f = result.fidelity
    verdict = "within float tolerance" if f.within_tolerance else "**OUTSIDE float tolerance: check before use**"
    method = str(meta.get("method") or "lora")
    qlora = ("\nThe adapter was trained with QLoRA over a 4-bit copy of the base; it is merged into the base's "
             "full-precision weights, never into 4-bit ones.\n" if method == "qlora" else "")
    warned = "".join(f"\n> Warning: {w}\n" for w in result.warnings)
    return (
        f"# {Path(result.output).name}\n\n"
        f"`{result.base_model}` with the {method.upper()} adapter `{result.adapter}` merged into its weights by "
        f"LoRA Studio, stored in {result.dtype}. It loads with stock transformers, no PEFT needed:\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
        "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")\n```\n"
        f"{qlora}{warned}\n"
        "## Fidelity check\n\n"
        f"{f.prompts} probe prompts ({f.tokens} positions) through base+adapter and through this merged model:\n\n"
        "| measure | value | tolerance |\n| --- | --- | --- |\n"
        f"| max \\|logit difference\\| | {f.max_abs_logit_diff:.3g} | {f.tolerance_logit:g} |\n"
        f"| mean KL divergence (nats) | {f.mean_kl:.3g} | {f.tolerance_kl:g} |\n"
        f"| max KL divergence (nats) | {f.max_kl:.3g} | |\n"
        f"| adapter's own effect (max \\|logit change\\|) | {f.adapter_effect:.3g} | |\n\n"
        f"Verdict: {verdict}.\n"
    )
