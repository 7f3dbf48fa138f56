"""The embedding answer's JSON: the same numbers whichever encoder writes them."""

from __future__ import annotations

import builtins
import json
from typing import Any

import numpy as np
import pytest

from corral.server.embed import _finish, vectors_response


def _rows() -> list[list[float]]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((256, 384)).astype(np.float32)
    vectors[0, :3] = [1e-30, -3.5e-7, 0.0]
    return _finish(vectors, dimensions=None, normalize=True)


def test_vectors_round_trip_exactly() -> None:
    rows = _rows()
    response = vectors_response({"model": "m", "embeddings": rows, "prompt_eval_count": 5})
    assert response.media_type == "application/json"
    decoded = json.loads(bytes(response.body))
    assert decoded["embeddings"] == rows  # every float64 back bit for bit
    assert decoded["model"] == "m" and decoded["prompt_eval_count"] == 5


def test_standard_library_fallback_writes_the_same_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows()
    fast = json.loads(bytes(vectors_response({"embeddings": rows}).body))
    real_import = builtins.__import__
    refused: list[str] = []

    def no_orjson(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "orjson":
            refused.append(name)
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_orjson)
    slow = vectors_response({"embeddings": rows})
    assert refused  # the standard library wrote this one
    assert b" " not in bytes(slow.body)  # compact, as the fast path
    assert json.loads(bytes(slow.body)) == fast
