"""BERT encoders (sentence-transformers models such as all-MiniLM-L6-v2) → llama.cpp ``bert``.

Pooling comes from the sentence-transformers files: ``modules.json`` names the Pooling
module's folder, whose ``config.json`` says mean, CLS or last-token pooling. Without those
files we write mean pooling, what sentence-transformers does for a bare BERT. Max pooling
has no llama.cpp equivalent and is refused rather than silently changed.

Cross-encoders (``BertForSequenceClassification``: a sentence-transformers CrossEncoder
folder, such as ms-marco-MiniLM) become rerankers: pooling type RANK, the labels of
``id2label`` as ``bert.classifier.output_labels`` (their count is the classifier's rows), the
pooler's dense layer as ``cls`` and the classifier as ``cls.output``. llama.cpp's RANK
pooling then computes what Hugging Face does: ``classifier(tanh(pooler(h[CLS])))``. (Its own
converter drops the pooler, which changes every score of such a model.)
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


_CLASSIFIER = {
    "pooler.dense.weight": "cls.weight",
    "pooler.dense.bias": "cls.bias",
    "classifier.weight": "cls.output.weight",
    "classifier.bias": "cls.output.bias",
}


class BertConverter(Converter):
    architectures = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
    gguf_arch = "bert"
    #: the classifier is a few rows: kept exact, it makes the score
    f32_tensors = frozenset({"token_types", "cls.output"})

    @property
    def is_cross_encoder(self) -> bool:
        """A sequence-classification checkpoint: converted as a reranker."""
        return "BertForSequenceClassification" in (self.config.get("architectures") or [])

    def classifier_labels(self) -> list[str]:
        """The labels in index order: ``id2label``, else ``num_labels`` generic ones."""
        id2label = self.config.get("id2label")
        if isinstance(id2label, dict) and id2label:
            try:
                ordered = sorted((int(key), str(value)) for key, value in id2label.items())
            except (TypeError, ValueError) as exc:
                raise BadRequestError(f"config.json's id2label has a bad index: {exc}") from exc
            if [index for index, _ in ordered] != list(range(len(ordered))):
                raise BadRequestError("config.json's id2label must number its labels 0, 1, ...")
            return [label for _, label in ordered]
        count = self.hparam("num_labels", default=1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise BadRequestError(f"config.json's num_labels must be a positive integer: {count!r}")
        return [f"LABEL_{index}" for index in range(count)]

    def pooling_type(self) -> gguf.PoolingType:
        if self.is_cross_encoder:
            return gguf.PoolingType.RANK
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
        if self.is_cross_encoder:
            writer.add_classifier_output_labels(self.classifier_labels())
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
        if self.is_cross_encoder:
            yield from self._classifier_tensors(checkpoint)
        for name in checkpoint.tensors:
            plain = name.removeprefix("bert.")
            if plain.startswith(_SKIPPED) or (self.is_cross_encoder and plain in _CLASSIFIER):
                continue
            yield _bert_name(plain), checkpoint.load(name)

    def _classifier_tensors(
        self, checkpoint: Checkpoint
    ) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        """The reranking head: the pooler (where present) and the classifier, checked
        against the labels and the hidden size, so that llama.cpp will load them."""
        hidden = int(self.hparam("hidden_size"))
        labels = len(self.classifier_labels())
        found = {
            name.removeprefix("bert."): name
            for name in checkpoint.tensors
            if name.removeprefix("bert.") in _CLASSIFIER
        }
        if "classifier.weight" not in found:
            raise BadRequestError(
                "this BertForSequenceClassification checkpoint has no classifier.weight"
            )
        if ("pooler.dense.weight" in found) != ("pooler.dense.bias" in found):
            raise BadRequestError("the pooler needs both its weight and its bias")
        shapes = {
            "pooler.dense.weight": (hidden, hidden),
            "pooler.dense.bias": (hidden,),
            "classifier.weight": (labels, hidden),
            "classifier.bias": (labels,),
        }
        for plain in _CLASSIFIER:
            if plain not in found:
                continue
            data = checkpoint.load(found[plain])
            if tuple(data.shape) != shapes[plain]:
                raise BadRequestError(
                    f"{plain} has shape {list(data.shape)}, expected {list(shapes[plain])}"
                    f" ({labels} label(s) in config.json, hidden size {hidden})"
                )
            yield _CLASSIFIER[plain], data


def _bert_name(name: str) -> str:
    stem, _, kind = name.rpartition(".")
    if stem in _EMBEDDINGS and kind in {"weight", "bias"}:
        return f"{_EMBEDDINGS[stem]}.{kind}"
    match = _LAYER_RE.match(name)
    if match and match.group(2) in _LAYER:
        return f"blk.{match.group(1)}.{_LAYER[match.group(2)]}.{match.group(3)}"
    raise BadRequestError(f"unexpected tensor in a BERT checkpoint: {name!r}")
