"""Quantize an F32/F16/BF16 GGUF with llama.cpp's quantizer, in a child process.

Why a child process: the quantizer is native code working on gigabytes; a crash or an
out-of-memory kill there must not take the server down, and the server must be able to stop
it when the client goes away. The server runs ``python -m corral.store.quantize SRC DST
TYPE``; this module's parent side (:func:`quantize_command`) is plain data, the child side
(:func:`main`) imports ``llama_cpp`` only when it runs.
"""

from __future__ import annotations

import sys
from typing import Final

from corral.errors import BadRequestError

__all__ = ["QUANTIZABLE_FROM", "QUANT_TYPES", "normalize_quant_type", "quantize_command"]

QUANT_TYPES: Final[dict[str, str]] = {
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "Q2_K_S": "LLAMA_FTYPE_MOSTLY_Q2_K_S",
    "Q3_K_S": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q3_K_L": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q5_K_S": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
}
"""Target names (Ollama's, case-insensitive; ``Q4_K`` means ``Q4_K_M``) → llama.cpp ftype."""

QUANTIZABLE_FROM: Final = frozenset({"F32", "F16", "BF16"})

_ALIASES: Final = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}


def normalize_quant_type(raw: str) -> str:
    """``q4_k_m`` → ``Q4_K_M``; BadRequestError for a type llama.cpp cannot produce."""
    name = raw.strip().upper()
    name = _ALIASES.get(name, name)
    if name not in QUANT_TYPES:
        choices = ", ".join(sorted(QUANT_TYPES))
        raise BadRequestError(f"unsupported quantization type {raw} (one of: {choices})")
    return name


def quantize_command(source: str, destination: str, quant_type: str) -> list[str]:
    """The child process command line for one quantization."""
    return [sys.executable, "-m", "corral.store.quantize", source, destination, quant_type]


def main(argv: list[str]) -> int:
    """Child side: quantize ``argv = [src, dst, TYPE]``; exit status 0 on success."""
    import ctypes
    import os

    import llama_cpp

    source, destination, quant_type = argv
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[normalize_quant_type(quant_type)])
    params.nthread = os.cpu_count() or 1
    llama_cpp.llama_backend_init()
    status = llama_cpp.llama_model_quantize(
        source.encode(), destination.encode(), ctypes.byref(params)
    )
    if status != 0:
        sys.stderr.write(f"llama_model_quantize failed with status {status}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
