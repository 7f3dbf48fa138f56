"""``GET /metrics``: Prometheus text format.

One registry per app (no process-global state). Scheduler numbers are read when scraped
(a custom collector), request durations and generated tokens are recorded by the routes,
and every request's outcome by ``RequestOutcomes``, an ASGI wrapper around the app, so
failures are counted too, not only completed generations.

Two queues, two gauges: ``corral_queue_depth`` counts requests waiting in the scheduler
(for a load, an eviction, a reload); ``corral_requests_waiting_for_slot`` counts requests
that hold a runner but wait in its queue because all its ``num_parallel`` slots are busy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.scheduler import Scheduler
from corral.server.streaming import OUTCOME_KEY

__all__ = ["OUTCOMES", "Metrics", "RequestOutcomes"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: what became of a request, the ``outcome`` label of ``corral_requests_total``
OUTCOMES = ("ok", "client_error", "server_error", "busy", "canceled")


class _SchedulerCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        scheduler = self.scheduler
        yield GaugeMetricFamily(
            "corral_queue_depth",
            "Requests waiting in the scheduler for a runner (a load, an eviction, a reload)",
            value=scheduler.pending,
        )
        loaded = GaugeMetricFamily("corral_loaded_runners", "Runner processes loaded")
        loaded.add_metric([], len(scheduler.loaded_now()))
        yield loaded
        busy = GaugeMetricFamily(
            "corral_runner_requests", "Requests in progress per model", labels=["model"]
        )
        waiting = GaugeMetricFamily(
            "corral_requests_waiting_for_slot",
            "Requests holding a runner but queued in it, all its parallel slots busy",
            labels=["model"],
        )
        memory = GaugeMetricFamily(
            "corral_runner_memory_bytes",
            "Estimated memory of each loaded runner, by model and device kind",
            labels=["model", "device"],
        )
        runners = GaugeMetricFamily(
            "corral_model_runners", "Runners loaded per model (replicas)", labels=["model"]
        )
        # per model: a model's replicas (CORRAL_MAX_REPLICAS) are summed into one sample
        sums: dict[str, list[int]] = {}
        for entry in scheduler.loaded_now():
            row = sums.setdefault(entry.spec.name, [0, 0, 0, 0, 0])
            row[0] += entry.refcount
            row[1] += entry.waiting_for_slot
            row[2] += entry.estimate.ram_bytes
            row[3] += entry.size_vram
            row[4] += 1
        for name, (refs, queued, ram, vram, count) in sums.items():
            busy.add_metric([name], refs)
            waiting.add_metric([name], queued)
            memory.add_metric([name, "system"], ram)
            memory.add_metric([name, "gpu"], vram)
            runners.add_metric([name], count)
        yield busy
        yield waiting
        yield memory
        yield runners
        stats = scheduler.stats
        yield CounterMetricFamily("corral_model_loads", "Runner loads", value=stats.loads)
        yield CounterMetricFamily(
            "corral_model_load_failures", "Runner loads that failed", value=stats.load_failures
        )
        yield CounterMetricFamily("corral_model_unloads", "Runner unloads", value=stats.unloads)
        yield CounterMetricFamily(
            "corral_evictions", "Runners unloaded to make room", value=stats.evictions
        )


class Metrics:
    def __init__(self, scheduler: Scheduler) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_SchedulerCollector(scheduler))
        self.request_seconds = Histogram(
            "corral_request_duration_seconds",
            "Time from request to last byte, by route",
            ["route"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.tokens = Counter(
            "corral_tokens_generated",
            "Tokens generated, by model",
            ["model"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "corral_prompt_tokens_evaluated",
            "Prompt tokens evaluated (cache hits excluded), by model",
            ["model"],
            registry=self.registry,
        )
        self.requests = Counter(
            "corral_requests",
            "Requests by route and outcome (ok, client_error, server_error, busy, canceled)",
            ["route", "outcome"],
            registry=self.registry,
        )

    def observe_generation(self, model: str, prompt_tokens: int, tokens: int) -> None:
        self.tokens.labels(model).inc(tokens)
        self.prompt_tokens.labels(model).inc(prompt_tokens)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)


class RequestOutcomes:
    """ASGI wrapper counting every HTTP request by route and outcome.

    The outcome comes from the response status (499 canceled, 503 busy, other 4xx client
    error, 5xx server error), except that a stream that failed after its first byte (sent
    as 200) says so in the scope (``OUTCOME_KEY``), and a response whose last body chunk
    never went out was cut short by the client leaving: canceled. Routes are labelled by
    their template (``/api/blobs/{digest}``), unknown paths as ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seen = _Seen()

        async def watching(message: Message) -> None:
            seen.note(message)
            await send(message)

        try:
            await self.app(scope, receive, watching)
        except BaseException as exc:
            seen.failed = not isinstance(exc, asyncio.CancelledError)
            raise
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, seen.outcome(scope)).inc()


class _Seen:
    """What went out of one response."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.complete = False
        self.failed = False

    def note(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True

    def outcome(self, scope: Scope) -> str:
        status = self.status
        if status is None:
            return "server_error" if self.failed else "canceled"
        if status == 499 or not self.complete:
            return "canceled"
        recorded = scope.get(OUTCOME_KEY)
        if recorded is not None:
            return str(recorded)
        if status == 503:
            return "busy"
        if status >= 500:
            return "server_error"
        return "client_error" if status >= 400 else "ok"
