"""A tiny random vision pair: the tiny Llama of ``tests/convert/tiny.py`` and a CLIP projector.

The projector is a ``clip`` GGUF of the LLaVA kind (``clip.projector_type = "mlp"``), with the
tensor names and metadata keys llama.cpp's ``tools/mtmd/clip.cpp`` reads for it: a ViT (patch
embedding as a convolution, learned positions, pre-norm blocks with biased attention and a
GELU feed-forward) whose next-to-last block feeds a two-layer MLP (``mm.0``, GELU, ``mm.2``)
into the language model's embedding width. Images are 32 px with 8 px patches: 16 image
tokens. Weights are random but large enough that different pictures give different answers.

``png_bytes`` writes a PNG with the standard library only, for test pictures.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from corral.convert import convert_checkpoint
from tests.convert.tiny import LLAMA, write_tiny_llama

Array = np.ndarray[Any, Any]

#: the projector's geometry: image side, patch side, ViT width, heads, feed-forward, blocks
IMAGE_SIZE, PATCH_SIZE = 32, 8
VIT = {"hidden": 32, "heads": 2, "ffn": 48, "layers": 2}
#: image tokens per picture ((32 / 8) ** 2)
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2


def write_tiny_projector(
    path: Path,
    *,
    text_embd: int | None = None,
    seed: int = 7,
    image_size: int = IMAGE_SIZE,
    patch_size: int = PATCH_SIZE,
    vit: dict[str, int] | None = None,
) -> Path:
    """The projector GGUF; ``text_embd`` other than the tiny Llama's width makes a pair
    llama.cpp must refuse. The geometry can grow (``image_size``, ``vit``) for benchmarks."""
    out_embd = int(LLAMA["hidden"]) if text_embd is None else text_embd
    shape = {**VIT, **(vit or {})}
    hidden, heads, ffn, layers = shape["hidden"], shape["heads"], shape["ffn"], shape["layers"]
    n_patches = (image_size // patch_size) ** 2
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> Array:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(path, "clip")
    writer.add_name("tiny-vision")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", False)
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", hidden)
    writer.add_uint32("clip.vision.feed_forward_length", ffn)
    writer.add_uint32("clip.vision.projection_dim", out_embd)
    writer.add_uint32("clip.vision.block_count", layers)
    writer.add_uint32("clip.vision.attention.head_count", heads)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    tensors: dict[str, Array] = {
        # numpy shapes are llama.cpp's ne reversed: the convolution is (out, in, kh, kw)
        "v.patch_embd.weight": w(hidden, 3, patch_size, patch_size, scale=0.2),
        "v.patch_embd.bias": w(hidden, scale=0.1),
        "v.position_embd.weight": w(n_patches, hidden, scale=0.2),
        "v.pre_ln.weight": 1 + w(hidden, scale=0.1),
        "v.pre_ln.bias": w(hidden, scale=0.1),
    }
    for i in range(layers):
        p = f"v.blk.{i}."
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[p + part + ".weight"] = w(hidden, hidden)
            tensors[p + part + ".bias"] = w(hidden, scale=0.1)
        for norm in ("ln1", "ln2"):
            tensors[p + norm + ".weight"] = 1 + w(hidden, scale=0.1)
            tensors[p + norm + ".bias"] = w(hidden, scale=0.1)
        tensors[p + "ffn_up.weight"] = w(ffn, hidden)
        tensors[p + "ffn_up.bias"] = w(ffn, scale=0.1)
        tensors[p + "ffn_down.weight"] = w(hidden, ffn)
        tensors[p + "ffn_down.bias"] = w(hidden, scale=0.1)
    tensors["mm.0.weight"] = w(out_embd, hidden)
    tensors["mm.0.bias"] = w(out_embd, scale=0.1)
    tensors["mm.2.weight"] = w(out_embd, out_embd, scale=0.6)
    tensors["mm.2.bias"] = w(out_embd, scale=0.1)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_tiny_vision_pair(folder: Path, *, context: int = 1024) -> tuple[Path, Path]:
    """``(model, projector)``: the tiny Llama (F32, trained context ``context`` so that a few
    chat turns with pictures fit) and its projector, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "checkpoint"
    write_tiny_llama(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["max_position_embeddings"] = context
    (checkpoint / "config.json").write_text(json.dumps(config))
    model = convert_checkpoint(checkpoint, folder / "base.gguf", file_type="f32")
    projector = write_tiny_projector(folder / "projector.gguf")
    return model, projector


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A random RGB picture as a PNG file (standard library only)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return encode_png(pixels)


def encode_png(pixels: Array) -> bytes:
    """``pixels`` (height x width x 3, uint8) as a PNG file."""
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
