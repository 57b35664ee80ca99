"""The base model an adapter belongs to: finding it, warning when it is not the one the
adapter was trained on, and loading it in float32 with adapters attached (for merging and
combining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from engine.core.patterns import matching_names
from engine.core.progress import ProgressFn
from engine.adapters.library import AdapterRecord, list_adapters, read_adapter_meta, read_peft_config
from engine.errors import StudioError, first_line
from engine.models.weights import model_options
from engine.models.tokenizer import load_tokenizer





# the base an adapter belongs to -------------------------------------------------------------
def find_base(adapter: Path, base: Optional[str] = None, progress: Optional[ProgressFn] = None) -> Path:
    """The model folder of ``adapter``'s base: ``base`` when given, else what it records.

    Raises a StudioError naming what was looked for when none of it is here.
    """
    from engine.models.store import resolve_model

    meta, config = read_adapter_meta(adapter), read_peft_config(adapter)
    if base:
        return resolve_model(base, progress)
    candidates = [meta.get("base_model"), meta.get("base_model_path"), config.get("base_model_name_or_path")]
    tried = [str(c) for c in dict.fromkeys(candidates) if isinstance(c, str) and c.strip()]
    for candidate in tried:
        try:
            return resolve_model(candidate, progress)
        except StudioError:
            continue
    wanted = " or ".join(repr(t) for t in tried) or "a base it does not name"
    raise StudioError(
        f"the base model of adapter {adapter.name} is missing: it was made for {wanted}, which is neither in the "
        "model store nor on disk; add that model (lora-studio models add PATH) or name one with --base"
    )


def base_warnings(adapter: Path, base_path: Path) -> list[str]:
    """What the user should know before applying ``adapter`` to the model in ``base_path``."""
    from engine.models.store import model_fingerprint

    meta = read_adapter_meta(adapter)
    recorded = meta.get("base_model_fingerprint")
    if not recorded:
        return [f"adapter {adapter.name} records no base fingerprint, so it cannot be confirmed that it was "
                f"trained on {base_path.name}"]
    actual = model_fingerprint(base_path)
    if recorded != actual:
        made_for = meta.get("base_model") or "another base model"
        return [f"adapter {adapter.name} was trained on {made_for} (fingerprint {recorded}), not on "
                f"{base_path.name} (fingerprint {actual}): the result applies it to a base it was not trained on"]
    return []


def adapters_for(model_path: Path) -> list[AdapterRecord]:
    """The library's usable adapters that go on the model in ``model_path``: those
    trained on it, and those that record no base fingerprint (made elsewhere), which may be; an
    adapter that records another base's fingerprint is left out, as the chat session refuses it."""
    from engine.models.store import model_fingerprint

    fingerprint = model_fingerprint(model_path)
    return [record for record in list_adapters() if not record.damaged
            and read_adapter_meta(Path(record.path)).get("base_model_fingerprint") in (None, "", fingerprint)]


# loading -----------------------------------------------------------------------------------------
def load_base(base_path: Path) -> tuple[Any, Any]:
    """The base model in float32, in eval mode, and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from engine.models.store import check_loadable

    check_loadable(base_path)
    try:
        tokenizer = load_tokenizer(base_path)
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32, **model_options(base_path))
    except (OSError, ValueError) as exc:
        raise StudioError(f"cannot load base model {base_path}: {first_line(exc)}") from None
    return model.eval(), tokenizer


def load_peft(model: Any, adapter: Path, name: str, peft_model: Any = None) -> Any:
    """``adapter`` loaded over ``model`` as ``name`` (into ``peft_model`` when there is one
    already), the way every caller loads one (merge, combine, chat); peft's own errors pass.

    peft matches a string ``target_modules`` (or ``exclude_modules``) with Python's ``re``, which
    cannot be stopped: such a pattern is matched here instead, under a time bound, and peft
    gets the list of module names it matched.
    """
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(str(adapter))
    patterns = [key for key in ("target_modules", "exclude_modules") if isinstance(getattr(config, key, None), str)]
    if not patterns:  # the common case: peft reads the adapter itself, as it always has
        if peft_model is None:
            return PeftModel.from_pretrained(model, str(adapter), adapter_name=name)
        peft_model.load_adapter(str(adapter), adapter_name=name)
        return peft_model
    names = [module for module, _ in model.named_modules() if module]
    for key in patterns:
        setattr(config, key, matching_names(f"adapter {adapter.name}'s {key}", getattr(config, key), names))
    if peft_model is None:
        return PeftModel.from_pretrained(model, str(adapter), adapter_name=name, config=config)
    config.inference_mode = True
    peft_model.add_adapter(name, config)  # load_adapter then finds its config and loads the weights only
    peft_model.load_adapter(str(adapter), adapter_name=name)
    return peft_model


def attach(model: Any, adapter: Path, name: str, peft_model: Any = None) -> Any:
    """``adapter`` loaded over ``model`` as ``name`` (into ``peft_model`` when there is one already)."""
    try:
        return load_peft(model, adapter, name, peft_model)
    except StudioError:
        raise
    except Exception as exc:  # a user's adapter fails to load in many ways, all theirs to act on
        text = first_line(exc)
        if "size mismatch" in str(exc):
            text = "its weight shapes do not match this base model"
        raise StudioError(f"adapter {adapter.name} cannot be applied to this base: {text}") from None

