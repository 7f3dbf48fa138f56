"""Request bodies in, NDJSON or JSON out, with Ollama's error rules.

- ``parse_body``: empty body → 400 ``missing request body``; bad JSON → 400 with the
  parser's words; a field of the wrong type → 400 naming the field (Ollama answers with Go's
  decoder text; we keep the same status and say which field).
- ``respond``: for ``stream: true`` the first event is awaited *before* any byte is sent, so
  an error there (unknown model, runner failed to load) gets its real status; an error
  after the first byte becomes a final ``{"error": ...}`` line, as Ollama does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from corral.errors import BadRequestError, CorralError

__all__ = ["now_rfc3339", "parse_body", "respond"]

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)
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
) -> Response:
    """Send ``events`` as NDJSON (``stream``) or as one merged JSON object."""
    if not stream:
        collected = [event async for event in events]
        if merge is not None:
            return JSONResponse(merge(collected))
        return JSONResponse(collected[-1] if collected else {})
    try:
        first = await anext(events)
    except StopAsyncIteration:
        return Response(b"", media_type="application/x-ndjson")

    async def body() -> AsyncIterator[bytes]:
        yield _line(first)
        try:
            async for event in events:
                yield _line(event)
        except CorralError as exc:
            logger.warning("stream ended with an error: %s", exc.message)
            yield _line({"error": exc.message})
        except Exception as exc:
            logger.exception("stream failed")
            yield _line({"error": f"internal error: {exc}"})
        finally:
            await events.aclose()

    return StreamingResponse(body(), media_type="application/x-ndjson")


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
