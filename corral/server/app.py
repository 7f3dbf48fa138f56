"""The HTTP application: routes, one place mapping errors to responses, and lifecycle.

Errors: a ``CorralError`` becomes ``{"error": message}`` with its status; an unknown route
``404 page not found`` and a wrong method ``405 method not allowed`` (plain text, as
Ollama); anything else is a bug, logged with its traceback and answered with a 500 (by
``drain.InFlightMiddleware``, which keeps the connection usable and, at shutdown, ends every
request in flight with ``server shutting down``). The lifespan's end stops the runners,
within what is left of the shutdown timeout (``CORRAL_SHUTDOWN_TIMEOUT``): a runner still
stopping then exits with the server (its stdin closes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from corral.config import Settings
from corral.errors import CorralError
from corral.scheduler import Scheduler
from corral.server import embed as embed_routes
from corral.server import tokenize as tokenize_routes
from corral.server.anthropic import anthropic_routes
from corral.server.drain import InFlight, InFlightMiddleware
from corral.server.manage import Manage
from corral.server.middleware import GuardMiddleware, default_origins
from corral.server.openai import OpenAI, openai_errors
from corral.server.request_log import RequestLog, RequestLogMiddleware
from corral.server.rerank import rerank_routes
from corral.server.responses import responses_routes
from corral.server.routes import Api
from corral.server.streaming import BodyCheckMiddleware
from corral.store import ModelStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


async def _corral_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorralError)
    if exc.status >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return PlainTextResponse("404 page not found", status_code=404)
    if exc.status_code == 405:
        return PlainTextResponse("405 method not allowed", status_code=405)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("%s %s crashed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": f"internal error: {exc}"}, status_code=500)


def _openai_routes(api: Api) -> list[Route]:
    embed = getattr(embed_routes, "embed_texts", None)
    v1 = OpenAI(api, embed)
    return [
        Route("/v1/chat/completions", openai_errors(v1.chat_completions), methods=["POST"]),
        Route("/v1/completions", openai_errors(v1.completions), methods=["POST"]),
        Route("/v1/models", openai_errors(v1.models), methods=["GET"]),
        Route("/v1/models/{model:path}", openai_errors(v1.model), methods=["GET"]),
        Route("/v1/embeddings", openai_errors(v1.embeddings), methods=["POST"]),
    ]


def create_app(settings: Settings, store: ModelStore, scheduler: Scheduler) -> Starlette:
    api = Api(settings, store, scheduler)
    manage = Manage(settings, store, api.models, bf16=lambda: scheduler.system.bf16_on_cpu)

    inflight = InFlight()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await _stop_runners(scheduler, inflight.remaining())

    routes = [
        Route("/", api.root, methods=["GET", "HEAD"]),
        Route("/api/version", api.version, methods=["GET", "HEAD"]),
        Route("/api/status", api.status, methods=["GET"]),
        Route("/api/tags", api.tags, methods=["GET", "HEAD"]),
        Route("/api/ps", api.ps, methods=["GET"]),
        Route("/api/show", api.show, methods=["POST"]),
        Route("/api/pull", manage.pull, methods=["POST"]),
        Route("/api/push", manage.push, methods=["POST"]),
        Route("/api/create", manage.create, methods=["POST"]),
        Route("/api/blobs/{digest}", manage.head_blob, methods=["HEAD"]),
        Route("/api/blobs/{digest}", manage.post_blob, methods=["POST"]),
        Route("/api/delete", api.delete, methods=["DELETE"]),
        Route("/api/copy", api.copy, methods=["POST"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Route("/api/chat", api.chat, methods=["POST"]),
        Route("/api/embed", embed_routes.embed, methods=["POST"]),
        Route("/api/embeddings", embed_routes.embeddings, methods=["POST"]),
        Route("/api/tokenize", tokenize_routes.tokenize, methods=["POST"]),
        Route("/api/detokenize", tokenize_routes.detokenize, methods=["POST"]),
        Route("/metrics", api.metrics.endpoint, methods=["GET"]),
        *_openai_routes(api),
        *anthropic_routes(api),
        *responses_routes(api),
        *rerank_routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            CorralError: _corral_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.state.api = api
    app.state.inflight = inflight
    if settings.debug_log_requests:  # OLLAMA_DEBUG_LOG_REQUESTS: bodies to a temp dir
        request_log = RequestLog()
        logger.info(
            "request debug logging enabled; inference request logs will be stored in %s"
            " and include request bodies and replay curl commands",
            request_log.directory,
        )
        app.add_middleware(RequestLogMiddleware, log=request_log)
    app.add_middleware(BodyCheckMiddleware)  # hostile JSON is a 400 on every route
    app.add_middleware(InFlightMiddleware, inflight=inflight)
    app.add_middleware(  # added last: outermost, so it refuses before anything else runs
        GuardMiddleware,
        origins=default_origins(settings.origins),
        check_host=settings.host.is_loopback,
        api_key=settings.api_key,
    )
    return app


async def _stop_runners(scheduler: Scheduler, seconds: float | None) -> None:
    """Stop every runner, for at most ``seconds`` (None: as long as it takes)."""
    try:
        async with asyncio.timeout(seconds):
            await scheduler.shutdown()
    except TimeoutError:
        logger.warning("runners still stopping at the shutdown timeout: they exit with the server")
