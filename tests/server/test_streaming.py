"""``respond`` cancels the work of a client that leaves, and every request's outcome is
counted, on a tiny app speaking raw ASGI (so the test decides when the client leaves)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from corral.config import Settings
from corral.errors import CorralError, RunnerError, ServerBusyError
from corral.scheduler import Scheduler
from corral.server.metrics import Metrics, RequestOutcomes
from corral.server.streaming import respond
from tests.server.asgi import http_scope

DEADLINE_SECONDS = 5.0


class Work:
    """A generation that holds a resource (like a runner slot) until it ends or is cancelled."""

    def __init__(self, events: int = 0, fail_after: int | None = None) -> None:
        self.started = asyncio.Event()
        self.finish = asyncio.Event()
        self.held = False
        self.cancelled = False
        self.events, self.fail_after = events, fail_after

    async def run(self) -> AsyncGenerator[dict[str, Any], None]:
        self.held = True
        try:
            for index in range(self.events):
                if index == self.fail_after:
                    raise RunnerError("model runner has unexpectedly stopped")
                yield {"n": index}
            self.started.set()
            await self.finish.wait()  # the runner's queue, or a long generation
            yield {"n": "last", "done": True}
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.held = False


class Client:
    """One HTTP request through the raw ASGI interface; ``leave()`` disconnects."""

    def __init__(self, app: Any, path: str, body: dict[str, Any]) -> None:
        self.sent: list[Message] = []
        self._gone = asyncio.Event()
        self._body = [{"type": "http.request", "body": json.dumps(body).encode()}]
        scope = http_scope("POST", path)
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> Message:
        if self._body:
            return self._body.pop(0)
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: Message) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self._gone.set()

    async def done(self) -> None:
        async with asyncio.timeout(DEADLINE_SECONDS):
            await self.task

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


@pytest.fixture
async def metrics() -> Metrics:
    return Metrics(Scheduler(Settings(), _no_runner))


async def _no_runner(config: Any) -> Any:
    raise AssertionError("no runner in these tests")


def app_for(work: Work, metrics: Metrics) -> RequestOutcomes:
    async def handler(request: Request) -> Response:
        body = json.loads(await request.body())
        return await respond(work.run(), stream=body["stream"], request=request)

    async def busy(request: Request) -> Response:
        raise ServerBusyError()

    async def corral_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CorralError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    app = Starlette(
        routes=[
            Route("/api/generate", handler, methods=["POST"]),
            Route("/api/busy", busy, methods=["POST"]),
        ],
        exception_handlers={CorralError: corral_error},
    )
    return RequestOutcomes(app, metrics)


def count(metrics: Metrics, route: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "corral_requests_total", {"route": route, "outcome": outcome}
    )
    return value or 0.0


@pytest.mark.parametrize("stream", [False, True])
async def test_leaving_before_the_first_event_cancels_the_work(
    metrics: Metrics, stream: bool
) -> None:
    work = Work(events=0 if stream else 3)
    client = Client(app_for(work, metrics), "/api/generate", {"stream": stream})
    async with asyncio.timeout(DEADLINE_SECONDS):
        await work.started.wait()
    assert work.held
    client.leave()
    await client.done()
    assert work.cancelled
    assert not work.held, "the slot was not given back"
    assert client.status == 499
    assert count(metrics, "/api/generate", "canceled") == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_stays_gets_its_answer(metrics: Metrics, stream: bool) -> None:
    work = Work(events=2)
    client = Client(app_for(work, metrics), "/api/generate", {"stream": stream})
    async with asyncio.timeout(DEADLINE_SECONDS):
        await work.started.wait()
    work.finish.set()
    await client.done()
    assert client.status == 200
    assert b'"last"' in client.body
    assert not work.cancelled
    assert count(metrics, "/api/generate", "ok") == 1


async def test_leaving_mid_stream_counts_as_canceled(metrics: Metrics) -> None:
    work = Work(events=2)
    client = Client(app_for(work, metrics), "/api/generate", {"stream": True})
    async with asyncio.timeout(DEADLINE_SECONDS):
        await work.started.wait()
    client.leave()
    await client.done()
    assert client.status == 200
    assert count(metrics, "/api/generate", "canceled") == 1


async def test_an_error_after_the_first_byte_counts_as_a_server_error(metrics: Metrics) -> None:
    work = Work(events=3, fail_after=1)
    client = Client(app_for(work, metrics), "/api/generate", {"stream": True})
    await client.done()
    assert client.status == 200
    last = json.loads(client.body.splitlines()[-1])
    assert last == {"error": "model runner has unexpectedly stopped"}
    assert count(metrics, "/api/generate", "server_error") == 1
    assert count(metrics, "/api/generate", "ok") == 0


async def test_outcomes_by_status(metrics: Metrics) -> None:
    app = app_for(Work(), metrics)
    busy = Client(app, "/api/busy", {})
    await busy.done()
    assert busy.status == 503
    bad = Client(app, "/api/generate", {})  # no "stream": the handler crashes with a KeyError
    with pytest.raises(KeyError):
        await bad.done()
    missing = Client(app, "/nothing", {})
    await missing.done()
    assert missing.status == 404
    assert count(metrics, "/api/busy", "busy") == 1
    assert count(metrics, "/api/generate", "server_error") == 1
    assert count(metrics, "unmatched", "client_error") == 1
