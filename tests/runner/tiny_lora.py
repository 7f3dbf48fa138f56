"""A tiny random Llama GGUF and LoRA adapters for it, written with the ``gguf`` package.

The base is the tiny Llama checkpoint of ``tests/convert/tiny.py`` (byte-level BPE, so any
text tokenizes) through our converter. An adapter holds, for each chosen weight ``W`` of
shape (out, in) as numpy sees it, ``lora_a`` of shape (rank, in) and ``lora_b`` of shape
(out, rank): llama.cpp's ne order is the reverse, [in, rank] and [rank, out], which is what
``llama-adapter.cpp`` checks against the model tensor's [in, out]. llama.cpp adds
``B @ A @ x * scale * alpha / rank`` to ``W @ x``; ``zero_b`` makes that exactly zero.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from corral.convert import convert_checkpoint
from tests.convert.tiny import write_tiny_llama

#: weights the test adapters change: attention queries and values of every block
LORA_TARGETS = ("attn_q", "attn_v")


def write_tiny_base(folder: Path) -> Path:
    """The tiny Llama as an F32 GGUF (``folder/base.gguf``)."""
    checkpoint = folder / "checkpoint"
    write_tiny_llama(checkpoint)
    return convert_checkpoint(checkpoint, folder / "base.gguf", file_type="f32")


def write_tiny_lora(
    path: Path,
    base: Path,
    *,
    rank: int = 4,
    alpha: float = 4.0,
    zero_b: bool = False,
    scale: float = 0.5,
    seed: int = 3,
    wrong_shape: bool = False,
) -> Path:
    """A LoRA GGUF for ``base``; ``wrong_shape`` makes one tensor llama.cpp must refuse."""
    reader = gguf.GGUFReader(base)
    shapes = {  # (out, in) as numpy sees them; GGUF lists ne, innermost first
        t.name: (int(t.shape[1]), int(t.shape[0]))
        for t in reader.tensors
        if t.name.endswith(".weight") and t.name.split(".")[-2] in LORA_TARGETS
    }
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name in sorted(shapes):
        out_dim, in_dim = shapes[name]
        if wrong_shape:
            in_dim += 1
        a = (rng.standard_normal((rank, in_dim)) * scale).astype(np.float32)
        b = (rng.standard_normal((out_dim, rank)) * scale).astype(np.float32)
        writer.add_tensor(f"{name}.lora_a", a)
        writer.add_tensor(f"{name}.lora_b", np.zeros_like(b) if zero_b else b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
