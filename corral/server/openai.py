"""The OpenAI-compatible routes under ``/v1``, over the same handlers as Ollama's API.

Each request is translated into Ollama's (``api/openai.py``), opened through ``Api`` (so a
model, its template, the scheduler and the runner are used exactly as ``/api/chat`` uses
them), and the chunks are translated back: one JSON object, or server-sent events ending
with ``data: [DONE]``. Errors are OpenAI-shaped, ``{"error": {"message", "type", "param",
"code"}}``, with the status the same error has on Ollama's routes; an error after the first
event is sent as a last ``data:`` event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from corral.api import openai as oa
from corral.errors import BadRequestError, CorralError, ModelNotFoundError, NotFoundError
from corral.server.embed import vectors_response
from corral.server.generation import merge_chat, merge_generate
from corral.server.relay import Chunk
from corral.server.routes import Api
from corral.server.streaming import parse_body, unless_disconnected

__all__ = ["OpenAI"]

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

# /v1/embeddings is answered by the embeddings module when it is there.
EmbedFn = Callable[..., Awaitable[Any]]


def _error(exc: CorralError) -> JSONResponse:
    code = "model_not_found" if isinstance(exc, ModelNotFoundError) else None
    return JSONResponse(oa.error_body(exc.status, exc.message, code), status_code=exc.status)


def openai_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except CorralError as exc:
            if exc.status >= 500:
                logger.warning("%s failed: %s", request.url.path, exc.message)
            return _error(exc)

    return wrapped


def _sse(data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _first(request: Request, events: AsyncGenerator[Chunk, None]) -> Chunk | None:
    """The first event, awaited while watching for the client to leave (see streaming)."""
    try:
        return await unless_disconnected(request, anext(events))
    except StopAsyncIteration:
        return None
    except BaseException:
        await events.aclose()
        raise


async def _gather(request: Request, events: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    """Every event of a non-streamed answer; a client that leaves cancels the work."""

    async def collect() -> list[Chunk]:
        return [event async for event in events]

    try:
        return await unless_disconnected(request, collect())
    except BaseException:
        await events.aclose()
        raise


def _stream(
    events: AsyncGenerator[Chunk, None],
    first: Chunk | None,
    translate: Callable[[Chunk], list[Any]],
) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                for item in translate(first):
                    yield _sse(item)
                async for event in events:
                    for item in translate(event):
                        yield _sse(item)
        except CorralError as exc:
            logger.warning("stream ended with an error: %s", exc.message)
            yield _sse(oa.error_body(exc.status, exc.message))
        except Exception as exc:
            logger.exception("stream failed")
            yield _sse(oa.error_body(500, f"internal error: {exc}"))
        finally:
            await events.aclose()
        yield _sse("[DONE]")

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _parse(request: Request, model: type[Any]) -> Any:
    parsed: BaseModel = await parse_body(request, model)
    return parsed


class OpenAI:
    """``/v1`` routes over an ``Api``."""

    def __init__(self, api: Api, embed: EmbedFn | None = None) -> None:
        self.api = api
        self.embed = embed

    # ---- chat ------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body: oa.ChatCompletionRequest = await _parse(request, oa.ChatCompletionRequest)
        req = oa.chat_request(body)
        opened = await self.api.open_chat(req)
        if isinstance(opened, Response):  # cannot happen: messages are required
            raise BadRequestError("[] is too short - 'messages'")
        ident = oa.completion_id("chatcmpl")
        model = body.model
        if not body.stream:
            events = await _gather(request, opened)
            return JSONResponse(oa.chat_completion(ident, model, merge_chat(events)))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = await _first(request, opened)
        state = {"role_sent": False, "calls": 0}

        def translate(event: Chunk) -> list[Any]:
            out: list[Any] = []
            message = event.get("message", {})
            delta: dict[str, Any] = {}
            if not state["role_sent"]:
                delta["role"] = "assistant"
            content = message.get("content", "")
            if content or not state["role_sent"]:
                delta["content"] = content
            if message.get("thinking"):
                delta["reasoning"] = message["thinking"]
            if message.get("tool_calls"):
                delta["tool_calls"] = oa.openai_tool_calls(message["tool_calls"], streaming=True)
                state["calls"] += len(message["tool_calls"])
            logprobs = oa.chat_logprobs(event.get("logprobs"))
            wanted = len(delta) > 1 or "role" not in delta or not event.get("done")
            if (delta and wanted) or logprobs is not None:
                state["role_sent"] = True
                out.append(oa.chunk(ident, model, delta, logprobs=logprobs))
            if event.get("done"):
                reason = oa.finish_reason(event, state["calls"] > 0)
                out.append(oa.chunk(ident, model, {}, reason))
                if include_usage:
                    final = oa.chunk(ident, model, {}, choices=False)
                    final["usage"] = oa.usage(event)
                    out.append(final)
            return out

        return _stream(opened, first, translate)

    # ---- completions -----------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        body: oa.CompletionRequest = await _parse(request, oa.CompletionRequest)
        req = oa.generate_request(body)
        if not req.prompt and not req.suffix:
            raise BadRequestError("prompt is required")
        opened = await self.api.open_generate(req)
        if isinstance(opened, Response):
            raise BadRequestError("prompt is required")
        ident = oa.completion_id("cmpl")
        model = body.model
        if not body.stream:
            events = await _gather(request, opened)
            return JSONResponse(oa.completion(ident, model, merge_generate(events)))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        first = await _first(request, opened)
        offset = [0]  # characters of token text sent so far: the next text_offset

        def translate(event: Chunk) -> list[Any]:
            if not event.get("done"):
                text = event.get("response", "")
                logprobs = oa.completion_logprobs(event.get("logprobs"), offset[0])
                if logprobs is not None:
                    offset[0] += sum(len(token) for token in logprobs["tokens"])
                elif not text:
                    return []
                return [oa.completion_chunk(ident, model, text, None, logprobs)]
            out: list[Any] = [oa.completion_chunk(ident, model, "", oa.finish_reason(event, False))]
            if include_usage:
                final = oa.completion_chunk(ident, model, "", None)
                final["choices"] = []
                final["usage"] = oa.usage(event)
                out.append(final)
            return out

        return _stream(opened, first, translate)

    # ---- models ----------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        entries = await asyncio.to_thread(self.api.store.list_models)
        data = [
            {
                "id": entry.name.display_short,
                "object": "model",
                "created": int(entry.modified_at.timestamp()),
                "owned_by": entry.name.namespace,
            }
            for entry in entries
        ]
        return JSONResponse({"object": "list", "data": data})

    async def model(self, request: Request) -> Response:
        raw = str(request.path_params.get("model", ""))
        try:
            model = await asyncio.to_thread(self.api.models.resolve, raw)
        except ModelNotFoundError:
            body = oa.error_body(404, f'model "{raw}" not found', "model_not_found")
            return JSONResponse(body, status_code=404)
        return JSONResponse(
            {
                "id": raw,
                "object": "model",
                "created": int(model.modified_at.timestamp()),
                "owned_by": model.name.namespace,
            }
        )

    # ---- embeddings ------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        body: oa.EmbeddingRequest = await _parse(request, oa.EmbeddingRequest)
        if body.encoding_format not in {"float", "base64"}:
            raise BadRequestError(
                f"Invalid value for 'encoding_format' = {body.encoding_format}. Supported"
                " values: ['float', 'base64']."
            )
        inputs = _embedding_inputs(body.input)
        if self.embed is None:
            raise NotFoundError("embeddings are not available on this server")
        result = await unless_disconnected(
            request,
            self.embed(
                self.api,
                body.model,
                inputs,
                truncate=True,
                dimensions=body.dimensions,
                options=body.options or {},
                keep_alive=body.keep_alive,
            ),
        )
        vectors: list[list[float]] = result.embeddings
        data = []
        for i, vector in enumerate(vectors):
            value: Any = vector
            if body.encoding_format == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "embedding": value, "index": i})
        tokens = int(result.prompt_eval_count)  # the tokens embedded, after any truncation
        return vectors_response(
            {
                "object": "list",
                "data": data,
                "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def _embedding_inputs(value: Any) -> list[str] | list[list[int]]:
    """OpenAI's ``input``: a string, strings, one token array or token arrays (what
    langchain-openai sends by default). Ids are checked against the vocabulary by the
    runner (400); here only their shape and sign."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise BadRequestError("invalid input: expected a string, strings, or token arrays")
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(_is_token_id(v) for v in value):
        return [list(value)]
    if all(isinstance(v, list) for v in value):
        for item in value:
            if not item or not all(_is_token_id(t) for t in item):
                raise BadRequestError(
                    "invalid input: each token array must be a non-empty list of token ids"
                    " (non-negative integers)"
                )
        return [list(item) for item in value]
    raise BadRequestError(
        "invalid input: expected a string, a list of strings, a list of token ids, or a list"
        " of lists of token ids"
    )


def _is_token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
