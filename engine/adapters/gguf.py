"""GGUF files for llama.cpp and Ollama, written with the ``gguf`` package.

Two kinds: a whole model (an adapter merged into its base, as f32, f16 or q8_0, with
the tokenizer and chat template llama.cpp needs) and a GGUF LoRA (the adapter alone,
applied by llama.cpp over a GGUF of its base). Both follow llama.cpp's own converters:
tensor names from ``gguf``'s name map, and for the Llama architecture the query and key
rows permuted to llama.cpp's rotary layout (for a LoRA only ``lora_b``, whose rows those are).

Every file is read back with ``gguf.GGUFReader`` before it is renamed into place: each
tensor must be exactly what was meant to be written, and within its type's rounding of
the source. Exporting an adapter from the library (merged or as a LoRA, with an Ollama
Modelfile) is ``engine.adapters.adapter_gguf``; the Modelfile is ``engine.adapters.ollama``.
The rest stays one module (about 500 lines): both writers share the architecture
mapping, the tensor names and the read-back check, which nothing else uses.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from engine.core.atomic import check_writable, staging_path, sweep_staging
from engine.core.progress import ProgressFn, quiet
from engine.errors import StudioError
from engine.adapters.library import read_peft_config, resolve_adapter


QUANTS = ("f16", "q8_0", "f32")
# Hugging Face architecture -> llama.cpp architecture. Mistral is a Llama to llama.cpp.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
# Architectures whose rotary embedding llama.cpp applies to interleaved pairs, so the query
# and key rows of Hugging Face's half-split layout are permuted on the way in.
_PERMUTED_ROPE = ("llama",)
# A few known pre-tokenizers by the hash of how they split llama.cpp's check text (the same
# text and hash as llama.cpp's convert_hf_to_gguf.py).
_PRE_TOKENIZER_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}
_PRE_TOKENIZER_CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_LORA_PREFIX = "base_model.model."


@dataclass
class GgufResult:
    path: str
    kind: str  # "model" or "lora"
    quant: str
    architecture: str
    tensors: int
    size_bytes: int
    max_abs_error: float  # largest |read back - source| over all tensors
    worst_tensor: str
    verified: bool
    seconds: float
    modelfile: Optional[str] = None
    base_gguf: Optional[str] = None  # the base a LoRA applies to, as named in the Modelfile
    merge: Optional[dict[str, Any]] = None  # the merge's fidelity check, for a merged model
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Tensor:
    name: str
    source: Any  # float32 numpy array, in llama.cpp's layout
    qtype: Any  # gguf.GGMLQuantizationType




# the architecture ------------------------------------------------------------------------------
def _hf_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StudioError(f"{folder} has no readable config.json") from None


def _architecture(config: dict[str, Any]) -> str:
    names = config.get("architectures") or ["?"]
    arch = ARCHITECTURES.get(names[0])
    if arch is None:
        raise StudioError(f"GGUF export supports {', '.join(sorted(ARCHITECTURES))}; this model is {names[0]}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise StudioError(f"GGUF export does not support {rope.get('rope_type')} rope scaling yet")
    return arch


def _head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _add_hyperparameters(writer: Any, config: dict[str, Any]) -> None:
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    writer.add_rope_dimension_count(_head_dim(config))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(int(config["vocab_size"]))
    if _head_dim(config) != config["hidden_size"] // config["num_attention_heads"]:
        writer.add_key_length(_head_dim(config))
        writer.add_value_length(_head_dim(config))


def _name_map(arch: str, config: dict[str, Any]) -> Any:
    import gguf

    arch_enum = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)
    return gguf.get_tensor_name_map(arch_enum, int(config["num_hidden_layers"]))


def _gguf_name(name_map: Any, hf_name: str) -> str:
    mapped = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if mapped is None:
        raise StudioError(f"tensor {hf_name} has no GGUF counterpart: this model cannot be exported to GGUF")
    return mapped


def _permute(rows: Any, heads: int) -> Any:
    """Hugging Face's rotary halves -> llama.cpp's interleaved pairs (llama.cpp's own ``permute``)."""
    return (rows.reshape(heads, 2, rows.shape[0] // heads // 2, *rows.shape[1:])
            .swapaxes(1, 2).reshape(rows.shape))


def _rope_heads(arch: str, hf_name: str, config: dict[str, Any]) -> Optional[int]:
    """How many heads to permute ``hf_name``'s rows over, or None when it is not permuted."""
    if arch not in _PERMUTED_ROPE:
        return None
    if ".q_proj." in hf_name:
        return int(config["num_attention_heads"])
    if ".k_proj." in hf_name:
        return int(config.get("num_key_value_heads") or config["num_attention_heads"])
    return None


def _qtype(quant: str, shape: tuple[int, ...]) -> Any:
    from gguf import GGMLQuantizationType as Q

    if len(shape) == 1 or quant == "f32":
        return Q.F32  # norms and biases stay float32, as llama.cpp's converter keeps them
    if quant == "q8_0" and shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16  # q8_0 needs rows in blocks of 32; others fall back to f16, as in llama.cpp


def _file_type(quant: str) -> int:
    from gguf import LlamaFileType

    return {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}[quant]


# the tokenizer ---------------------------------------------------------------------------------
def _add_tokenizer(writer: Any, folder: Path, vocab_size: int, chat_template: Optional[str]) -> str:
    """Vocabulary, merges, special tokens and chat template, as llama.cpp's converter writes
    them for a byte-level BPE tokenizer; the pre-tokenizer name it chose."""
    import gguf

    from engine.models.tokenizer import load_tokenizer

    tokenizer_json = _read_tokenizer_json(folder)
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise StudioError("GGUF export supports byte-level BPE tokenizers (GPT-2 style); this model's is not one")
    tokenizer = load_tokenizer(folder)  # the model's own tokenizer code runs only when trusted
    tokens, types = _vocabulary(tokenizer, vocab_size)
    pre = _pre_tokenizer(tokenizer, tokenizer_json)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    special.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
    special.add_to_gguf(writer, quiet=True)
    return pre


def _read_tokenizer_json(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise StudioError(f"{folder} has no readable tokenizer.json, which GGUF export needs") from None


def _vocabulary(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens by id and their types; ids the tokenizer lacks are padded as unused, as llama.cpp does."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(max(vocab_size, len(by_id))):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(token)
            looks_special = token.startswith("<|") and token.endswith("|>")
            types.append(gguf.TokenType.CONTROL if added[index].special or looks_special
                         else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _pre_tokenizer(tokenizer: Any, tokenizer_json: dict[str, Any]) -> str:
    from hashlib import sha256

    digest = sha256(str(tokenizer.encode(_PRE_TOKENIZER_CHECK_TEXT)).encode()).hexdigest()
    if digest in _PRE_TOKENIZER_HASHES:
        return _PRE_TOKENIZER_HASHES[digest]
    pre = tokenizer_json.get("pre_tokenizer") or {}
    # A lone ByteLevel pre-tokenizer splits with GPT-2's own regular expression.
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


# writing and checking --------------------------------------------------------------------------
def _stored(tensor: _Tensor) -> Any:
    """The bytes (as numpy) that go into the file for ``tensor``."""
    import gguf
    import numpy as np

    if tensor.qtype == gguf.GGMLQuantizationType.F32:
        return tensor.source.astype(np.float32)
    if tensor.qtype == gguf.GGMLQuantizationType.F16:
        return tensor.source.astype(np.float16)
    return gguf.quants.quantize(tensor.source, tensor.qtype)


def _write(path: Path, arch: str, fill: Callable[[Any], None], tensors: list[_Tensor]) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    fill(writer)
    for tensor in tensors:
        data = _stored(tensor)
        if tensor.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(tensor.name, data)
        else:
            writer.add_tensor(tensor.name, data, raw_dtype=tensor.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _error_bound(tensor: _Tensor) -> float:
    """The most one value may move when stored as the tensor's type."""
    import gguf
    import numpy as np

    peak = float(np.abs(tensor.source).max()) if tensor.source.size else 0.0
    if tensor.qtype == gguf.GGMLQuantizationType.F32:
        return 0.0
    if tensor.qtype == gguf.GGMLQuantizationType.F16:
        return peak * 2.0 ** -11 + 2.0 ** -24
    return peak / 127 + 2.0 ** -24  # q8_0: one step of the largest block's scale


def verify_gguf(path: Path, tensors: list[_Tensor], expected_fields: dict[str, Any]) -> tuple[float, str]:
    """Read ``path`` back; raise unless every field and tensor is what was meant.

    Returns the largest error against the source and the tensor it is in.
    """
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(path))
    for key, wanted in expected_fields.items():
        found = reader.fields.get(key)
        value = found.contents() if found is not None else None
        if value != wanted:
            raise StudioError(f"{path.name} failed its check: {key} reads back as {value!r}, not {wanted!r}")
    written = {t.name: t for t in reader.tensors}
    if set(written) != {t.name for t in tensors}:
        raise StudioError(f"{path.name} failed its check: its tensors are not the ones written")
    worst, worst_name = 0.0, ""
    for tensor in tensors:
        back = written[tensor.name]
        if back.tensor_type != tensor.qtype:
            raise StudioError(f"{path.name} failed its check: {tensor.name} reads back as {back.tensor_type.name}")
        values = gguf.quants.dequantize(back.data, back.tensor_type).reshape(tensor.source.shape)
        intended = gguf.quants.dequantize(_stored(tensor), tensor.qtype).reshape(tensor.source.shape)
        if not np.array_equal(values, intended):
            raise StudioError(f"{path.name} failed its check: {tensor.name} reads back changed")
        error = float(np.abs(values - tensor.source).max()) if tensor.source.size else 0.0
        if error > _error_bound(tensor):
            raise StudioError(f"{path.name} failed its check: {tensor.name} is {error:.3g} off its source")
        if error >= worst:
            worst, worst_name = error, tensor.name
    return worst, worst_name



def _write_checked(path: Path, kind: str, quant: str, arch: str, fill: Callable[[Any], None], tensors: list[Any],
                   expected: Callable[[], dict[str, Any]], writing: str, report: ProgressFn,
                   started: float) -> GgufResult:
    """Write ``tensors`` into a partial file beside ``path``, read it back against its sources and
    the ``expected`` metadata (asked for once written: the writer fills some of it), then rename
    it into place; a file that fails the check is removed, never left at ``path``."""
    partial = _partial(path)
    try:
        report(1, 3, writing)
        _write(partial, arch, fill, tensors)
        report(2, 3, "reading the file back and comparing every tensor with its source")
        worst, worst_name = verify_gguf(partial, tensors, expected())
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    report(3, 3, "written and checked")
    return GgufResult(path=str(path), kind=kind, quant=quant, architecture=arch, tensors=len(tensors),
                      size_bytes=path.stat().st_size, max_abs_error=worst, worst_tensor=worst_name, verified=True,
                      seconds=round(time.perf_counter() - started, 2))

def _partial(path: Path) -> Path:
    sweep_staging(path.parent)  # what a killed export left
    return staging_path(path, "partial")


def gguf_path(output: str | Path) -> Path:
    """Where to write: ``output`` with a ``.gguf`` suffix, in a folder that exists."""
    path = Path(output).expanduser()
    if path.suffix.lower() != ".gguf":
        path = path.with_name(path.name + ".gguf")
    if not path.parent.is_dir():
        raise StudioError(f"folder {path.parent} does not exist")
    check_writable(path.parent)
    return path


# the whole model -------------------------------------------------------------------------------
def _model_tensors(folder: Path, arch: str, config: dict[str, Any], quant: str) -> Iterator[_Tensor]:
    from safetensors import safe_open

    name_map = _name_map(arch, config)
    tied = bool(config.get("tie_word_embeddings"))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise StudioError(f"{folder} has no .safetensors weights")
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for hf_name in handle.keys():
                if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
                    continue
                values = handle.get_tensor(hf_name).float().numpy()
                heads = _rope_heads(arch, hf_name, config)
                if heads is not None:
                    values = _permute(values, heads)
                yield _Tensor(_gguf_name(name_map, hf_name), values, _qtype(quant, values.shape))


def export_model_gguf(folder: str | Path, output: str | Path, quant: str = "f16", *,
                      name: Optional[str] = None, progress: Optional[ProgressFn] = None) -> GgufResult:
    """A Hugging Face model folder as one GGUF file, read back and checked before it appears."""
    import gguf

    started = time.perf_counter()
    report = progress or quiet
    folder, path = Path(folder), gguf_path(output)
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(QUANTS)}")
    config = _hf_config(folder)
    arch = _architecture(config)
    report(0, 3, f"reading {folder.name} ({arch})")
    tensors = list(_model_tensors(folder, arch, config, quant))
    chat_template = folder_chat_template(folder)
    title = name or path.stem
    pre: list[str] = []

    def fill(writer: Any) -> None:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(title)
        _add_hyperparameters(writer, config)
        writer.add_file_type(_file_type(quant))
        if quant == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        pre.append(_add_tokenizer(writer, folder, int(config["vocab_size"]), chat_template))

    def expected() -> dict[str, Any]:
        values = {"general.architecture": arch, f"{arch}.block_count": int(config["num_hidden_layers"]),
                  "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre[0]}
        if chat_template:
            values["tokenizer.chat_template"] = chat_template
        return values

    return _write_checked(path, "model", quant, arch, fill, tensors, expected,
                          f"writing {len(tensors)} tensors as {quant}", report, started)


def folder_chat_template(folder: Path) -> Optional[str]:
    """A model folder's chat template (``chat_template.jinja`` or its tokenizer config's); None without one."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    return template if isinstance(template, str) else None


# the LoRA --------------------------------------------------------------------------------------
def check_lora_exportable(adapter: Path) -> dict[str, Any]:
    """The adapter's PEFT config, or a StudioError saying why a GGUF LoRA cannot carry it."""
    peft = read_peft_config(adapter)
    if peft.get("peft_type") != "LORA":
        raise StudioError(f"adapter {adapter.name} is a {peft.get('peft_type')} adapter: only LoRA exports as a GGUF LoRA")
    if peft.get("use_dora"):
        raise StudioError(f"adapter {adapter.name} is a DoRA adapter, which a GGUF LoRA cannot carry: "
                          "export the merged model instead")
    if peft.get("alpha_pattern"):
        raise StudioError(f"adapter {adapter.name} uses a different alpha per module, which a GGUF LoRA cannot carry: "
                          "export the merged model instead")
    return peft


def _header_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, from its header (no weights read)."""
    from engine.core.safetensors_files import safetensors_header

    return {name: tuple(info["shape"]) for name, info in safetensors_header(file).items()
            if isinstance(info, dict) and isinstance(info.get("shape"), list)}


def _lora_key(adapter: Path, key: str) -> tuple[str, str]:
    """The base weight a LoRA tensor adapts, and which half of the pair it is ("A" or "B")."""
    match = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", key)
    if match is None:
        raise StudioError(f"adapter {adapter.name} holds {key}, which a GGUF LoRA cannot carry "
                          "(only lora_A/lora_B of linear layers): export the merged model instead")
    return match.group(1).removeprefix(_LORA_PREFIX) + ".weight", match.group(2)


def check_lora_fits(adapter: Path, base_folder: Path) -> None:
    """Refuse an adapter whose LoRA pairs do not fit the base's weights: for a weight W of
    out x in, A must be r x in and B out x r. llama.cpp would refuse such a file when it loads
    it, or apply it to the wrong rows. Reads the safetensors headers only."""
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in _header_shapes(adapter / "adapter_model.safetensors").items():
        base_name, half = _lora_key(adapter, key)
        pairs.setdefault(base_name, {})[half] = shape
    if not pairs:
        raise StudioError(f"adapter {adapter.name} holds no LoRA weights")
    base = {}
    for file in sorted(Path(base_folder).glob("*.safetensors")):
        base.update(_header_shapes(file))
    for base_name, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"} or len(pair["A"]) != 2 or len(pair["B"]) != 2:
            raise StudioError(f"adapter {adapter.name}: {base_name} lacks one half of its LoRA pair")
        weight = base.get(base_name)
        if weight is None:
            raise StudioError(f"adapter {adapter.name} adapts {base_name}, which its base model does not have: "
                              "is this the adapter's base?")
        rank = pair["A"][0]
        if len(weight) != 2 or pair["A"] != (rank, weight[1]) or pair["B"] != (weight[0], rank):
            raise StudioError(f"adapter {adapter.name} does not fit its base: {base_name} is {list(weight)} in the "
                              f"base, its LoRA pair is A {list(pair['A'])} and B {list(pair['B'])}; "
                              "is this the adapter's base?")


def _lora_tensors(adapter: Path, base_folder: Path, arch: str, config: dict[str, Any],
                  quant: str) -> tuple[list[_Tensor], float]:
    """The adapter's A and B matrices named and laid out for llama.cpp, and the alpha to record.

    llama.cpp scales each pair by alpha / rank; whatever PEFT does beyond that (rsLoRA's
    square root) is folded into B, so the product is the one PEFT applies.
    """
    import math

    from safetensors import safe_open

    peft = check_lora_exportable(adapter)
    check_lora_fits(adapter, base_folder)
    alpha = float(peft.get("lora_alpha") or peft.get("r") or 1)
    name_map = _name_map(arch, config)
    pairs: dict[str, dict[str, Any]] = {}
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as handle:
        for key in handle.keys():
            base_name, half = _lora_key(adapter, key)
            pairs.setdefault(base_name, {})[half] = handle.get_tensor(key).float().numpy()
    tensors = []
    for base_name, pair in sorted(pairs.items()):
        rank = pair["A"].shape[0]
        scaling = alpha / math.sqrt(rank) if peft.get("use_rslora") else alpha / rank
        lora_b = pair["B"] * (scaling * rank / alpha)
        heads = _rope_heads(arch, base_name, config)
        if heads is not None:
            lora_b = _permute(lora_b, heads)
        gguf_name = _gguf_name(name_map, base_name)
        tensors.append(_Tensor(f"{gguf_name}.lora_a", pair["A"], _qtype(quant, pair["A"].shape)))
        tensors.append(_Tensor(f"{gguf_name}.lora_b", lora_b, _qtype(quant, lora_b.shape)))
    return tensors, alpha


def export_lora_gguf(adapter: str | Path, base_folder: str | Path, output: str | Path, quant: str = "f16",
                     progress: Optional[ProgressFn] = None) -> GgufResult:
    """``adapter`` as a GGUF LoRA for llama.cpp (``--lora``) and Ollama (``ADAPTER``)."""
    import gguf

    started = time.perf_counter()
    report = progress or quiet
    adapter_path, base_folder, path = resolve_adapter(adapter), Path(base_folder), gguf_path(output)
    if quant not in QUANTS:
        raise StudioError(f"unknown GGUF type {quant!r}; choose one of {', '.join(QUANTS)}")
    config = _hf_config(base_folder)
    arch = _architecture(config)
    report(0, 3, f"reading {adapter_path.name}")
    tensors, alpha = _lora_tensors(adapter_path, base_folder, arch, config, quant)

    def fill(writer: Any) -> None:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(adapter_path.name)
        _add_hyperparameters(writer, config)
        writer.add_file_type(_file_type(quant))

    def expected() -> dict[str, Any]:
        return {"general.architecture": arch, "general.type": "adapter", "adapter.type": "lora",
                "adapter.lora.alpha": alpha}

    return _write_checked(path, "lora", quant, arch, fill, tensors, expected,
                          f"writing {len(tensors) // 2} LoRA pairs as {quant}", report, started)
