"""Llama-family decoders (``LlamaForCausalLM``) → llama.cpp ``llama``.

The one non-obvious step: Hugging Face stores the query and key projections for rotary
embeddings applied to the two halves of each head (``rotate_half``), while llama.cpp's
``llama`` rotates adjacent pairs. Rows of ``q_proj`` and ``k_proj`` are permuted per head so
both compute the same attention.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np

from corral.convert.base import Converter
from corral.convert.safetensors import Checkpoint
from corral.convert.tokenizer import bpe_vocab, special_token_id
from corral.errors import BadRequestError

__all__ = ["LlamaConverter", "permute_rotary"]

_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")


def permute_rotary(weight: np.ndarray[Any, Any], n_head: int) -> np.ndarray[Any, Any]:
    """Reorder the rows of each head from halves layout to interleaved pairs."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class LlamaConverter(Converter):
    architectures = ("LlamaForCausalLM", "LlamaModel")
    gguf_arch = "llama"

    @property
    def n_head(self) -> int:
        return int(self.hparam("num_attention_heads"))

    @property
    def n_head_kv(self) -> int:
        return int(self.hparam("num_key_value_heads", default=self.n_head))

    def write_metadata(self, writer: gguf.GGUFWriter) -> None:
        scaling = self.config.get("rope_scaling")
        if scaling and scaling.get("rope_type", scaling.get("type")) not in {None, "default"}:
            raise BadRequestError(f"unsupported rope_scaling {scaling!r}")
        hidden = int(self.hparam("hidden_size"))
        head_dim = int(self.hparam("head_dim", default=hidden // self.n_head))
        writer.add_vocab_size(int(self.hparam("vocab_size")))
        writer.add_context_length(int(self.hparam("max_position_embeddings", default=2048)))
        writer.add_embedding_length(hidden)
        writer.add_feed_forward_length(int(self.hparam("intermediate_size")))
        writer.add_block_count(int(self.hparam("num_hidden_layers")))
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_head_kv)
        writer.add_layer_norm_rms_eps(float(self.hparam("rms_norm_eps", default=1e-6)))
        writer.add_rope_freq_base(float(self.hparam("rope_theta", default=10000.0)))
        writer.add_rope_dimension_count(head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)

    def write_vocab(self, writer: gguf.GGUFWriter) -> None:
        vocab = bpe_vocab(self.tokenizer_json, int(self.hparam("vocab_size")))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        writer.add_token_merges(vocab.merges)
        cfg = self.tokenizer_config
        bos = special_token_id(cfg.get("bos_token"), vocab.ids)
        eos = special_token_id(cfg.get("eos_token"), vocab.ids)
        bos = bos if bos is not None else self.config.get("bos_token_id")
        eos = eos if eos is not None else self.config.get("eos_token_id")
        if isinstance(bos, int):
            writer.add_bos_token_id(bos)
        if isinstance(eos, int):
            writer.add_eos_token_id(eos)
        pad = special_token_id(cfg.get("pad_token"), vocab.ids)
        if pad is not None:
            writer.add_pad_token_id(pad)
        writer.add_add_bos_token(bool(cfg.get("add_bos_token", isinstance(bos, int))))
        writer.add_add_eos_token(bool(cfg.get("add_eos_token", False)))
        template = cfg.get("chat_template")
        if isinstance(template, str) and template:
            writer.add_chat_template(template)

    def tensors(self, checkpoint: Checkpoint) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        for name in checkpoint.tensors:
            if name.endswith("rotary_emb.inv_freq"):
                continue
            data = checkpoint.load(name)
            target = _llama_name(name)
            if target.endswith("attn_q.weight"):
                data = permute_rotary(data, self.n_head)
            elif target.endswith("attn_k.weight"):
                data = permute_rotary(data, self.n_head_kv)
            yield target, data


def _llama_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    match = _LAYER_RE.match(name)
    if match and match.group(2) in _LAYER:
        return f"blk.{match.group(1)}.{_LAYER[match.group(2)]}.{match.group(3)}"
    raise BadRequestError(f"unexpected tensor in a Llama checkpoint: {name!r}")
