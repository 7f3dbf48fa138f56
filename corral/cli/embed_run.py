"""``corral run`` on an embedding model: the input's vector printed as a JSON array, as
``ollama run`` does (one line, the first input's vector; ``--truncate``/``--dimensions``
passed to ``/api/embed``)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from corral.cli import _output as output
from corral.cli.client import CliError, ServerClient

__all__ = ["format_vector", "print_embedding"]


def print_embedding(
    client: ServerClient,
    model: str,
    text: str,
    keep_alive: str = "",
    truncate: bool | None = None,
    dimensions: int = 0,
) -> None:
    if not text:
        raise CliError(
            f'embedding models require input text. Usage: corral run {model} "your text here"'
        )
    body: dict[str, Any] = {"model": model, "input": text}
    if keep_alive:
        body["keep_alive"] = keep_alive
    if truncate is not None:
        body["truncate"] = truncate
    if dimensions > 0:
        body["dimensions"] = dimensions
    data = client.request("POST", "/api/embed", body)
    vectors = data.get("embeddings") if isinstance(data, dict) else None
    if not vectors:
        raise CliError("no embeddings returned")
    output.out(format_vector(vectors[0]))


def format_vector(vector: list[float]) -> str:
    """The vector as Go's ``json.Marshal`` writes a ``[]float32``: compact, each value the
    shortest text that reads back to the same float32."""
    return "[" + ",".join(_float32_text(v) for v in vector) + "]"


def _float32_text(value: float) -> str:
    single = np.float32(value)
    if not np.isfinite(single):
        return json.dumps(float(single))  # not sent by the server (a NaN vector is a 400)
    magnitude = abs(float(single))
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = np.format_float_scientific(single, unique=True, trim="-", exp_digits=1)
        mantissa, _, exponent = text.partition("e")
        sign = "-" if exponent.startswith("-") else "+"
        return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"
    return np.format_float_positional(single, unique=True, trim="-")
