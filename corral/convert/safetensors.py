"""Read tensors from a Hugging Face ``*.safetensors`` checkpoint without loading it whole.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw data. We map the file and view each tensor as a
numpy array on demand, so a converter touches one tensor at a time. Reading it ourselves
(instead of ``safetensors.numpy``) lets us take ``BF16`` weights, which numpy has no type
for: they are widened to float32 by a bit shift, exactly.

What can go wrong, each a ``BadRequestError`` naming the file: a header that is not JSON or
points outside the file, an unknown dtype, two files holding the same tensor.
"""

from __future__ import annotations

import json
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corral.errors import BadRequestError

__all__ = ["Checkpoint", "TensorRef"]

_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened in TensorRef.load
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TensorRef:
    """One tensor of a checkpoint file, read when ``load`` is called."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    _buffer: Any
    _start: int
    _end: int

    def load(self) -> np.ndarray[Any, Any]:
        """The tensor as a numpy array; floating types come back as float32."""
        dtype = np.dtype(_DTYPES[self.dtype])
        raw = np.frombuffer(
            self._buffer,
            dtype=dtype,
            count=(self._end - self._start) // dtype.itemsize,
            offset=self._start,
        ).reshape(self.shape)
        if self.dtype == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        if raw.dtype.kind == "f":
            return raw.astype(np.float32)
        return raw.copy()


class Checkpoint:
    """Every tensor of the ``*.safetensors`` files in one folder, by name."""

    def __init__(self, folder: Path) -> None:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise BadRequestError(f"no .safetensors files in {folder}")
        self._maps: list[mmap.mmap] = []
        self.tensors: dict[str, TensorRef] = {}
        for path in files:
            for ref in self._read_file(path):
                if ref.name in self.tensors:
                    raise BadRequestError(f"tensor {ref.name!r} appears twice in {folder}")
                self.tensors[ref.name] = ref

    def _read_file(self, path: Path) -> Iterator[TensorRef]:
        with path.open("rb") as handle:
            size = path.stat().st_size
            head = handle.read(8)
            if len(head) < 8:
                raise BadRequestError(f"{path.name} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length > min(_MAX_HEADER, size - 8):
                raise BadRequestError(f"{path.name} is not a safetensors file (bad header size)")
            try:
                header = json.loads(handle.read(length))
            except ValueError as exc:
                raise BadRequestError(f"{path.name}: unreadable safetensors header") from exc
            buffer = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        if isinstance(buffer, mmap.mmap):
            self._maps.append(buffer)
        if not isinstance(header, dict):
            raise BadRequestError(f"{path.name}: unreadable safetensors header")
        base = 8 + length
        for name, info in header.items():
            if name == "__metadata__":
                continue
            yield _tensor_ref(path.name, name, info, buffer, base, size)

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def load(self, name: str) -> np.ndarray[Any, Any]:
        try:
            return self.tensors[name].load()
        except KeyError:
            raise BadRequestError(f"the checkpoint has no tensor {name!r}") from None

    def close(self) -> None:
        for buffer in self._maps:
            buffer.close()
        self._maps.clear()


def _tensor_ref(
    file_name: str, name: str, info: Any, buffer: Any, base: int, size: int
) -> TensorRef:
    try:
        dtype = str(info["dtype"])
        shape = tuple(int(d) for d in info["shape"])
        start, end = (int(o) + base for o in info["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequestError(f"{file_name}: bad entry for tensor {name!r}") from exc
    if dtype not in _DTYPES:
        raise BadRequestError(f"{file_name}: tensor {name!r} has unsupported dtype {dtype}")
    itemsize = np.dtype(_DTYPES[dtype]).itemsize
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if not base <= start <= end <= size or end - start != count * itemsize:
        raise BadRequestError(f"{file_name}: tensor {name!r} lies outside the file")
    return TensorRef(name, dtype, shape, buffer, start, end)
