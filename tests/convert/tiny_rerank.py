"""A tiny random BERT cross-encoder, written as a sentence-transformers CrossEncoder folder
(``BertForSequenceClassification``: ``bert.``-prefixed encoder, pooler, classifier), and its
score computed in numpy the way Hugging Face computes it:
``classifier(tanh(pooler(h[CLS])))`` over ``[CLS] query [SEP] document [SEP]``, the
document's tokens as token type 1.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from tests.convert.tiny import BERT_SPECIALS, BERT_WORDS, _gelu, _layer_norm, write_tiny_bert

Array = np.ndarray[Any, Any]

VOCAB = BERT_SPECIALS + BERT_WORDS
CLS, SEP = VOCAB.index("[CLS]"), VOCAB.index("[SEP]")


def write_tiny_cross_encoder(
    folder: Path, *, seed: int = 3, labels: int = 1, pooler: bool = True
) -> dict[str, Array]:
    """The folder and its tensors (HF names, ``bert.`` prefix included)."""
    encoder = write_tiny_bert(folder, seed=seed)
    (folder / "modules.json").unlink()
    shutil.rmtree(folder / "1_Pooling")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(labels)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(labels)}
    (folder / "config.json").write_text(json.dumps(config))
    hidden = int(config["hidden_size"])
    rng = np.random.default_rng(seed + 100)
    tensors = {
        f"bert.{name}": value for name, value in encoder.items() if not name.startswith("pooler.")
    }
    if pooler:
        tensors["bert.pooler.dense.weight"] = encoder["pooler.dense.weight"] * 5
        tensors["bert.pooler.dense.bias"] = encoder["pooler.dense.bias"]
    tensors["classifier.weight"] = (rng.standard_normal((labels, hidden)) * 0.5).astype(np.float32)
    tensors["classifier.bias"] = (rng.standard_normal(labels) * 0.1).astype(np.float32)
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def word_ids(text: str) -> list[int]:
    """WordPiece ids of a text made of the tiny vocabulary's words (``cats``: cat ##s)."""
    ids: list[int] = []
    for word in text.replace(".", " .").replace(",", " ,").split():
        if word in VOCAB:
            ids.append(VOCAB.index(word))
            continue
        for suffix in ("s", "ing"):
            stem = word.removesuffix(suffix)
            if stem != word and stem in VOCAB:
                ids += [VOCAB.index(stem), VOCAB.index("##" + suffix)]
                break
        else:
            ids.append(VOCAB.index("[UNK]"))
    return ids


def pair_ids(query: str, document: str) -> tuple[list[int], list[int]]:
    """The tokens and token types Hugging Face's tokenizer gives the pair."""
    first = [CLS, *word_ids(query), SEP]
    second = [*word_ids(document), SEP]
    return first + second, [0] * len(first) + [1] * len(second)


def cross_encoder_scores(
    t: dict[str, Array], tokens: list[int], types: list[int], heads: int = 4
) -> Array:
    """The classifier's logits for one pair (one value per label), in float64."""
    x = (
        t["bert.embeddings.word_embeddings.weight"][tokens]
        + t["bert.embeddings.position_embeddings.weight"][: len(tokens)]
        + t["bert.embeddings.token_type_embeddings.weight"][types]
    ).astype(np.float64)
    x = _layer_norm(x, t["bert.embeddings.LayerNorm.weight"], t["bert.embeddings.LayerNorm.bias"])
    layer = 0
    while f"bert.encoder.layer.{layer}.output.dense.weight" in t:
        p = f"bert.encoder.layer.{layer}."

        def lin(name: str, h: Array, p: str = p) -> Array:
            return h @ t[p + name + ".weight"].T + t[p + name + ".bias"]

        n, hidden = x.shape
        d = hidden // heads
        q = lin("attention.self.query", x).reshape(n, heads, d).transpose(1, 0, 2)
        k = lin("attention.self.key", x).reshape(n, heads, d).transpose(1, 0, 2)
        v = lin("attention.self.value", x).reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = (scores @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = _layer_norm(
            x + lin("attention.output.dense", attn),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
        )
        up = _gelu(lin("intermediate.dense", x))
        x = _layer_norm(
            x + lin("output.dense", up),
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
        )
        layer += 1
    pooled = x[0]
    if "bert.pooler.dense.weight" in t:
        pooled = np.tanh(pooled @ t["bert.pooler.dense.weight"].T + t["bert.pooler.dense.bias"])
    logits: Array = pooled @ t["classifier.weight"].T + t["classifier.bias"]
    return logits


def reference_score(t: dict[str, Array], query: str, document: str) -> float:
    tokens, types = pair_ids(query, document)
    return float(cross_encoder_scores(t, tokens, types)[0])
