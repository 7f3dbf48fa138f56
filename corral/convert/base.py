"""What every architecture converter shares: the folder, its configs, and the GGUF writing.

A converter reads a Hugging Face checkpoint folder (``config.json``, tokenizer files,
``*.safetensors``) and writes one GGUF file. Subclasses name the HF architectures they take
(``config.json``'s ``architectures``), write their metadata and vocabulary, and map each
checkpoint tensor to its llama.cpp name. The output is deterministic: the same folder and
options give the same bytes, so a converted model has a stable digest.

Output types: ``f32`` keeps every tensor as float32; ``f16`` stores matrices as float16 and
keeps vectors (norms, biases) and the few tensors llama.cpp reads as float32 in float32;
``bf16`` does the same with bfloat16 matrices (rounded to nearest even), which CPUs with
AVX512-BF16 multiply about 1.3x faster than float16, and others somewhat slower.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import gguf
import numpy as np

from corral.convert.safetensors import Checkpoint
from corral.errors import BadRequestError

__all__ = ["FILE_TYPES", "Converter", "read_json"]

logger = logging.getLogger(__name__)

FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
}


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise BadRequestError(f"{path.name} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequestError(f"{path.name} must hold a JSON object")
    return data


class Converter:
    """One HF architecture family → one llama.cpp architecture."""

    architectures: ClassVar[tuple[str, ...]] = ()
    gguf_arch: ClassVar[str] = ""
    #: tensors (llama.cpp names, without ".weight") always kept in float32
    f32_tensors: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, folder: Path, file_type: str = "f16") -> None:
        if file_type not in FILE_TYPES:
            raise BadRequestError(
                f"unsupported output type {file_type!r}; choose one of {sorted(FILE_TYPES)}"
            )
        self.folder = folder
        self.file_type = file_type
        self.config = read_json(folder / "config.json")
        self.tokenizer_json = read_json(folder / "tokenizer.json")
        self.tokenizer_config = read_json(folder / "tokenizer_config.json")

    # ---- for subclasses ----------------------------------------------------------------

    def write_metadata(self, writer: gguf.GGUFWriter) -> None:
        raise NotImplementedError

    def write_vocab(self, writer: gguf.GGUFWriter) -> None:
        raise NotImplementedError

    def tensors(self, checkpoint: Checkpoint) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        """(llama.cpp name, float32 array) for every tensor the GGUF holds."""
        raise NotImplementedError

    def hparam(self, *keys: str, default: Any = None) -> Any:
        for key in keys:
            if key in self.config and self.config[key] is not None:
                return self.config[key]
        if default is None:
            raise BadRequestError(f"config.json lacks {keys[0]!r}")
        return default

    # ---- the conversion ------------------------------------------------------------------

    def convert(self, out_path: Path) -> None:
        checkpoint = Checkpoint(self.folder)
        writer = gguf.GGUFWriter(out_path, self.gguf_arch)
        try:
            name = self.config.get("_name_or_path") or self.folder.name
            writer.add_name(str(name).rsplit("/", 1)[-1])
            writer.add_file_type(int(FILE_TYPES[self.file_type]))
            self.write_metadata(writer)
            self.write_vocab(writer)
            for tensor_name, data in self.tensors(checkpoint):
                stored, raw_type = self._stored(tensor_name, data)
                writer.add_tensor(tensor_name, stored, raw_dtype=raw_type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
            checkpoint.close()

    def _stored(
        self, name: str, data: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], gguf.GGMLQuantizationType | None]:
        """The tensor as written, and its GGML type where numpy's dtype does not say it."""
        base = name.removesuffix(".weight").removesuffix(".bias")
        if self.file_type != "f32" and data.ndim >= 2 and base not in self.f32_tensors:
            if self.file_type == "bf16":
                matrix = np.ascontiguousarray(data, dtype=np.float32)
                bf16 = gguf.GGMLQuantizationType.BF16
                return gguf.quants.quantize(matrix, bf16), bf16
            return data.astype(np.float16), None
        return np.ascontiguousarray(data, dtype=np.float32), None
