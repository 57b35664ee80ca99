"""GGUF files of the tiny test model, written at test time as llama.cpp's converter writes them
(honest ones for the store's conversion, lying ones for the hostile-input corpus)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional


def write_gguf(folder: Path, out: Path, *, blocks: Optional[int] = None,
                tamper: Callable[[str, Any], Optional[Any]] = lambda name, data: data,
                extra: Optional[tuple[str, Any]] = None) -> Path:
    """A Llama model folder as an F32 GGUF file laid out as llama.cpp's converter lays it out:
    llama tensor names, q/k rows permuted for its rotary layout, a byte-level BPE vocabulary and
    the folder's chat template. For files that lie: ``blocks`` is the layer count the header
    claims, ``tamper(name, data)`` changes or (returning None) drops a tensor, ``extra`` adds one."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab = dict(tokenizer["model"]["vocab"])
    vocab.update({added["content"]: added["id"] for added in tokenizer["added_tokens"]})
    specials = {added["id"] for added in tokenizer["added_tokens"]}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(out, arch="llama")
    writer.add_name(folder.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"] if blocks is None else blocks)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in sorted(vocab.items(), key=lambda item: item[1])])
    writer.add_token_types([3 if i in specials else 1 for i in range(len(vocab))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_chat_template((folder / "chat_template.jinja").read_text())

    def permute(weight, n_head):
        return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, -1).swapaxes(1, 2).reshape(weight.shape)

    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(config["num_hidden_layers"]):
        names.update({f"model.layers.{i}.{hf}.weight": f"blk.{i}.{gg}.weight" for hf, gg in parts.items()})
    for hf_name, weight in load_file(folder / "model.safetensors").items():
        if hf_name.endswith("q_proj.weight"):
            weight = permute(weight, heads)
        elif hf_name.endswith("k_proj.weight"):
            weight = permute(weight, kv_heads)
        data = tamper(names[hf_name], np.ascontiguousarray(weight, dtype=np.float32))
        if data is not None:
            writer.add_tensor(names[hf_name], np.ascontiguousarray(data))
    if extra is not None:
        writer.add_tensor(extra[0], extra[1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def merged_gguf(model: Path, adapter: Path, out: Path, chat_template: Optional[str] = None) -> Path:
    """``adapter`` merged into ``model`` (PEFT's merge, in float32) as an F32 GGUF file: what an
    export of the adapter holds, for a test to chat with in llama.cpp. ``chat_template``: the
    adapter's own, written in place of the model's, as an export carries it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = out.with_suffix(".merged")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter).merge_and_unload()
    merged.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    if chat_template is not None:
        (folder / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
    return write_gguf(folder, out)
