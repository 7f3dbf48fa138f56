"""Embedding routes: ``POST /api/embed`` (batch, normalised) and ``/api/embeddings`` (legacy).

Each handler: parse, resolve the model, merge its options, hold a runner from the scheduler
(loading it if needed), ask the runner for every input at once (it batches them into few
decode calls), answer. ``embed_texts`` is the same path as a plain coroutine, for the
OpenAI-compatible ``/v1/embeddings`` handler.

Ollama's rules kept here: ``/api/embed`` vectors are L2-normalised, ``dimensions`` cuts each
vector and normalises again, an input longer than the context is cut unless ``truncate`` is
false (then 400 ``the input length exceeds the context length``), a vector with NaN or Inf
is a 400; ``/api/embeddings`` returns the pooled vector as is. Any model can embed: a chat
model gives the mean of its last hidden states. An empty input only loads the model.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from starlette.requests import Request
from starlette.responses import Response

from corral.api.options import Options, validate_options
from corral.api.types import EmbeddingsRequest, EmbedRequest
from corral.errors import BadRequestError
from corral.server.streaming import parse_body, unless_disconnected

if TYPE_CHECKING:
    import numpy as np  # imported on the first embedding: not on the server's start-up

    from corral.scheduler.entries import ModelSpec
    from corral.server.models import ResolvedModel
    from corral.server.routes import Api

__all__ = ["EmbedResult", "embed", "embed_texts", "embeddings", "vectors_response"]


@dataclass(frozen=True, slots=True)
class EmbedResult:
    """Vectors in input order (plain floats), with Ollama's counters (nanoseconds)."""

    embeddings: list[list[float]]
    prompt_eval_count: int
    total_duration: int
    load_duration: int
    timings: dict[str, int] = field(default_factory=dict)


async def embed_texts(
    api: Api,
    model_name: str,
    inputs: list[str] | list[list[int]],
    *,
    truncate: bool = True,
    dimensions: int | None = None,
    options: dict[str, Any] | None = None,
    keep_alive: float | None = None,
    normalize: bool = True,
) -> EmbedResult:
    """Embed ``inputs`` (texts, or token-id lists used as given) with ``model_name``; the
    vectors are L2-normalised unless told not.

    Raises ``CorralError``s with Ollama's statuses: unknown model (404), invalid name,
    bad options or ``dimensions``, too-long input without ``truncate``, NaN output (400),
    runner failures (500). An empty ``inputs`` loads the model and returns no vectors.
    """
    started = time.perf_counter()
    if not model_name:
        raise BadRequestError("model is required")
    if dimensions is not None and dimensions <= 0:
        raise BadRequestError("dimensions must be greater than 0")
    model = await asyncio.to_thread(api.models.resolve, model_name)
    spec, merged, limit = batch_load(api, model, options)
    async with api.scheduler.acquire(spec, merged, keep_alive) as ref:
        loaded_at = time.perf_counter()
        if not inputs:
            import numpy as np

            vectors = np.zeros((0, 0), dtype=np.float32)
            count = 0
        else:
            runner = ref.runner
            answer = await runner.embed(inputs, truncate=truncate, num_ctx=limit)
            vectors, count = answer.vectors, answer.prompt_eval_count
    rows = _finish(vectors, dimensions=dimensions, normalize=normalize)
    now = time.perf_counter()
    total = int((now - started) * 1e9)
    api.metrics.request_seconds.labels("embed").observe(now - started)
    return EmbedResult(
        embeddings=rows,
        prompt_eval_count=count,
        total_duration=total,
        load_duration=int((loaded_at - started) * 1e9),
    )


def _finish(
    vectors: np.ndarray[Any, Any], *, dimensions: int | None, normalize: bool
) -> list[list[float]]:
    if vectors.size == 0:
        return []
    import numpy as np

    values = vectors.astype(np.float64)
    if not np.isfinite(values).all():
        raise BadRequestError("embedding contains NaN or Inf values")
    if dimensions is not None and dimensions < values.shape[1]:
        values = values[:, :dimensions]
    if normalize:
        norms = np.linalg.norm(values, axis=1, keepdims=True)
        values = values / np.where(norms > 0, norms, 1.0)
    rows: list[list[float]] = values.tolist()
    return rows


def _api(request: Request) -> Api:
    return cast("Api", request.app.state.api)


async def embed(request: Request) -> Response:
    """``POST /api/embed``: ``input`` a string or a list of strings."""
    req = await parse_body(request, EmbedRequest)
    if not req.model:
        raise BadRequestError("model is required")
    inputs = [req.input] if isinstance(req.input, str) else list(req.input or [])
    if inputs == [""]:
        inputs = []
    result = await unless_disconnected(
        request,
        embed_texts(
            _api(request),
            req.model,
            inputs,
            truncate=req.truncate,
            dimensions=req.dimensions,
            options=req.options,
            keep_alive=req.keep_alive,
        ),
    )
    return vectors_response(
        {
            "model": req.model,
            "embeddings": result.embeddings,
            "total_duration": result.total_duration,
            "load_duration": result.load_duration,
            "prompt_eval_count": result.prompt_eval_count,
        }
    )


async def embeddings(request: Request) -> Response:
    """``POST /api/embeddings`` (legacy): one ``prompt``, its vector not normalised."""
    req = await parse_body(request, EmbeddingsRequest)
    if not req.model:
        raise BadRequestError("model is required")
    result = await unless_disconnected(
        request,
        embed_texts(
            _api(request),
            req.model,
            [req.prompt] if req.prompt else [],
            truncate=True,
            options=req.options,
            keep_alive=req.keep_alive,
            normalize=False,
        ),
    )
    vector = result.embeddings[0] if result.embeddings else []
    return vectors_response({"embedding": vector})


def batch_load(
    api: Api, model: ResolvedModel, options: dict[str, Any] | None
) -> tuple[ModelSpec, Options, int | None]:
    """What an embed or rerank request loads (the model's spec and merged options), and its
    longest input: the request's (or the model's) num_ctx where one was set, as the
    scheduler clamps it for a load, which also holds on a runner loaded with a larger
    context; unset (None), whatever context the runner was loaded with."""
    merged = Options.merged(
        model.params, validate_options(options), num_ctx_default=api.settings.context_length
    )
    spec = model.spec()
    limit = api.scheduler.load_settings(spec, merged).num_ctx if merged.is_set("num_ctx") else None
    return spec, merged, limit


def vectors_response(payload: dict[str, Any]) -> Response:
    """``payload`` as compact JSON: floats written as their shortest round-trip form either
    way (every vector is already checked finite), orjson where installed since the standard
    library's float formatting dominates a large batch's answer."""
    try:  # 256 x 384 floats: ~3 ms, where the standard library takes ~80 ms (a dependency)
        from orjson import dumps
    except ImportError:  # pragma: no cover - the standard library then
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
    else:
        body = dumps(payload)
    return Response(body, media_type="application/json")
