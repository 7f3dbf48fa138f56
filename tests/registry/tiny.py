"""Tiny random GGUF models written with the ``gguf`` package (real files, seconds to make)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np


def write_tiny_gguf(
    path: Path,
    *,
    embedding: int = 256,
    blocks: int = 1,
    vocab: int = 32,
    padding_bytes: int = 0,
    seed: int = 0,
    dtype: type[np.floating] = np.float32,
) -> Path:
    """A one-block llama-shaped GGUF with random weights (F32 or F16 tensors).

    ``padding_bytes`` adds an extra tensor of that many bytes, to make large blobs.
    """
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    ff = embedding * 2
    writer.add_context_length(256)
    writer.add_embedding_length(embedding)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(embedding // 4)
    writer.add_file_type(0 if dtype is np.float32 else 1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)

    def tensor(name: str, *shape: int) -> None:
        writer.add_tensor(name, rng.standard_normal(shape).astype(dtype) * 0.02)

    tensor("token_embd.weight", vocab, embedding)
    for i in range(blocks):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(embedding, dtype=np.float32))
        for part in ("q", "k", "v", "output"):
            tensor(f"blk.{i}.attn_{part}.weight", embedding, embedding)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(embedding, dtype=np.float32))
        tensor(f"blk.{i}.ffn_gate.weight", ff, embedding)
        tensor(f"blk.{i}.ffn_up.weight", ff, embedding)
        tensor(f"blk.{i}.ffn_down.weight", embedding, ff)
    writer.add_tensor("output_norm.weight", np.ones(embedding, dtype=np.float32))
    tensor("output.weight", vocab, embedding)
    if padding_bytes:
        count = max(1, padding_bytes // 4)
        writer.add_tensor("padding.weight", rng.standard_normal(count).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
