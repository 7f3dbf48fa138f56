"""Rerank routes: ``POST /api/rerank``, ``/v1/rerank`` (and ``/v1/reranking``, ``/v2/rerank``).

What Ollama's users ask for in ollama/ollama#3368, in the shape llama-server, Jina and Cohere
answer (``api/rerank.py`` has the fields). The handler: parse, resolve the model, refuse one
that is not a reranker before loading anything, hold a runner from the scheduler (load,
``keep_alive`` and the reference count as for ``/api/embed``), have the runner score every
(query, document) pair in a few batched decode calls, sort, cut to ``top_n``, answer.

A reranker is a model with llama.cpp's RANK pooling: a cross-encoder converted by
``corral create`` from a ``BertForSequenceClassification`` folder, or a GGUF that says so
(``*.pooling_type`` 4, or classifier labels). Any other model is a 400
``"<name>" does not support rerank``, as newest Ollama words a missing capability; an empty
``documents`` is a 400, as llama-server answers (there is nothing to rank). Errors on the
``/v1`` and ``/v2`` paths come in OpenAI's shape, as every ``/v1`` route's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corral.api.rerank import RerankRequest, RerankResult, document_text
from corral.errors import BadRequestError
from corral.server.embed import batch_load
from corral.server.models import gguf_is_reranker
from corral.server.openai import openai_errors
from corral.server.streaming import parse_body, unless_disconnected

if TYPE_CHECKING:
    from corral.server.models import ResolvedModel
    from corral.server.routes import Api

__all__ = ["RerankScores", "is_reranker", "rerank_documents", "rerank_routes"]


class _Reranker(Protocol):
    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        num_ctx: int | None = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class RerankScores:
    """One raw score per document, in request order, with Ollama's counters (ns)."""

    scores: list[float]
    prompt_eval_count: int
    total_duration: int
    load_duration: int


def is_reranker(model: ResolvedModel) -> bool:
    """Whether the model's GGUF asks for RANK pooling or carries a classifier's labels."""
    return gguf_is_reranker(model.gguf.architecture, model.gguf.metadata)


async def rerank_documents(
    api: Api,
    model_name: str,
    query: str,
    documents: list[str],
    *,
    truncate: bool = True,
    options: dict[str, Any] | None = None,
    keep_alive: float | None = None,
) -> RerankScores:
    """Score ``documents`` for ``query`` with ``model_name``.

    ``CorralError``s with their statuses: unknown model (404), a model that is not a
    reranker, bad options, a pair over the context without ``truncate`` (400), runner
    failures (500).
    """
    started = time.perf_counter()
    if not model_name:
        raise BadRequestError("model is required")
    if not documents:
        raise BadRequestError("documents must be a non-empty list of strings")
    model = await asyncio.to_thread(api.models.resolve, model_name)
    if not is_reranker(model):
        raise BadRequestError(f'"{model_name}" does not support rerank')
    spec, merged, limit = batch_load(api, model, options)
    async with api.scheduler.acquire(spec, merged, keep_alive) as ref:
        loaded_at = time.perf_counter()
        runner = ref.runner
        if not hasattr(runner, "rerank"):
            raise BadRequestError(f'"{model_name}" does not support rerank')
        answer = await cast(_Reranker, runner).rerank(
            query, documents, truncate=truncate, num_ctx=limit
        )
    now = time.perf_counter()
    api.metrics.request_seconds.labels("rerank").observe(now - started)
    return RerankScores(
        scores=list(answer.scores),
        prompt_eval_count=int(answer.prompt_eval_count),
        total_duration=int((now - started) * 1e9),
        load_duration=int((loaded_at - started) * 1e9),
    )


def _ranked(scores: list[float], top_n: int | None) -> list[int]:
    """Document indices by score, highest first (ties: request order), cut to ``top_n``."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return order if top_n is None else order[:top_n]


async def _answer(request: Request, *, ollama: bool) -> Response:
    req = await parse_body(request, RerankRequest)
    if not req.model:
        raise BadRequestError("model is required")
    if req.query is None:
        raise BadRequestError("query is required")
    raw = req.texts if req.tei else req.documents
    try:
        documents = [document_text(i, value) for i, value in enumerate(raw or [])]
    except ValueError as exc:
        raise BadRequestError(str(exc)) from exc
    api = cast("Api", request.app.state.api)
    result = await unless_disconnected(
        request,
        rerank_documents(
            api,
            req.model,
            req.query,
            documents,
            truncate=req.truncate,
            options=req.options,
            keep_alive=req.keep_alive,
        ),
    )
    order = _ranked(result.scores, req.top_n)
    if req.tei:
        return JSONResponse(
            [
                {"index": i, "score": result.scores[i]}
                | ({"text": documents[i]} if req.return_text else {})
                for i in order
            ]
        )
    results = [
        RerankResult(
            index=i,
            relevance_score=result.scores[i],
            document={"text": documents[i]} if req.return_documents else None,
        ).model_dump(exclude_none=True)
        for i in order
    ]
    body: dict[str, Any] = {
        "model": req.model,
        "object": "list",
        "results": results,
        "usage": {
            "prompt_tokens": result.prompt_eval_count,
            "total_tokens": result.prompt_eval_count,
        },
    }
    if ollama:
        body |= {
            "total_duration": result.total_duration,
            "load_duration": result.load_duration,
            "prompt_eval_count": result.prompt_eval_count,
        }
    return JSONResponse(body)


async def rerank(request: Request) -> Response:
    """``POST /api/rerank``: errors in Ollama's shape, Ollama's duration counters added."""
    return await _answer(request, ollama=True)


async def rerank_v1(request: Request) -> Response:
    """``POST /v1/rerank`` (and llama-server's, Cohere's other paths)."""
    return await _answer(request, ollama=False)


def rerank_routes() -> list[Route]:
    """The routes, for ``create_app``: OpenAI-shaped errors on the versioned paths."""
    v1 = openai_errors(rerank_v1)
    return [
        Route("/api/rerank", rerank, methods=["POST"]),
        Route("/v1/rerank", v1, methods=["POST"]),
        Route("/v1/reranking", v1, methods=["POST"]),
        Route("/v2/rerank", v1, methods=["POST"]),
    ]
