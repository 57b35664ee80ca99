"""A model's shape read from its ``config.json`` alone: what the memory estimate needs
to know, with no weights and no torch.

``load_model_spec`` accepts a catalog name (``engine/resources/models/<name>.json``, the real
``config.json`` of popular open models), ``starter``, a model-store name, a local
Hugging Face folder or a path to a ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.errors import StudioError
from engine.paths import RESOURCES

CATALOG_DIR = RESOURCES / "models"


@dataclass(frozen=True)
class LinearShape:
    """One linear module of a decoder layer, named as in the model (q_proj, gate_up_proj...)."""

    name: str
    in_features: int
    out_features: int
    bias: bool

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class _Family:
    """What a model type builds beyond the numbers in its config (from its transformers modeling file)."""

    gated_mlp: bool = True
    norms_per_layer: int = 2  # Gemma 2/3 add post-attention and post-feedforward norms
    qk_norm: bool = False  # Qwen3 and Gemma 3 normalise q and k per head
    qkv_bias: bool = False  # Qwen2 hard-codes biases on q, k and v
    fused: bool = False  # Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj
    fp32_norms: bool = False  # Gemma's RMSNorm scales by (1 + weight) in fp32 before casting back
    tie_default: bool = False


_FAMILIES: dict[str, _Family] = {
    "llama": _Family(),
    "mistral": _Family(),
    "qwen2": _Family(qkv_bias=True),
    "qwen3": _Family(qk_norm=True),
    "gemma": _Family(fp32_norms=True, tie_default=True),
    "gemma2": _Family(norms_per_layer=4, fp32_norms=True, tie_default=True),
    "gemma3_text": _Family(norms_per_layer=4, qk_norm=True, fp32_norms=True, tie_default=True),
    "phi3": _Family(fused=True),
}

# Published configs may leave out what equals the library's defaults (gemma-3-4b's names four
# text fields); these are the defaults of transformers' Gemma3TextConfig and SiglipVisionConfig.
_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
        "sliding_window": 4096, "hidden_activation": "gelu_pytorch_tanh",
    },
    "siglip_vision_model": {
        "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_channels": 3,
        "image_size": 224, "patch_size": 16, "vision_use_head": True,
    },
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only language model, enough to count its memory.

    ``extra_params`` are weights outside the language model (a vision tower and its
    projector): loaded, never trained, no activations in text fine-tuning.
    """

    name: str
    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_mlp: bool
    activation: str
    tie_word_embeddings: bool
    max_position_embeddings: Optional[int]
    norms_per_layer: int
    qk_norm: bool
    fp32_norms: bool
    layer_linears: tuple[LinearShape, ...]
    attn_logit_softcapping: Optional[float] = None
    final_logit_softcapping: Optional[float] = None
    sliding_window: Optional[int] = None
    extra_params: int = 0

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """Zero when tied: the output layer shares the embedding matrix, stored once."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params_per_layer(self) -> int:
        return sum(linear.params for linear in self.layer_linears)

    @property
    def linear_params(self) -> int:
        return self.num_layers * self.linear_params_per_layer

    @property
    def norm_params(self) -> int:
        per_layer = self.norms_per_layer * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)
        return self.num_layers * per_layer + self.hidden_size  # + the final norm

    @property
    def total_params(self) -> int:
        return (self.embedding_params + self.lm_head_params + self.linear_params + self.norm_params
                + self.extra_params)

    def linear(self, name: str) -> Optional[LinearShape]:
        return next((linear for linear in self.layer_linears if linear.name == name), None)


# building a spec -----------------------------------------------------------------------------
def spec_from_config(config: dict[str, Any], name: str) -> ModelSpec:
    """The spec of the model a ``config.json`` describes; a StudioError names what is missing."""
    if not isinstance(config, dict):
        raise StudioError(f"{name}: config.json must be a JSON object")
    text = config.get("text_config")
    text = dict(text) if isinstance(text, dict) else dict(config)
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    if model_type == "gemma3":  # a text_config written without its own model_type
        model_type = "gemma3_text"
    family = _FAMILIES.get(model_type)
    if family is None:
        known = ", ".join(sorted(_FAMILIES))
        raise StudioError(
            f"{name}: architecture {model_type or 'with no model_type'} is not one the memory estimate knows "
            f"(it knows {known})"
        )
    text = {**_CONFIG_DEFAULTS.get(model_type, {}), **{k: v for k, v in text.items() if v is not None}}
    missing = [key for key in _REQUIRED if key not in text]
    if missing:
        raise StudioError(f"{name}: config.json is missing {', '.join(missing)}, which the memory estimate needs")
    values = {key: _positive_int(text, key, name) for key in _REQUIRED}
    hidden, heads = values["hidden_size"], values["num_attention_heads"]
    kv_heads = _positive_int(text, "num_key_value_heads", name) if "num_key_value_heads" in text else heads
    head_dim = _positive_int(text, "head_dim", name) if "head_dim" in text else hidden // heads
    if heads % kv_heads:
        raise StudioError(f"{name}: {heads} attention heads cannot be shared by {kv_heads} key/value heads")
    architectures = config.get("architectures") or [model_type]
    return ModelSpec(
        name=name,
        architecture=str(architectures[0]),
        model_type=model_type,
        vocab_size=values["vocab_size"],
        hidden_size=hidden,
        num_layers=values["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=values["intermediate_size"],
        gated_mlp=family.gated_mlp,
        activation=str(text.get("hidden_activation") or text.get("hidden_act") or "silu"),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", family.tie_default))),
        max_position_embeddings=text.get("max_position_embeddings"),
        norms_per_layer=family.norms_per_layer,
        qk_norm=family.qk_norm,
        fp32_norms=family.fp32_norms,
        layer_linears=_layer_linears(text, family, hidden, heads * head_dim, kv_heads * head_dim,
                                     values["intermediate_size"]),
        attn_logit_softcapping=text.get("attn_logit_softcapping"),
        final_logit_softcapping=text.get("final_logit_softcapping"),
        sliding_window=text.get("sliding_window") if text.get("use_sliding_window", True) else None,
        extra_params=_vision_params(config, hidden, name),
    )


def _positive_int(config: dict[str, Any], key: str, name: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise StudioError(f"{name}: config.json field {key} must be a positive whole number, got {value!r}")
    return value


def _layer_linears(config: dict[str, Any], family: _Family, hidden: int, q_dim: int, kv_dim: int,
                   ffn: int) -> tuple[LinearShape, ...]:
    attention_bias = bool(config.get("attention_bias", False))
    qkv_bias = attention_bias or family.qkv_bias
    mlp_bias = bool(config.get("mlp_bias", False))
    if family.fused:
        return (
            LinearShape("qkv_proj", hidden, q_dim + 2 * kv_dim, qkv_bias),
            LinearShape("o_proj", q_dim, hidden, attention_bias),
            LinearShape("gate_up_proj", hidden, 2 * ffn, mlp_bias),
            LinearShape("down_proj", ffn, hidden, mlp_bias),
        )
    return (
        LinearShape("q_proj", hidden, q_dim, qkv_bias),
        LinearShape("k_proj", hidden, kv_dim, qkv_bias),
        LinearShape("v_proj", hidden, kv_dim, qkv_bias),
        LinearShape("o_proj", q_dim, hidden, attention_bias),
        LinearShape("gate_proj", hidden, ffn, mlp_bias),
        LinearShape("up_proj", hidden, ffn, mlp_bias),
        LinearShape("down_proj", ffn, hidden, mlp_bias),
    )


def _vision_params(config: dict[str, Any], text_hidden: int, name: str) -> int:
    """Parameters of a SigLIP vision tower and Gemma 3's projector, counted from vision_config."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return 0
    vision_type = vision.get("model_type", "siglip_vision_model")
    if vision_type != "siglip_vision_model":
        raise StudioError(f"{name}: vision tower {vision_type} is not one the memory estimate knows (siglip_vision_model)")
    v = {**_CONFIG_DEFAULTS["siglip_vision_model"], **vision}
    width, ffn, layers = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    embeddings = v["num_channels"] * v["patch_size"] ** 2 * width + width + patches * width
    # Per layer: q, k, v, out projections with biases, fc1 and fc2 with biases, two LayerNorms.
    layer = 4 * (width * width + width) + (width * ffn + ffn) + (ffn * width + width) + 4 * width
    post_norm = 2 * width
    # The attention-pooling head: a probe, multi-head attention, a LayerNorm and an MLP.
    head = width + 4 * (width * width + width) + 2 * width + (width * ffn + ffn) + (ffn * width + width)
    projector = width * text_hidden + width  # Gemma 3: projection matrix and an RMSNorm on the vision side
    return embeddings + layers * layer + post_norm + (head if v["vision_use_head"] else 0) + projector


# where specs come from -----------------------------------------------------------------------
def list_catalog() -> list[str]:
    """Names of the catalog's models, smallest first."""
    specs = [_catalog_spec(path) for path in CATALOG_DIR.glob("*.json")]
    return [spec.name for spec in sorted(specs, key=lambda spec: spec.total_params)]


def _catalog_spec(path: Path) -> ModelSpec:
    return spec_from_config(_read_config(path), path.stem)


def _catalog_path(name: str) -> Optional[Path]:
    wanted = name.lower()
    return next((path for path in CATALOG_DIR.glob("*.json") if path.stem.lower() == wanted), None)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StudioError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise StudioError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StudioError(f"{path} must hold a JSON object")
    return data


def load_model_spec(ref: str | Path) -> ModelSpec:
    """The spec for a catalog name, ``starter``, a model-store name, a folder or a config.json.

    Reads JSON only: no weights are loaded and nothing is converted.
    """
    from engine.models.store import STARTER, STARTER_NAME, list_models

    text = str(ref).strip()
    if not text:
        raise StudioError("no model given: name a catalog model, starter, a model folder or a config.json")
    if text.lower() in (STARTER, STARTER_NAME.lower()):
        starter = list_models()[0]
        if starter.ready and starter.path:
            return spec_from_config(_read_config(Path(starter.path) / "config.json"), STARTER_NAME)
        return _catalog_spec(CATALOG_DIR / f"{STARTER_NAME}.json")
    catalog = _catalog_path(text)
    if catalog is not None:
        return _catalog_spec(catalog)
    stored = next((m for m in list_models()[1:] if m.name.lower() == text.lower()), None)
    if stored is not None and stored.path:
        return _folder_spec(Path(stored.path), stored.name)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_spec(path, path.name)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return spec_from_config(_read_config(path), path.parent.name or path.stem)
        raise StudioError(
            f"{path} is not a config.json or model folder; for a .gguf file add it to the model store first "
            "(lora-studio models add FILE)"
        )
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        raise StudioError(
            f"{text!r} looks like a Hugging Face hub id, and LoRA Studio does not download configs: "
            f"use a catalog name ({', '.join(list_catalog()[:3])}, ...), a local folder or a config.json"
        )
    raise StudioError(
        f"unknown model {text!r}: not in the catalog ({', '.join(list_catalog())}), not in the model store, "
        "and no such folder or config.json"
    )


def _folder_spec(folder: Path, name: str) -> ModelSpec:
    config = folder / "config.json"
    if not config.is_file():
        raise StudioError(f"folder {folder} has no config.json")
    return spec_from_config(_read_config(config), name)
