"""``token_logprobs`` against a plain log-softmax, without a model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corral.runner.logprobs import token_logprobs


def _piece(token: int) -> bytes:
    return {0: b"a", 1: b"\xc3", 2: b""}.get(token, f"t{token}".encode())


def _reference(row: np.ndarray) -> np.ndarray:
    values = row.astype(np.float64)
    result: np.ndarray = values - (values.max() + math.log(np.exp(values - values.max()).sum()))
    return result


@pytest.mark.parametrize("top_n", [0, 1, 5, 20])
def test_matches_log_softmax_and_orders_the_top(top_n: int) -> None:
    rng = np.random.default_rng(7)
    row = (rng.standard_normal(1000) * 4).astype(np.float32)
    expected = _reference(row)
    token = 123  # not the argmax: the sampled token's logprob comes from the whole row
    entry = token_logprobs(row, token, top_n, _piece)
    assert entry["token"] == "t123" and entry["bytes"] == list(b"t123")
    assert entry["logprob"] == pytest.approx(expected[token], abs=1e-6)
    if top_n == 0:
        assert "top_logprobs" not in entry
        return
    top = entry["top_logprobs"]
    assert [t["logprob"] for t in top] == pytest.approx(
        sorted(expected, reverse=True)[:top_n], abs=1e-6
    )
    assert top[0]["token"] == f"t{int(np.argmax(row))}"
    assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-9
    assert all(set(t) == {"token", "logprob", "bytes"} for t in top)


def test_does_not_copy_or_change_the_row() -> None:
    row = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    before = row.copy()
    token_logprobs(row, 2, 2, _piece)
    assert np.array_equal(row, before)


def test_partial_utf8_pieces_and_masked_tokens() -> None:
    row = np.array([0.0, 0.0, -np.inf, 0.0], dtype=np.float32)
    entry = token_logprobs(row, 1, 4, _piece)
    assert entry["token"] == "\ufffd" and entry["bytes"] == [0xC3]  # half a character
    assert entry["logprob"] == pytest.approx(math.log(1 / 3))
    masked = entry["top_logprobs"][-1]
    assert masked["bytes"] == [] and masked["logprob"] == -9999.0  # JSON has no -inf
    assert token_logprobs(row, 2, 0, _piece)["logprob"] == -9999.0
