"""Memory a model needs with given load options (CPU today; GPUs come with ``hardware``).

Weights are the GGUF's tensor bytes; the KV cache is
``2 (K and V) x layers x kv_heads x head_dim x context x bytes per element``; a fixed
allowance covers the compute graph and the runner process itself. The scheduler uses it to
choose ``num_parallel`` and, later, to decide what fits and what must be evicted.
"""

from __future__ import annotations

import functools
import logging

from corral.errors import GGUFError
from corral.gguf import GGUFInfo, read_gguf
from corral.hardware import system_memory

__all__ = ["auto_parallel", "estimate_bytes", "kv_cache_bytes"]

logger = logging.getLogger(__name__)

_KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
#: runner process (Python + llama.cpp) and compute buffers, measured on the bundled models
_RUNNER_OVERHEAD = 160 * 1024 * 1024


@functools.lru_cache(maxsize=32)
def _info(path: str) -> GGUFInfo:
    return read_gguf(path)


def kv_cache_bytes(info: GGUFInfo, n_ctx_total: int, kv_type: str = "f16") -> int:
    layers = int(info.arch_value("block_count", 0) or 0)
    heads = int(info.arch_value("attention.head_count", 0) or 0)
    kv_heads_raw = info.arch_value("attention.head_count_kv", heads)
    kv_heads = int(kv_heads_raw if isinstance(kv_heads_raw, int) else heads)
    embedding = int(info.arch_value("embedding_length", 0) or 0)
    head_k = int(info.arch_value("attention.key_length", embedding // heads if heads else 0))
    head_v = int(info.arch_value("attention.value_length", head_k))
    per_token = layers * kv_heads * (head_k + head_v)
    return int(per_token * n_ctx_total * _KV_BYTES.get(kv_type, 2.0))


def estimate_bytes(path: str, num_ctx: int, num_parallel: int, kv_type: str = "f16") -> int:
    info = _info(path)
    weights = sum(t.n_bytes for t in info.tensors)
    return weights + kv_cache_bytes(info, num_ctx * num_parallel, kv_type) + _RUNNER_OVERHEAD


def auto_parallel(path: str, num_ctx: int, kv_type: str = "f16") -> int:
    """Ollama's rule: 4 parallel requests where the memory allows it, else 1."""
    try:
        need = estimate_bytes(path, num_ctx, 4, kv_type)
    except GGUFError:
        return 1
    free = system_memory().free_bytes
    return 4 if need <= free * 0.8 else 1
