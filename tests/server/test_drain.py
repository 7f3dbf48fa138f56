"""Requests in flight (``server/drain.py``): an exception never breaks the connection, and
a shutdown ends every request with a last error in its dialect.

The middleware runs on tiny apps; the connection test runs a real uvicorn on a free port,
since closing (resetting) the connection after a 500 is what uvicorn did with an exception
that reached it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from corral.server.drain import InFlight, InFlightMiddleware
from tests.server.asgi import http_scope

DEADLINE = 5.0


class Endless:
    """A stream that sends one line, then waits (a long generation)."""

    def __init__(self) -> None:
        self.sent_first = asyncio.Event()
        self.closed = False

    async def lines(self, first: bytes) -> AsyncIterator[bytes]:
        try:
            yield first
            self.sent_first.set()
            await asyncio.Event().wait()
            yield b"never\n"
        finally:
            self.closed = True


def _app(endless: Endless, inflight: InFlight) -> Starlette:
    async def ndjson(request: Request) -> Response:
        return StreamingResponse(
            endless.lines(b'{"done":false}\n'), media_type="application/x-ndjson"
        )

    async def sse(request: Request) -> Response:
        return StreamingResponse(
            endless.lines(b'data: {"x":1}\n\n'), media_type="text/event-stream"
        )

    async def slow(request: Request) -> Response:
        endless.sent_first.set()
        await asyncio.Event().wait()
        return JSONResponse({})

    async def boom(request: Request) -> Response:
        raise RuntimeError("kaboom")

    async def boom_mid_stream(request: Request) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            yield b'{"done":false}\n'
            raise RuntimeError("kaboom later")

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def soon(request: Request) -> Response:
        await asyncio.sleep(0.2)
        return PlainTextResponse("finished")

    async def ok(request: Request) -> Response:
        client = request.client
        return PlainTextResponse(f"ok {client.port if client else 0}")

    app = Starlette(
        routes=[
            Route("/api/generate", ndjson, methods=["POST"]),
            Route("/v1/chat/completions", sse, methods=["POST"]),
            Route("/v1/messages", sse, methods=["POST"]),
            Route("/v1/responses", sse, methods=["POST"]),
            Route("/api/show", slow, methods=["POST"]),
            Route("/boom", boom, methods=["GET", "POST"]),
            Route("/boom-stream", boom_mid_stream, methods=["POST"]),
            Route("/ok", ok, methods=["GET"]),
            Route("/soon", soon, methods=["GET"]),
        ]
    )
    app.add_middleware(InFlightMiddleware, inflight=inflight)
    return app


class Client:
    """One request through raw ASGI, recording what the app sends."""

    def __init__(self, app: Any, path: str, method: str = "POST") -> None:
        self.sent: list[Message] = []
        self._body = [{"type": "http.request", "body": b"{}"}]
        scope = http_scope(method, path)
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if self._body:
            return self._body.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def _send(self, message: Message) -> None:
        self.sent.append(message)

    async def done(self) -> None:
        async with asyncio.timeout(DEADLINE):
            await self.task

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        bodies = [m for m in self.sent if m["type"] == "http.response.body"]
        return bool(bodies) and not bodies[-1].get("more_body", False)


async def test_an_exception_before_the_first_byte_is_a_500_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Client(_app(Endless(), InFlight()), "/boom")
    await client.done()
    assert client.status == 500
    assert json.loads(client.body) == {"error": "internal error: kaboom"}
    assert client.complete
    assert "POST /boom crashed" in caplog.text
    assert "RuntimeError: kaboom" in caplog.text  # the traceback, once


async def test_an_exception_mid_stream_ends_the_body_with_an_error_line() -> None:
    client = Client(_app(Endless(), InFlight()), "/boom-stream")
    await client.done()
    assert client.status == 200
    lines = client.body.splitlines()
    assert json.loads(lines[-1]) == {"error": "internal error: kaboom later"}
    assert client.complete  # the chunked body is finished, not cut


SHUTDOWN_ENDINGS = [
    ("/api/generate", b'{"error":"server shutting down"}\n'),
    (
        "/v1/chat/completions",
        b'data: {"error":{"message":"server shutting down","type":"server_error",'
        b'"param":null,"code":null}}\n\ndata: [DONE]\n\n',
    ),
    (
        "/v1/messages",
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"server shutting down"}}\n\n',
    ),
    (
        "/v1/responses",
        b'event: error\ndata: {"type":"error","code":"server_error",'
        b'"message":"server shutting down","param":null}\n\n',
    ),
]


@pytest.mark.parametrize(("path", "ending"), SHUTDOWN_ENDINGS)
async def test_shutdown_ends_each_stream_with_an_error_in_its_dialect(
    path: str, ending: bytes
) -> None:
    endless, inflight = Endless(), InFlight()
    client = Client(_app(endless, inflight), path)
    async with asyncio.timeout(DEADLINE):
        await endless.sent_first.wait()
    async with asyncio.timeout(DEADLINE):
        await inflight.close(0.05)
    await client.done()
    assert client.status == 200
    assert client.body.endswith(ending), client.body
    assert client.complete
    assert endless.closed, "the stream's generator was not closed (its runner slot kept)"
    assert len(inflight) == 0


async def test_shutdown_lets_requests_finish_within_the_grace_period() -> None:
    inflight = InFlight()
    app = _app(Endless(), inflight)
    client = Client(app, "/soon", method="GET")
    await asyncio.sleep(0.05)
    assert len(inflight) == 1
    async with asyncio.timeout(1.0):
        await inflight.close(DEADLINE)  # returns as soon as nothing is in flight
    await client.done()
    assert client.status == 200
    assert client.body == b"finished"


async def test_shutdown_answers_503_where_nothing_was_sent_and_refuses_new_requests() -> None:
    endless, inflight = Endless(), InFlight()
    app = _app(endless, inflight)
    waiting = Client(app, "/api/show")
    async with asyncio.timeout(DEADLINE):
        await endless.sent_first.wait()
    closing = asyncio.create_task(inflight.close(None))
    await asyncio.sleep(0.05)
    late = Client(app, "/v1/chat/completions")
    await late.done()
    assert late.status == 503
    assert json.loads(late.body)["error"]["message"] == "server shutting down"
    assert (b"connection", b"close") in late.sent[0]["headers"]
    inflight.hurry()  # a second Ctrl+C: no more waiting
    async with asyncio.timeout(DEADLINE):
        await closing
    await waiting.done()
    assert waiting.status == 503
    assert json.loads(waiting.body) == {"error": "server shutting down"}


async def test_a_cancel_that_is_not_the_drains_passes_through() -> None:
    endless = Endless()
    client = Client(_app(endless, InFlight()), "/api/generate")
    async with asyncio.timeout(DEADLINE):
        await endless.sent_first.wait()
    client.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client.done()
    assert endless.closed


# ---- a real connection ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[str]:
    """The tiny app on a real uvicorn, on a thread of its own."""
    port = _free_port()
    config = uvicorn.Config(
        _app(Endless(), InFlight()), host="127.0.0.1", port=port, log_level="critical"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/ok", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("path", ["/boom", "/boom-stream"])
def test_the_connection_survives_a_500(served: str, path: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as client:
        first = client.get("/ok")
        port = first.text.split()[1]
        failed = client.post(path)
        assert failed.status_code in {200, 500}
        assert b"kaboom" in failed.content
        again = client.get("/ok")  # Connection reset by peer, before
        assert again.status_code == 200
        assert again.text.split()[1] == port, "not the same connection"
