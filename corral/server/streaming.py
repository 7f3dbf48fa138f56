"""Request bodies in, NDJSON or JSON out, with Ollama's error rules.

- ``parse_body``: empty body → 400 ``missing request body``; bad JSON → 400 with the
  parser's words; a field of the wrong type → 400 naming the field (Ollama answers with Go's
  decoder text; we keep the same status and say which field).
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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from corral.errors import BadRequestError, CorralError, RequestCanceledError

__all__ = ["OUTCOME_KEY", "now_rfc3339", "parse_body", "respond", "unless_disconnected"]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")
#: ASGI scope key where a stream that failed after its first byte (HTTP 200 already sent)
#: records its outcome, for the request counter in ``metrics``
OUTCOME_KEY = "corral.outcome"
_MAX_BODY = 256 * 1024 * 1024


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise BadRequestError("request body too large")
    if not body.strip():
        raise BadRequestError("missing request body")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequestError(_json_error_text(exc)) from exc
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


def _json_error_text(exc: ValueError) -> str:
    message = str(exc)
    if "Expecting value: line 1 column 1" in message:
        return "invalid character looking for beginning of value"
    if isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip()):
        return "unexpected EOF"
    return f"invalid JSON: {message}"


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


def now_rfc3339() -> str:
    stamp = datetime.now(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond:06d}000Z"


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
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
