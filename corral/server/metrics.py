"""``GET /metrics``: Prometheus text format.

One registry per app (no process-global state). Scheduler numbers are read when scraped
(a custom collector), request durations and generated tokens are recorded by the routes.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from corral.scheduler import Scheduler

__all__ = ["Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SchedulerCollector(Collector):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        scheduler = self.scheduler
        yield GaugeMetricFamily(
            "corral_queue_depth", "Requests waiting for a runner", value=scheduler.pending
        )
        loaded = GaugeMetricFamily("corral_loaded_runners", "Runner processes loaded")
        loaded.add_metric([], len(scheduler.loaded_now()))
        yield loaded
        busy = GaugeMetricFamily(
            "corral_runner_requests", "Requests in progress per model", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "corral_runner_memory_bytes",
            "Estimated memory of each loaded runner, by model and device kind",
            labels=["model", "device"],
        )
        for entry in scheduler.loaded_now():
            busy.add_metric([entry.spec.name], entry.refcount)
            memory.add_metric([entry.spec.name, "system"], entry.estimate.ram_bytes)
            memory.add_metric([entry.spec.name, "gpu"], entry.size_vram)
        yield busy
        yield memory
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

    def observe_generation(self, model: str, prompt_tokens: int, tokens: int) -> None:
        self.tokens.labels(model).inc(tokens)
        self.prompt_tokens.labels(model).inc(prompt_tokens)

    async def endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE)
