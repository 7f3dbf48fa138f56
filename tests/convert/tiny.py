"""Tiny random checkpoints written the way Hugging Face writes them, and numpy forwards.

The forwards are the reference the converted GGUFs are checked against: plain numpy, written
from the architectures' definitions (HF's BERT with exact GELU; Llama with RMSNorm, rotary
embeddings on halves of each head, grouped-query attention and SwiGLU).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

Array = np.ndarray[Any, Any]

BERT_WORDS = ["the", "cat", "sat", "on", "mat", "dog", "run", "##s", "##ing", "a", ".", ","]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_tiny_bert(folder: Path, *, seed: int = 0, pooling: str = "mean") -> dict[str, Array]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = BERT_SPECIALS + BERT_WORDS
    hidden, layers, heads, ffn, positions = 32, 2, 4, 64, 64
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "max_position_embeddings": positions,
        "type_vocab_size": 2,
        "vocab_size": len(vocab),
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "unk_token": "[UNK]",
                "pad_token": "[PAD]",
                "mask_token": "[MASK]",
            }
        )
    )
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(BERT_SPECIALS)]
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": added}))
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        )
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {f"pooling_mode_{pooling}_tokens": True, "pooling_mode_cls_token": pooling == "cls"}
        )
    )
    rng = _rng(seed)

    def w(*shape: int, scale: float = 0.2) -> Array:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    tensors: dict[str, Array] = {
        "embeddings.word_embeddings.weight": w(len(vocab), hidden, scale=1.0),
        "embeddings.position_embeddings.weight": w(positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": 1 + w(hidden, scale=0.1),
        "embeddings.LayerNorm.bias": w(hidden, scale=0.1),
        "embeddings.position_ids": np.arange(positions, dtype=np.int64)[None, :],
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": w(hidden),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for part, shape in (
            ("attention.self.query", (hidden, hidden)),
            ("attention.self.key", (hidden, hidden)),
            ("attention.self.value", (hidden, hidden)),
            ("attention.output.dense", (hidden, hidden)),
            ("intermediate.dense", (ffn, hidden)),
            ("output.dense", (hidden, ffn)),
        ):
            tensors[p + part + ".weight"] = w(*shape)
            tensors[p + part + ".bias"] = w(shape[0], scale=0.05)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[p + norm + ".weight"] = 1 + w(hidden, scale=0.1)
            tensors[p + norm + ".bias"] = w(hidden, scale=0.1)
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def _layer_norm(x: Array, weight: Array, bias: Array, eps: float = 1e-12) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: Array = (x - mean) / np.sqrt(var + eps) * weight + bias
    return out


def _gelu(x: Array) -> Array:
    erf = np.vectorize(math.erf)
    out: Array = 0.5 * x * (1 + erf(x / math.sqrt(2)))
    return out


def bert_forward(t: dict[str, Array], tokens: list[int], heads: int = 4) -> Array:
    """Last hidden states (one row per token) of the tiny BERT, token type 0."""
    x = (
        t["embeddings.word_embeddings.weight"][tokens]
        + t["embeddings.position_embeddings.weight"][: len(tokens)]
        + t["embeddings.token_type_embeddings.weight"][0]
    ).astype(np.float64)
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    layer = 0
    while f"encoder.layer.{layer}.output.dense.weight" in t:
        p = f"encoder.layer.{layer}."

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
    return x


# ---- Llama ---------------------------------------------------------------------------------

LLAMA = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 96, "theta": 10000.0}


def _byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    by_byte = dict(zip(printable, codes, strict=True))
    return [chr(by_byte[b]) for b in range(256)]


def write_tiny_llama(folder: Path, *, seed: int = 1) -> dict[str, Array]:
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w")]
    vocab = {token: i for i, token in enumerate(alphabet)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    bos, eos = len(vocab), len(vocab) + 1
    n_vocab = len(vocab) + 2
    tokenizer = {
        "added_tokens": [
            {"id": bos, "content": "<|begin|>", "special": True},
            {"id": eos, "content": "<|end|>", "special": True},
        ],
        "pre_tokenizer": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|begin|>", "eos_token": "<|end|>", "add_bos_token": True})
    )
    h, ffn = LLAMA["hidden"], LLAMA["ffn"]
    heads, kv_heads = LLAMA["heads"], LLAMA["kv_heads"]
    head_dim = int(h) // int(heads)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "intermediate_size": ffn,
        "num_hidden_layers": LLAMA["layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5,
        "rope_theta": LLAMA["theta"],
        "max_position_embeddings": 128,
        "vocab_size": n_vocab,
        "tie_word_embeddings": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    rng = _rng(seed)

    def w(*shape: int, scale: float = 0.15) -> Array:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    h, ffn, kv = int(h), int(ffn), int(kv_heads) * head_dim
    tensors: dict[str, Array] = {
        "model.embed_tokens.weight": w(n_vocab, h, scale=1.0),
        "model.norm.weight": 1 + w(h, scale=0.1),
        "lm_head.weight": w(n_vocab, h),
    }
    for i in range(int(LLAMA["layers"])):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = 1 + w(h, scale=0.1)
        tensors[p + "post_attention_layernorm.weight"] = 1 + w(h, scale=0.1)
        tensors[p + "self_attn.q_proj.weight"] = w(h, h)
        tensors[p + "self_attn.k_proj.weight"] = w(kv, h)
        tensors[p + "self_attn.v_proj.weight"] = w(kv, h)
        tensors[p + "self_attn.o_proj.weight"] = w(h, h)
        tensors[p + "mlp.gate_proj.weight"] = w(ffn, h)
        tensors[p + "mlp.up_proj.weight"] = w(ffn, h)
        tensors[p + "mlp.down_proj.weight"] = w(h, ffn)
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def _rms(x: Array, weight: Array, eps: float = 1e-5) -> Array:
    out: Array = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight
    return out


def _rope(x: Array, positions: Array, theta: float) -> Array:
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    angles = positions[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :]
    half = d // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    out: Array = x * cos + rotated * sin
    return out


def llama_forward(t: dict[str, Array], tokens: list[int]) -> Array:
    """Logits (one row per token) of the tiny Llama, as HF computes them."""
    heads, kv_heads = int(LLAMA["heads"]), int(LLAMA["kv_heads"])
    x = t["model.embed_tokens.weight"][tokens].astype(np.float64)
    n, hidden = x.shape
    d = hidden // heads
    positions = np.arange(n, dtype=np.float64)
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(int(LLAMA["layers"])):
        p = f"model.layers.{i}."
        h = _rms(x, t[p + "input_layernorm.weight"])
        q = (h @ t[p + "self_attn.q_proj.weight"].T).reshape(n, heads, d)
        k = (h @ t[p + "self_attn.k_proj.weight"].T).reshape(n, kv_heads, d)
        v = (h @ t[p + "self_attn.v_proj.weight"].T).reshape(n, kv_heads, d)
        q, k = _rope(q, positions, LLAMA["theta"]), _rope(k, positions, LLAMA["theta"])
        group = heads // kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, hidden)
        x = x + attn @ t[p + "self_attn.o_proj.weight"].T
        h = _rms(x, t[p + "post_attention_layernorm.weight"])
        gate = h @ t[p + "mlp.gate_proj.weight"].T
        up = h @ t[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ t[p + "mlp.down_proj.weight"].T
    x = _rms(x, t["model.norm.weight"])
    logits: Array = x @ t["lm_head.weight"].T
    return logits
