"""GGUF header reading (bounded, our own errors) and small GGUF writing for tests."""

from corral.gguf.reader import (
    ArraySummary,
    GGUFInfo,
    TensorInfo,
    file_type_name,
    format_parameter_count,
    read_gguf,
)

__all__ = [
    "ArraySummary",
    "GGUFInfo",
    "TensorInfo",
    "file_type_name",
    "format_parameter_count",
    "read_gguf",
]
