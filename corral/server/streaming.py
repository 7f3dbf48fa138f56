"""Request bodies in, NDJSON or JSON out, with Ollama's error rules.

- ``parse_body``: empty body → 400 ``missing request body``; bad JSON → 400 with the
  parser's words; a field of the wrong type → 400 naming the field (Ollama answers with Go's
  decoder text; we keep the same status and say which field). Hostile JSON is a 400 too
  (``api/jsonbody.py``): nesting deeper than 128 levels, a lone surrogate in a string.
- ``respond``: for ``stream: true`` the first event is awaited *before* any byte is sent, so
  an error there (unknown model, runner failed to load) gets its real status; an error
  after the first byte becomes a final ``{"error": ...}`` line, as Ollama does.
- A client that disconnects cancels its work in every phase: while it waits for a runner
  (queued in the scheduler), while its request waits in the runner's queue or generates
  before the first event, and while a non-streaming answer is gathered, ``respond`` watches
  the ASGI channel for ``http.disconnect`` and cancels the generator, so the scheduler's
  refcount drops and the runner's HTTP stream closes (the runner then frees the slot) at
  once; once streaming, Starlette's ``StreamingResponse`` does the same. The generator
  runs in a task of its own for that (as vLLM's ``with_cancellation``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.api.jsonbody import check_json_text, load_json
from corral.errors import BadRequestError, CorralError, RequestCanceledError

__all__ = [
    "OUTCOME_KEY",
    "BodyCheckMiddleware",
    "error_body",
    "now_rfc3339",
    "parse_body",
    "respond",
    "send_error",
    "unless_disconnected",
]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
#: ASGI scope key where a stream that failed after its first byte (HTTP 200 already sent)
#: records its outcome, for the request counter in ``metrics``
OUTCOME_KEY = "corral.outcome"
_MAX_BODY = 256 * 1024 * 1024


class BodyCheckMiddleware:
    """Every request body is read here first (up to 256 MiB; blob uploads, which stream to
    disk, excepted) and refused with a 400 in the route's dialect when it nests too deep or
    holds a lone surrogate (``api/jsonbody.check_json_text``), whichever route and parser
    it is for; the route then reads the same bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] in {"GET", "HEAD", "OPTIONS"}
            or path.startswith("/api/blobs/")
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_BODY:
                await send_error(send, path, 400, "request body too large", close=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            check_json_text(body)
        except BadRequestError as exc:
            await send_error(send, path, exc.status, exc.message, close=False)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # from here on: http.disconnect when the client leaves
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    """An error answered outside the routes (shutdown, a crash, a missing API key) as the
    route's dialect writes one: Ollama's, OpenAI's (``/v1``), Anthropic's (``/v1/messages``)."""
    if path.startswith("/v1/messages"):
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            503: "overloaded_error",
        }
        return {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    if path.startswith("/v1/"):
        kind = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            503: "server_error",
        }.get(status, "api_error")
        code = "invalid_api_key" if status == 401 else None
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"error": message}


async def send_error(send: Send, path: str, status: int, message: str, *, close: bool) -> None:
    content = json.dumps(error_body(path, status, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(content)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise BadRequestError("request body too large")
    if not body.strip():
        raise BadRequestError("missing request body")
    data = load_json(body)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadRequestError(
            f"json: cannot unmarshal {_json_kind(data)} into Go value of type {model.__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequestError(_validation_text(exc, model.__name__)) from exc


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _validation_text(exc: ValidationError, type_name: str) -> str:
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error.get("loc", ()) if not isinstance(part, int))
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    got = _json_kind(error.get("input"))
    if error.get("type", "").endswith("_type"):
        return (
            f"json: cannot unmarshal {got} into Go struct field {type_name}.{location}"
            f" ({message.lower()})"
        )
    return f"invalid value for {location}: {message}"


_second: tuple[int, str] = (-1, "")  # the last whole second written, and its text


def now_rfc3339() -> str:
    """Now in UTC as Go writes ``time.Time`` (nanosecond digits): on every streamed chunk,
    so the date part is formatted once a second."""
    global _second
    now = time.time()
    whole = int(now)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole)))
    micros = min(int((now - whole) * 1e6), 999_999)
    return f"{_second[1]}{micros:06d}000Z"


async def respond(
    events: AsyncGenerator[dict[str, Any], None],
    *,
    stream: bool,
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    request: Request | None = None,
) -> Response:
    """Send ``events`` as NDJSON (``stream``) or as one merged JSON object.

    With ``request`` (whose body has been read), a disconnect before the response exists
    cancels ``events`` and raises ``RequestCanceledError`` (499, which nobody reads).
    """
    try:
        if not stream:
            collected = await unless_disconnected(request, _collect(events))
            if merge is not None:
                return JSONResponse(merge(collected))
            return JSONResponse(collected[-1] if collected else {})
        first = await unless_disconnected(request, anext(events))
    except StopAsyncIteration:
        return Response(b"", media_type="application/x-ndjson")
    except BaseException:
        await events.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        yield _line(first)
        try:
            async for event in events:
                yield _line(event)
        except CorralError as exc:
            logger.warning("stream ended with an error: %s", exc.message)
            _record_outcome(request, "client_error" if exc.status < 500 else "server_error")
            yield _line({"error": exc.message})
        except Exception as exc:
            logger.exception("stream failed")
            _record_outcome(request, "server_error")
            yield _line({"error": f"internal error: {exc}"})
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def _collect(events: AsyncGenerator[dict[str, Any], None]) -> list[dict[str, Any]]:
    return [event async for event in events]


def _record_outcome(request: Request | None, outcome: str) -> None:
    if request is not None:
        request.scope[OUTCOME_KEY] = outcome


async def unless_disconnected(request: Request | None, work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own, cancelled the moment the client disconnects
    (then ``RequestCanceledError``). ``request``'s body must have been read: the watch
    reads the ASGI channel, which afterwards brings nothing but ``http.disconnect``.

    Cancelling the task throws ``CancelledError`` into the generator where it waits (the
    scheduler's queue, the runner's stream), so its ``async with`` blocks release the
    runner and close the runner's HTTP stream, which frees the slot in the runner.
    """
    if request is None:
        return await work
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_until_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # we are cancelled ourselves (server shutdown)
        task.cancel()
        watch.cancel()
        await asyncio.wait({task, watch})
        raise
    watch.cancel()
    if task.done():
        await asyncio.wait({watch})
        return task.result()
    logger.info("client disconnected from %s: its work is cancelled", request.url.path)
    task.cancel()
    await asyncio.wait({task, watch})
    if not task.cancelled():
        task.exception()  # retrieved: the scheduler turns the cancel into its own error
    raise RequestCanceledError()


async def _until_disconnected(request: Request) -> None:
    await request.body()  # cached: makes sure the watch below never eats body chunks
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _line(event: dict[str, Any]) -> bytes:
    """One NDJSON line (orjson: a streamed chunk is written per token)."""
    try:
        return orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # what orjson does not write (a key that is no string): the slow way
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
