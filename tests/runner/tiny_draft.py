"""Tiny random draft models: a 2-layer Llama with another model's tokenizer, written with the
``gguf`` package.

Its weights are random, so its guesses mostly disagree with the real model's: a draft that
exercises rejection. ``drop_tokens`` writes a vocabulary that is shorter than the source's
(a draft a create and a runner must refuse).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

_EMBED, _LAYERS, _HEADS, _FF = 64, 2, 4, 128


def write_random_draft(
    path: Path, like: Path, *, seed: int = 7, drop_tokens: int = 0, scale: float = 0.5
) -> Path:
    """A random Llama GGUF at ``path`` with the tokenizer of the GGUF ``like``."""
    reader = gguf.GGUFReader(like)
    tokenizer = {k: f for k, f in reader.fields.items() if k.startswith("tokenizer.ggml.")}
    tokens = list(tokenizer["tokenizer.ggml.tokens"].contents())
    types = list(tokenizer["tokenizer.ggml.token_type"].contents())
    if drop_tokens:
        tokens, types = tokens[:-drop_tokens], types[:-drop_tokens]
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("tiny random draft")
    writer.add_block_count(_LAYERS)
    writer.add_context_length(8192)
    writer.add_embedding_length(_EMBED)
    writer.add_feed_forward_length(_FF)
    writer.add_head_count(_HEADS)
    writer.add_head_count_kv(_HEADS)
    writer.add_rope_dimension_count(_EMBED // _HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model(str(tokenizer["tokenizer.ggml.model"].contents()))
    if "tokenizer.ggml.pre" in tokenizer:
        writer.add_tokenizer_pre(str(tokenizer["tokenizer.ggml.pre"].contents()))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if "tokenizer.ggml.merges" in tokenizer:
        writer.add_token_merges(list(tokenizer["tokenizer.ggml.merges"].contents()))
    for key, add in (
        ("tokenizer.ggml.bos_token_id", writer.add_bos_token_id),
        ("tokenizer.ggml.eos_token_id", writer.add_eos_token_id),
        ("tokenizer.ggml.unknown_token_id", writer.add_unk_token_id),
        ("tokenizer.ggml.padding_token_id", writer.add_pad_token_id),
    ):
        if key in tokenizer:
            add(int(tokenizer[key].contents()))
    if "tokenizer.ggml.add_bos_token" in tokenizer:
        writer.add_add_bos_token(bool(tokenizer["tokenizer.ggml.add_bos_token"].contents()))

    def tensor(name: str, *shape: int) -> None:
        data = rng.standard_normal(shape) * scale / np.sqrt(shape[-1])
        writer.add_tensor(name, data.astype(np.float32))

    tensor("token_embd.weight", n_vocab, _EMBED)
    writer.add_tensor("output_norm.weight", np.ones(_EMBED, dtype=np.float32))
    for block in range(_LAYERS):
        prefix = f"blk.{block}."
        writer.add_tensor(prefix + "attn_norm.weight", np.ones(_EMBED, dtype=np.float32))
        writer.add_tensor(prefix + "ffn_norm.weight", np.ones(_EMBED, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(prefix + name + ".weight", _EMBED, _EMBED)
        tensor(prefix + "ffn_gate.weight", _FF, _EMBED)
        tensor(prefix + "ffn_up.weight", _FF, _EMBED)
        tensor(prefix + "ffn_down.weight", _EMBED, _FF)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
