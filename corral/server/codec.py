"""What the agent dialects (``/v1/messages``, ``/v1/responses``) share: one way in, one way out.

Each dialect translates its request into the one internal ``ChatRequest`` and opens it with
``Api.open_chat``, the path ``/api/chat`` and ``/v1/chat/completions`` take (scheduling,
prompt, tools, thinking, the relay loop); what comes back is Ollama's chat chunks. A dialect
is then an ``Encoder``: a state machine fed those chunks, one at a time, that returns its
server-sent events. Non-streamed answers feed the same encoder and keep its final object,
so a streamed and a non-streamed answer cannot disagree.

- ``parse_json``: a body checked against a dialect's pydantic type, with the errors worded as
  ``field: problem`` (the dialects' own style, not Ollama's Go decoder text).
- ``first_chunk`` and ``all_chunks``: the first chunk, or all of them, awaited while watching
  for the client to leave (``streaming.unless_disconnected``): an error there still gets its
  HTTP status, and a client that leaves gives its runner slot back.
- ``sse_response``: the rest of the stream through the encoder as ``event:``/``data:``
  frames; an error after the first byte becomes the dialect's error event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import StreamingResponse

from corral.errors import BadRequestError, CorralError
from corral.server.relay import Chunk
from corral.server.streaming import OUTCOME_KEY, unless_disconnected

__all__ = [
    "Encoder",
    "Event",
    "all_chunks",
    "first_chunk",
    "parse_json",
    "sse_frame",
    "sse_response",
]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

#: one server-sent event: its ``event:`` name and its ``data:`` object
Event = tuple[str, dict[str, Any]]

_MAX_BODY = 256 * 1024 * 1024


class Encoder(Protocol):
    """A dialect's view of one answer: chat chunks in, its events out."""

    def feed(self, chunk: Chunk) -> list[Event]:
        """The events ``chunk`` makes (the first chunk also opens the answer)."""
        ...

    def fail(self, status: int, message: str) -> list[Event]:
        """The events that end a stream that failed after its first byte."""
        ...


async def parse_json(request: Request, model: type[ModelT]) -> ModelT:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise BadRequestError("request body too large")
    if not body.strip():
        raise BadRequestError("missing request body")
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequestError("invalid JSON in the request body: nested too deeply") from None
    except ValueError as exc:
        raise BadRequestError(f"invalid JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(_validation_text(exc)) from None


def _validation_text(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


async def first_chunk(request: Request, chunks: AsyncGenerator[Chunk, None]) -> Chunk | None:
    """The first chunk, or None for an empty stream; closes ``chunks`` on any error."""
    try:
        return await unless_disconnected(request, anext(chunks))
    except StopAsyncIteration:
        return None
    except BaseException:
        await chunks.aclose()
        raise


async def all_chunks(request: Request, chunks: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    """Every chunk of a non-streamed answer; a client that leaves cancels the work."""

    async def collect() -> list[Chunk]:
        return [chunk async for chunk in chunks]

    try:
        return await unless_disconnected(request, collect())
    except BaseException:
        await chunks.aclose()
        raise


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()


def sse_response(
    request: Request,
    chunks: AsyncGenerator[Chunk, None],
    first: Chunk | None,
    encoder: Encoder,
) -> StreamingResponse:
    """Stream ``first`` and the rest of ``chunks`` through ``encoder``. A client that leaves
    closes ``chunks`` (Starlette cancels the body), which frees its runner slot."""

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                for event in encoder.feed(first):
                    yield sse_frame(*event)
            async for chunk in chunks:
                for event in encoder.feed(chunk):
                    yield sse_frame(*event)
        except CorralError as exc:
            logger.warning("%s stream ended with an error: %s", request.url.path, exc.message)
            request.scope[OUTCOME_KEY] = "client_error" if exc.status < 500 else "server_error"
            for event in encoder.fail(exc.status, exc.message):
                yield sse_frame(*event)
        except Exception as exc:
            logger.exception("%s stream failed", request.url.path)
            request.scope[OUTCOME_KEY] = "server_error"
            for event in encoder.fail(500, f"internal error: {exc}"):
                yield sse_frame(*event)
        finally:
            await chunks.aclose()

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
