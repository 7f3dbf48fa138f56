"""Hugging Face safetensors checkpoints → GGUF, for llama.cpp.

``convert_checkpoint(folder, out_path, file_type="f16")`` picks the converter from
``config.json``'s ``architectures`` (BERT encoders, Llama decoders), writes the GGUF and
returns what it wrote. Blocking and CPU-bound: callers on an event loop use
``asyncio.to_thread``. Bad input (no config, unknown architecture, a missing or unexpected
tensor, an unsupported tokenizer) raises ``BadRequestError`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from corral.convert.base import FILE_TYPES, Converter, read_json
from corral.convert.bert import BertConverter
from corral.convert.llama import LlamaConverter
from corral.errors import BadRequestError

__all__ = ["CONVERTERS", "FILE_TYPES", "Converter", "convert_checkpoint", "converter_for"]

CONVERTERS: tuple[type[Converter], ...] = (BertConverter, LlamaConverter)


def converter_for(folder: Path, file_type: str = "f16") -> Converter:
    """The converter for the checkpoint in ``folder``; ``BadRequestError`` if none fits."""
    if not (folder / "config.json").is_file():
        raise BadRequestError(f"{folder} is not a Hugging Face checkpoint (no config.json)")
    architectures = read_json(folder / "config.json").get("architectures") or []
    for converter in CONVERTERS:
        if any(name in converter.architectures for name in architectures):
            return converter(folder, file_type)
    known = sorted(name for c in CONVERTERS for name in c.architectures)
    raise BadRequestError(
        f"unsupported architecture {architectures!r}; the converter knows {', '.join(known)}"
    )


def convert_checkpoint(folder: Path, out_path: Path, *, file_type: str = "f16") -> Path:
    """Convert ``folder`` to a GGUF at ``out_path`` (written to a temp name, then renamed)."""
    converter = converter_for(folder, file_type)
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        converter.convert(partial)
        os.replace(partial, out_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return out_path
