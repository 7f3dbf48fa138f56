"""Log-probabilities of sampled tokens, computed from a logits row only when a request asks.

What is reported is what llama.cpp's server reports by default: the distribution of the
model's raw logits (log-softmax, before temperature, penalties or grammar), so a number
means the same whatever the sampling options were. The sampled token's logprob comes from
that distribution even when the sampler picked a token outside the top N.

Cost: one pass over the vocabulary for the log-sum-exp and a partial sort for the top N
(``argpartition``, linear), on a numpy view of llama.cpp's own buffer (no copy). The engine
calls this only for requests with ``logprobs``; the decode loop of others is untouched.

The shape of an entry is Ollama's ``api.Logprob``: ``token`` (the token's text piece),
``logprob``, ``bytes`` (the piece's raw bytes: a piece may be part of a UTF-8 character)
and, when top N > 0, ``top_logprobs`` (entries of the same shape without a nested list).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["MAX_TOP_LOGPROBS", "token_logprobs"]

#: the most alternatives a request may ask for, as Ollama and OpenAI allow
MAX_TOP_LOGPROBS = 20

Entry = dict[str, Any]


def token_logprobs(
    row: np.ndarray[Any, Any], token: int, top_n: int, piece: Callable[[int], bytes]
) -> Entry:
    """The entry for ``token`` sampled from logits ``row``, with its ``top_n`` alternatives.

    ``piece`` renders a token id as bytes. Infinite logits (masked tokens) are fine: they
    get ``-inf`` logprobs, which JSON cannot carry, so they are clamped to a large negative.
    """
    peak = float(row.max())
    log_total = peak + float(np.log(np.sum(np.exp(row - peak), dtype=np.float64)))
    entry = _entry(token, float(row[token]) - log_total, piece)
    if top_n > 0:
        count = min(top_n, row.shape[0])
        best = np.argpartition(row, -count)[-count:]
        ordered = best[np.argsort(-row[best], kind="stable")]
        entry["top_logprobs"] = [
            _entry(int(t), float(row[t]) - log_total, piece) for t in ordered.tolist()
        ]
    return entry


def _entry(token: int, logprob: float, piece: Callable[[int], bytes]) -> Entry:
    raw = piece(token)
    return {
        "token": raw.decode("utf-8", errors="replace"),
        "logprob": max(logprob, -9999.0),
        "bytes": list(raw),
    }
