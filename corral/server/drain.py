"""Requests in flight: an error never breaks a connection, and shutdown ends every one.

``InFlightMiddleware`` runs each HTTP request's app in a task of its own and watches what it
sends. Two things follow:

- **Contained errors.** An exception that escapes a route (a bug: deliberate errors are
  ``CorralError`` and answered inside) is logged with its traceback once and answered here:
  a 500 ``{"error": "internal error: ..."}`` before the first byte; after it, a final error
  line (NDJSON) or error event (SSE) that completes the chunked body. Uvicorn is never handed
  the exception, so it never closes (resets) the keep-alive connection: the client's next
  request on it works.
- **Graceful shutdown** (``InFlight.close``, called by ``serve`` on SIGTERM/SIGINT): new
  requests get 503 ``server shutting down`` (with ``Connection: close``); those in flight may
  finish until the grace period ends; then each is cancelled, which releases its runner
  slot, and ended with a final ``{"error": "server shutting down"}`` line, an SSE error
  event in its dialect (OpenAI, Anthropic, Responses), or a 503 where nothing was sent yet.
  No client is left with a chunked body cut short without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.server.streaming import OUTCOME_KEY, error_body, send_error

__all__ = ["SHUTTING_DOWN", "InFlight", "InFlightMiddleware"]

logger = logging.getLogger(__name__)

SHUTTING_DOWN = "server shutting down"


class _Flight:
    """One request being answered, and what of its response went out."""

    __slots__ = ("complete", "content_type", "cut", "path", "scope", "started", "task")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.path: str = scope.get("path", "")
        self.task: asyncio.Future[None] | None = None
        self.started = False
        self.complete = False
        self.cut = False
        self.content_type = ""

    def note(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            for key, value in message.get("headers", ()):
                if key.lower() == b"content-type":
                    self.content_type = value.decode("latin-1").lower()
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True


class InFlight:
    """The requests being answered; ``close`` drains them at shutdown.

    ``deadline`` (``time.monotonic``) is when the whole shutdown must be over, runners
    stopped included; ``remaining()`` says how long is left (None: no shutdown under way)."""

    def __init__(self) -> None:
        self._flights: set[_Flight] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._hurry = asyncio.Event()
        self.closing = False
        self.deadline: float | None = None

    def __len__(self) -> int:
        return len(self._flights)

    def add(self, flight: _Flight) -> None:
        self._flights.add(flight)
        self._idle.clear()

    def discard(self, flight: _Flight) -> None:
        self._flights.discard(flight)
        if not self._flights:
            self._idle.set()

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    async def close(self, grace: float | None, *, deadline: float | None = None) -> None:
        """Refuse new requests; let those in flight finish for ``grace`` seconds (None:
        for as long as they take); then cut the rest, each with a last error line.
        ``deadline`` is when the whole shutdown must be over (see ``remaining``)."""
        self.closing = True
        self.deadline = deadline
        if self._flights:
            logger.info(
                "shutting down: %d request(s) in flight, %s to finish",
                len(self._flights),
                "no limit" if grace is None else f"{grace:g} s",
            )
        await self._wait(grace)
        flights = list(self._flights)
        if flights:
            logger.warning("ending %d request(s) still in flight: %s", len(flights), SHUTTING_DOWN)
        for flight in flights:
            flight.cut = True
            if flight.task is not None:
                flight.task.cancel()
        self._hurry.clear()
        await self._wait(1.0)  # each sends its last line as its cancellation ends

    def hurry(self) -> None:
        """End the grace period now (a second Ctrl+C)."""
        self._hurry.set()

    async def _wait(self, seconds: float | None) -> None:
        """Until nothing is in flight, ``seconds`` pass, or ``hurry`` is called."""
        waits = [
            asyncio.ensure_future(self._idle.wait()),
            asyncio.ensure_future(self._hurry.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()


class InFlightMiddleware:
    def __init__(self, app: ASGIApp, *, inflight: InFlight) -> None:
        self.app = app
        self.inflight = inflight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.inflight.closing:
            await send_error(send, scope.get("path", ""), 503, SHUTTING_DOWN, close=True)
            return
        flight = _Flight(scope)

        async def watching(message: Message) -> None:
            flight.note(message)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, watching))
        flight.task = task
        self.inflight.add(flight)
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not flight.cut or (current is not None and current.cancelling()):
                raise  # we are cancelled ourselves, or the cancel is not ours: pass it on
            scope[OUTCOME_KEY] = "server_error"
            await _finish(flight, send, 503, SHUTTING_DOWN)
        except Exception as exc:
            logger.error("%s %s crashed", scope.get("method"), flight.path, exc_info=exc)
            if flight.started and not flight.complete and not _streamed(flight.content_type):
                raise  # a partial plain body cannot be completed: the connection must close
            scope[OUTCOME_KEY] = "server_error"
            await _finish(flight, send, 500, f"internal error: {exc}")
        finally:
            self.inflight.discard(flight)


def _streamed(content_type: str) -> bool:
    return content_type.startswith(("application/x-ndjson", "text/event-stream"))


async def _finish(flight: _Flight, send: Send, status: int, message: str) -> None:
    """End ``flight``'s response with ``message``, whatever it had sent so far."""
    if flight.complete:
        return
    with contextlib.suppress(Exception):  # the client may be gone already
        if not flight.started:
            await send_error(send, flight.path, status, message, close=status == 503)
            return
        frame = _error_frame(flight.path, flight.content_type, status, message)
        await send({"type": "http.response.body", "body": frame, "more_body": False})


def _error_frame(path: str, content_type: str, status: int, message: str) -> bytes:
    """The last line or event of a stream that ends with an error."""
    if not content_type.startswith("text/event-stream"):
        return _json({"error": message}) + b"\n"
    if path.startswith("/v1/messages"):
        return b"event: error\ndata: " + _json(error_body(path, status, message)) + b"\n\n"
    if path.startswith("/v1/responses"):
        event = {"type": "error", "code": "server_error", "message": message, "param": None}
        return b"event: error\ndata: " + _json(event) + b"\n\n"
    return b"data: " + _json(error_body(path, status, message)) + b"\n\ndata: [DONE]\n\n"


def _json(value: Any) -> bytes:
    # ASCII: an exception's text may hold anything, a lone surrogate included
    return json.dumps(value, separators=(",", ":")).encode()
