"""BERT encoders (sentence-transformers models such as all-MiniLM-L6-v2) → llama.cpp ``bert``.

Pooling comes from the sentence-transformers files: ``modules.json`` names the Pooling
module's folder, whose ``config.json`` says mean, CLS or last-token pooling. Without those
files we write mean pooling, what sentence-transformers does for a bare BERT. Max pooling
has no llama.cpp equivalent and is refused rather than silently changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import gguf
import numpy as np

from corral.convert.base import Converter, read_json
from corral.convert.safetensors import Checkpoint
from corral.convert.tokenizer import special_token_id, wordpiece_vocab
from corral.errors import BadRequestError

__all__ = ["BertConverter"]

_EMBEDDINGS = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}
_LAYER = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_SKIPPED = ("embeddings.position_ids", "pooler.", "cls.")
_SPECIALS = {
    "unk_token": "add_unk_token_id",
    "sep_token": "add_sep_token_id",
    "pad_token": "add_pad_token_id",
    "mask_token": "add_mask_token_id",
}


class BertConverter(Converter):
    architectures = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
    gguf_arch = "bert"
    f32_tensors = frozenset({"token_types"})

    def pooling_type(self) -> gguf.PoolingType:
        modules = self.folder / "modules.json"
        if not modules.is_file():
            return gguf.PoolingType.MEAN
        try:
            entries = json.loads(modules.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadRequestError(f"modules.json is not readable JSON: {exc}") from exc
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and str(entry.get("type", "")).endswith(".Pooling"):
                config = read_json(self.folder / str(entry.get("path", "")) / "config.json")
                if config.get("pooling_mode_mean_tokens"):
                    return gguf.PoolingType.MEAN
                if config.get("pooling_mode_cls_token"):
                    return gguf.PoolingType.CLS
                if config.get("pooling_mode_lasttoken"):
                    return gguf.PoolingType.LAST
                raise BadRequestError(
                    "this model's pooling (max or sqrt-length mean) is not supported"
                )
        return gguf.PoolingType.MEAN

    def write_metadata(self, writer: gguf.GGUFWriter) -> None:
        writer.add_context_length(int(self.hparam("max_position_embeddings")))
        writer.add_embedding_length(int(self.hparam("hidden_size")))
        writer.add_feed_forward_length(int(self.hparam("intermediate_size")))
        writer.add_block_count(int(self.hparam("num_hidden_layers")))
        writer.add_head_count(int(self.hparam("num_attention_heads")))
        writer.add_layer_norm_eps(float(self.hparam("layer_norm_eps", default=1e-12)))
        writer.add_causal_attention(False)
        writer.add_pooling_type(self.pooling_type())
        if self.hparam("hidden_act", default="gelu") not in {"gelu", "gelu_new"}:
            raise BadRequestError(f"unsupported BERT activation {self.config['hidden_act']!r}")

    def write_vocab(self, writer: gguf.GGUFWriter) -> None:
        size = int(self.hparam("vocab_size"))
        vocab = wordpiece_vocab(self.folder, self.tokenizer_json, size)
        if len(vocab.tokens) != size:
            raise BadRequestError(
                f"the vocabulary has {len(vocab.tokens)} tokens but config.json says {size}"
            )
        writer.add_tokenizer_model("bert")
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        writer.add_token_type_count(int(self.hparam("type_vocab_size", default=2)))
        cls_id = special_token_id(self.tokenizer_config.get("cls_token", "[CLS]"), vocab.ids)
        if cls_id is not None:  # llama.cpp's BERT reads the "BOS" token as [CLS]
            writer.add_bos_token_id(cls_id)
        for key, method in _SPECIALS.items():
            token_id = special_token_id(self.tokenizer_config.get(key), vocab.ids)
            if token_id is not None:
                getattr(writer, method)(token_id)
        writer.add_add_bos_token(True)
        writer.add_add_sep_token(True)

    def tensors(self, checkpoint: Checkpoint) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        for name in checkpoint.tensors:
            plain = name.removeprefix("bert.")
            if plain.startswith(_SKIPPED):
                continue
            yield _bert_name(plain), checkpoint.load(name)


def _bert_name(name: str) -> str:
    stem, _, kind = name.rpartition(".")
    if stem in _EMBEDDINGS and kind in {"weight", "bias"}:
        return f"{_EMBEDDINGS[stem]}.{kind}"
    match = _LAYER_RE.match(name)
    if match and match.group(2) in _LAYER:
        return f"blk.{match.group(1)}.{_LAYER[match.group(2)]}.{match.group(3)}"
    raise BadRequestError(f"unexpected tensor in a BERT checkpoint: {name!r}")
