"""Read a GGUF file's header: metadata key/values and tensor descriptors.

Why our own parser instead of ``gguf.GGUFReader``: that reader builds a numpy view per array
element (seconds on a 100k-token vocabulary) and raises whatever numpy raises on a damaged
file. Here every count, length and offset is checked against the file size before it is
used, so a truncated or hostile file gives ``GGUFError`` and nothing else, and big arrays
(vocabularies) are skipped unless asked for. The ``gguf`` package supplies the type tables
(its ``constants`` module alone).

What can go wrong: a file that is not GGUF (bad magic), an unsupported version (only 2 and
3, little-endian), counts that could not fit in the file, strings that are not UTF-8,
duplicate keys, tensors whose data lies beyond the end of the file.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.errors import GGUFError
from corral.imports import submodule_only

# The type tables alone: ``import gguf`` would load numpy and the whole package (a good part
# of the server's start-up) for four tables.
if TYPE_CHECKING:
    from gguf.constants import (
        GGML_QUANT_SIZES,
        GGMLQuantizationType,
        GGUFValueType,
        LlamaFileType,
    )
else:
    _constants = submodule_only("gguf", "constants")
    GGML_QUANT_SIZES = _constants.GGML_QUANT_SIZES
    GGMLQuantizationType = _constants.GGMLQuantizationType
    GGUFValueType = _constants.GGUFValueType
    LlamaFileType = _constants.LlamaFileType

__all__ = [
    "ArraySummary",
    "GGUFInfo",
    "TensorInfo",
    "file_type_name",
    "format_parameter_count",
    "read_gguf",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
#: arrays longer than this are summarised unless the caller asks for every element
SMALL_ARRAY = 64
_MAX_STRING_BYTES = 64 * 1024 * 1024
_MAX_DIMS = 8

_SCALARS: dict[int, tuple[str, int]] = {
    GGUFValueType.UINT8: ("<B", 1),
    GGUFValueType.INT8: ("<b", 1),
    GGUFValueType.UINT16: ("<H", 2),
    GGUFValueType.INT16: ("<h", 2),
    GGUFValueType.UINT32: ("<I", 4),
    GGUFValueType.INT32: ("<i", 4),
    GGUFValueType.FLOAT32: ("<f", 4),
    GGUFValueType.BOOL: ("<?", 1),
    GGUFValueType.UINT64: ("<Q", 8),
    GGUFValueType.INT64: ("<q", 8),
    GGUFValueType.FLOAT64: ("<d", 8),
}


@dataclass(frozen=True, slots=True)
class ArraySummary:
    """Stands in for a long array (e.g. the vocabulary) that was skipped, not read."""

    element_type: str
    length: int


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int
    n_elements: int
    n_bytes: int


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """Everything in a GGUF header that the store, estimator and ``show`` need."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_size: int
    alignment: int = DEFAULT_ALIGNMENT
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def architecture(self) -> str:
        value = self.metadata.get("general.architecture", "")
        return value if isinstance(value, str) else ""

    def arch_value(self, suffix: str, default: Any = None) -> Any:
        """``<architecture>.<suffix>`` from the metadata, e.g. ``context_length``."""
        return self.metadata.get(f"{self.architecture}.{suffix}", default)

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> str:
        raw = self.metadata.get("general.file_type")
        if isinstance(raw, int):
            return file_type_name(raw)
        return _guess_file_type(self.tensors)

    @property
    def context_length(self) -> int:
        value = self.arch_value("context_length", 0)
        return int(value) if isinstance(value, int) else 0

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) else None


def file_type_name(value: int) -> str:
    """``general.file_type`` number → Ollama's name (``Q4_K_M``, ``F16``, ...)."""
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return "unknown"
    if name == "ALL_F32":
        return "F32"
    return name.removeprefix("MOSTLY_")


def _guess_file_type(tensors: tuple[TensorInfo, ...]) -> str:
    counts: dict[str, int] = {}
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            counts[tensor.ggml_type] = counts.get(tensor.ggml_type, 0) + tensor.n_elements
    if not counts:
        return "unknown"
    return max(counts.items(), key=lambda item: item[1])[0]


def format_parameter_count(count: int) -> str:
    """``134515008`` → ``"134.52M"``, as Ollama shows ``parameter_size``."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            value = count / scale
            text = f"{value:.2f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return str(count)


_U64 = struct.Struct("<Q")


class _Cursor:
    """Bounds-checked little-endian reads over a buffer."""

    def __init__(self, buffer: bytes | mmap.mmap, size: int) -> None:
        self.buffer = buffer
        self.size = size
        self.offset = 0

    def need(self, count: int, what: str) -> None:
        if count < 0 or self.offset + count > self.size:
            raise GGUFError(f"invalid GGUF file: truncated while reading {what}")

    def unpack(self, fmt: str, width: int, what: str) -> Any:
        self.need(width, what)
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += width
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", 8, what))

    def string(self, what: str) -> str:
        length = self.u64(what)
        if length > _MAX_STRING_BYTES:
            raise GGUFError(f"invalid GGUF file: {what} is {length} bytes long")
        self.need(length, what)
        raw = bytes(self.buffer[self.offset : self.offset + length])
        self.offset += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Step over ``count`` strings (a tokenizer's 50-250k: one tight loop)."""
        buffer, offset, size = self.buffer, self.offset, self.size
        length_at = _U64.unpack_from
        for _ in range(count):
            if offset + 8 > size:
                break
            offset += 8 + length_at(buffer, offset)[0]
            if offset > size:
                break
        else:
            self.offset = offset
            return
        raise GGUFError(f"invalid GGUF file: truncated while reading {what}")


def read_gguf(path: str | os.PathLike[str], *, full_arrays: bool = False) -> GGUFInfo:
    """Parse the header of the GGUF at ``path``; raise ``GGUFError`` for anything invalid."""
    file_path = Path(path)
    try:
        with file_path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 24:
                raise GGUFError(f"invalid GGUF file: {file_path.name} is too small")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return _parse(mapped, size, file_path, full_arrays=full_arrays)
    except GGUFError:
        raise
    except (OSError, ValueError, OverflowError, struct.error) as exc:
        raise GGUFError(f"invalid GGUF file: {exc}") from exc


def _parse(buffer: mmap.mmap, size: int, path: Path, *, full_arrays: bool) -> GGUFInfo:
    cursor = _Cursor(buffer, size)
    cursor.need(4, "magic")
    if bytes(buffer[0:4]) != GGUF_MAGIC:
        raise GGUFError("invalid file magic: not a GGUF model")
    cursor.offset = 4
    version = cursor.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version}")
    tensor_count = cursor.u64("tensor count")
    kv_count = cursor.u64("metadata count")
    # Each tensor descriptor needs at least 8+4+8+4+8 bytes, each key/value 8+4+1.
    if tensor_count * 32 > size or kv_count * 13 > size:
        raise GGUFError("invalid GGUF file: counts exceed the file size")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cursor.string("metadata key")
        if key in metadata:
            raise GGUFError(f"invalid GGUF file: duplicate key {key!r}")
        value_type = cursor.u32(f"type of {key}")
        metadata[key] = _read_value(cursor, value_type, key, full_arrays=full_arrays)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError("invalid GGUF file: general.alignment must be a power of two")
    descriptors = [_read_tensor_descriptor(cursor) for _ in range(tensor_count)]
    data_offset = -(-cursor.offset // alignment) * alignment
    tensors: list[TensorInfo] = []
    seen: set[str] = set()
    for name, shape, type_id, offset in descriptors:
        if name in seen:
            raise GGUFError(f"invalid GGUF file: duplicate tensor {name!r}")
        seen.add(name)
        tensors.append(_tensor_info(name, shape, type_id, offset, data_offset, size))
    return GGUFInfo(
        path=path,
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        data_offset=data_offset,
        file_size=size,
        alignment=alignment,
    )


def _read_value(cursor: _Cursor, value_type: int, key: str, *, full_arrays: bool) -> Any:
    if value_type == GGUFValueType.STRING:
        return cursor.string(key)
    if value_type in _SCALARS:
        fmt, width = _SCALARS[value_type]
        return cursor.unpack(fmt, width, key)
    if value_type == GGUFValueType.ARRAY:
        element_type = cursor.u32(f"array type of {key}")
        length = cursor.u64(f"array length of {key}")
        if element_type == GGUFValueType.ARRAY:
            raise GGUFError(f"invalid GGUF file: nested array in {key!r}")
        if element_type in _SCALARS:
            fmt, width = _SCALARS[element_type]
            cursor.need(length * width, key)
            if full_arrays or length <= SMALL_ARRAY:
                values = list(
                    struct.unpack_from(f"<{length}{fmt[1]}", cursor.buffer, cursor.offset)
                )
                cursor.offset += length * width
                return values
            cursor.offset += length * width
            return ArraySummary(GGUFValueType(element_type).name.lower(), length)
        if element_type == GGUFValueType.STRING:
            cursor.need(length * 8, key)
            if full_arrays or length <= SMALL_ARRAY:
                return [cursor.string(key) for _ in range(length)]
            cursor.skip_strings(length, key)
            return ArraySummary("string", length)
        raise GGUFError(f"invalid GGUF file: unknown array type {element_type} in {key!r}")
    raise GGUFError(f"invalid GGUF file: unknown value type {value_type} for {key!r}")


def _read_tensor_descriptor(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string("tensor name")
    n_dims = cursor.u32(f"dimensions of {name}")
    if n_dims == 0 or n_dims > _MAX_DIMS:
        raise GGUFError(f"invalid GGUF file: tensor {name!r} has {n_dims} dimensions")
    shape = tuple(cursor.u64(f"shape of {name}") for _ in range(n_dims))
    type_id = cursor.u32(f"type of {name}")
    offset = cursor.u64(f"offset of {name}")
    return name, shape, type_id, offset


def _tensor_info(
    name: str, shape: tuple[int, ...], type_id: int, offset: int, data_offset: int, size: int
) -> TensorInfo:
    try:
        qtype = GGMLQuantizationType(type_id)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError) as exc:
        raise GGUFError(f"invalid GGUF file: tensor {name!r} has unknown type {type_id}") from exc
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if n_elements > size * 64:
        raise GGUFError(f"invalid GGUF file: tensor {name!r} is larger than the file")
    if shape[0] % block_size:
        raise GGUFError(f"invalid GGUF file: tensor {name!r} rows are not whole blocks")
    n_bytes = n_elements // block_size * type_size
    if data_offset + offset + n_bytes > size:
        raise GGUFError(f"invalid GGUF file: tensor {name!r} lies beyond the end of the file")
    return TensorInfo(
        name=name,
        shape=shape,
        ggml_type=qtype.name,
        offset=offset,
        n_elements=n_elements,
        n_bytes=n_bytes,
    )
