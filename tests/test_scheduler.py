"""Scheduler behaviour with fake runners injected through ``runner_factory``.

Every scenario is driven by events and by polling a condition until a deadline; the only
real timers are the keep-alive ones under test, set to a few hundredths of a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from corral.api.options import Options
from corral.config import FOREVER, Settings
from corral.errors import (
    InsufficientMemoryError,
    RequestCanceledError,
    RunnerError,
    ServerBusyError,
)
from corral.estimate import Estimate
from corral.hardware import CpuInfo, GpuInfo, SystemInfo, SystemMemory
from corral.runner.client import RunnerEmbeddings
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings
from corral.scheduler import LoadedModel, ModelSpec, RunnerLike, Scheduler

DEADLINE_SECONDS = 2.0


class FakeRunner:
    """A runner that only records what the scheduler asks of it."""

    def __init__(self, config: LoadSettings, pid: int) -> None:
        self.config = config
        self._pid = pid
        self._alive = True
        self._ended = asyncio.Event()
        self.how = "exit status 0"
        self.stops = 0

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int:
        return self._pid

    def die(self, how: str = "killed by signal 9 (SIGKILL)") -> None:
        self._alive = False
        self.how = how
        self._ended.set()

    async def stop(self, grace: float = 5.0) -> None:
        self.stops += 1
        self._alive = False
        self._ended.set()

    async def exited(self) -> str:
        await self._ended.wait()
        return self.how

    # the inference calls of RunnerLike: these tests never make them

    async def completion(self, payload: dict[str, Any]) -> AsyncGenerator[CompletionEvent, None]:
        yield {"content": "", "done": True}

    async def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return list(range(len(text.split())))

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join("x" for _ in tokens)

    async def embed(
        self,
        texts: Sequence[str] | Sequence[list[int]],
        *,
        truncate: bool = True,
        num_ctx: int | None = None,
    ) -> RunnerEmbeddings:
        vectors = np.zeros((len(texts), 4), dtype=np.float32)
        return RunnerEmbeddings(vectors=vectors, prompt_eval_count=0, duration_ns=0)


class FakeFactory:
    """Starts ``FakeRunner``s; a start can be made to hang (``gate``) or fail (``fail``)."""

    def __init__(self) -> None:
        self.calls = 0
        self.runners: list[FakeRunner] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def __call__(self, config: LoadSettings) -> RunnerLike:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        runner = FakeRunner(config, pid=1000 + len(self.runners))
        self.runners.append(runner)
        return runner

    def hang(self) -> asyncio.Event:
        self.gate = asyncio.Event()
        return self.gate

    def runners_for(self, spec: ModelSpec) -> list[FakeRunner]:
        return [r for r in self.runners if r.config.model_path == spec.model_path]


CPU = CpuInfo("fake", 2, 2, 2.0, ("avx2",))


class FakeMemory:
    """A CPU-only machine whose memory shrinks by the size of every live fake runner."""

    def __init__(self, factory: FakeFactory, total: int, sizes: dict[str, int]) -> None:
        self.factory, self.total, self.sizes = factory, total, sizes

    def __call__(self) -> SystemInfo:
        used = sum(self.sizes[r.config.model_path] for r in self.factory.runners if r.alive)
        memory = SystemMemory(total_bytes=self.total, free_bytes=self.total - used)
        return SystemInfo(gpus=(), cpu=CPU, memory=memory)


GIB = 2**30


def model(name: str, context_length: int = 0) -> ModelSpec:
    return ModelSpec(
        name=name,
        model=f"registry.ollama.ai/library/{name}",
        digest="0" * 64,
        model_path=f"/models/blobs/{name}.gguf",
        size_bytes=1 << 20,
        context_length=context_length,
    )


def options(**values: Any) -> Options:
    return Options.merged(values)


A, B, C = model("a"), model("b"), model("c")


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 20) -> None:
    """Let every ready task run a few steps (for checks that something did *not* happen)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeClock:
    """A clock that moves only when told: keep-alive expiry without sleeping."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.start = datetime(2025, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds - 1000.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class Harness:
    def __init__(self) -> None:
        self.factory = FakeFactory()
        self.schedulers: list[Scheduler] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def scheduler(
        self,
        max_loaded: int | None = None,
        memory: FakeMemory | None = None,
        sizes: dict[str, int] | None = None,
        clock: FakeClock | None = None,
        **changes: Any,
    ) -> Scheduler:
        settings = Settings(num_parallel=1).with_changes(**changes)
        extra: dict[str, Any] = {}
        if clock is not None:
            extra["clock"] = clock
        if memory is not None:
            extra["system"] = memory
        if sizes is not None:
            extra["estimator"] = lambda config, system: Estimate.on_cpu(sizes[config.model_path])
        scheduler = Scheduler(settings, self.factory, max_loaded=max_loaded, **extra)
        self.schedulers.append(scheduler)
        return scheduler

    def hold(
        self,
        scheduler: Scheduler,
        spec: ModelSpec,
        opts: Options | None = None,
        keep_alive: float | None = None,
    ) -> Holder:
        holder = Holder(scheduler, spec, opts or options(), keep_alive)
        self.tasks.append(holder.task)
        return holder


class Holder:
    """A request in a task: acquires, reports the entry, holds it until ``release()``."""

    def __init__(
        self, scheduler: Scheduler, spec: ModelSpec, opts: Options, keep_alive: float | None
    ) -> None:
        self.entry: LoadedModel | None = None
        self._release = asyncio.Event()
        self.task = asyncio.create_task(self._run(scheduler, spec, opts, keep_alive))

    async def _run(
        self, scheduler: Scheduler, spec: ModelSpec, opts: Options, keep_alive: float | None
    ) -> None:
        async with scheduler.acquire(spec, opts, keep_alive) as entry:
            self.entry = entry
            await self._release.wait()

    @property
    def got(self) -> bool:
        return self.entry is not None

    async def release(self) -> None:
        self._release.set()
        await self.task


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness()
    yield harness
    for task in harness.tasks:
        task.cancel()
    await asyncio.gather(*harness.tasks, return_exceptions=True)
    for scheduler in harness.schedulers:
        await scheduler.shutdown()


# ---- reuse and sharing -------------------------------------------------------------------


async def test_loaded_runner_is_reused(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None) as first:
        assert first.refcount == 1
    async with scheduler.acquire(A, options(), None) as second:
        assert second is first
        assert second.refcount == 1
    assert harness.factory.calls == 1
    assert first.refcount == 0
    assert first.runner.alive
    assert harness.factory.runners[0].stops == 0


async def test_concurrent_acquires_share_one_load(harness: Harness) -> None:
    scheduler = harness.scheduler()
    gate = harness.factory.hang()
    one, two = harness.hold(scheduler, A), harness.hold(scheduler, A)
    await wait_until(lambda: scheduler._pending == 2, "both requests to wait")
    await wait_until(lambda: harness.factory.calls == 1, "the one load to start")
    await settle()
    assert harness.factory.calls == 1
    gate.set()
    await wait_until(lambda: one.got and two.got, "both requests to get the runner")
    assert one.entry is two.entry
    assert one.entry is not None
    assert one.entry.refcount == 2
    await one.release()
    await two.release()
    assert harness.factory.calls == 1
    assert one.entry.refcount == 0


async def test_full_queue_answers_busy(harness: Harness) -> None:
    scheduler = harness.scheduler(max_queue=1)
    gate = harness.factory.hang()
    first = harness.hold(scheduler, A)
    await wait_until(lambda: harness.factory.calls == 1, "the load to start")
    with pytest.raises(ServerBusyError) as raised:
        async with scheduler.acquire(A, options(), None):
            pytest.fail("acquired past a full queue")
    assert raised.value.status == 503
    gate.set()
    await wait_until(lambda: first.got, "the first request to get its runner")
    await first.release()
    async with scheduler.acquire(A, options(), None) as entry:  # the queue drained
        assert entry is first.entry


# ---- keep-alive ---------------------------------------------------------------------------


async def test_keep_alive_expiry_unloads_only_after_release(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), 0.05) as entry:
        runner = harness.factory.runners[0]
        assert entry.timer is None
        assert entry.expires_at is None
        await asyncio.sleep(0.1)  # longer than the keep-alive: still in use, so still loaded
        assert runner.stops == 0
        assert await scheduler.loaded_models() == [entry]
    assert runner.stops == 0
    assert entry.timer is not None
    await wait_until(lambda: runner.stops == 1, "the keep-alive to expire")
    assert await scheduler.loaded_models() == []


async def test_keep_alive_zero_unloads_at_release(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), 0) as entry:
        await settle()
        runner = harness.factory.runners[0]
        assert runner.stops == 0, "a keep_alive 0 runner was stopped while in use"
        assert await scheduler.loaded_models() == [entry]
    assert runner.stops == 1
    assert await scheduler.loaded_models() == []


async def test_keep_alive_zero_on_a_loaded_runner_unloads_at_release(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        pass
    runner = harness.factory.runners[0]
    async with scheduler.acquire(A, options(), 0):
        await settle()
        assert runner.stops == 0
    assert runner.stops == 1
    assert await scheduler.loaded_models() == []


@pytest.mark.parametrize("source", ["request", "settings"])
async def test_keep_alive_forever_never_expires(harness: Harness, source: str) -> None:
    if source == "request":
        scheduler, keep_alive = harness.scheduler(), FOREVER
    else:
        scheduler, keep_alive = harness.scheduler(keep_alive_seconds=FOREVER), None
    async with scheduler.acquire(A, options(), keep_alive) as entry:
        pass
    assert entry.keep_alive == FOREVER
    assert entry.timer is None
    assert entry.expires_at is None
    assert entry.expires_at_wall().year > 2200
    assert harness.factory.runners[0].stops == 0


async def test_request_keep_alive_overwrites_the_runners(harness: Harness) -> None:
    scheduler = harness.scheduler(keep_alive_seconds=300.0)
    async with scheduler.acquire(A, options(), None) as entry:
        assert entry.keep_alive == 300.0
    async with scheduler.acquire(A, options(), 100.0):
        assert entry.keep_alive == 100.0
    async with scheduler.acquire(A, options(), 5.0):
        pass
    assert entry.keep_alive == 5.0
    assert entry.expires_at is not None
    assert entry.expires_at - time.monotonic() <= 5.0
    async with scheduler.acquire(A, options(), None):  # unset: keeps the last one
        pass
    assert entry.keep_alive == 5.0
    assert harness.factory.calls == 1


async def test_keep_alive_expiry_follows_the_clock(harness: Harness) -> None:
    clock = FakeClock()
    scheduler = harness.scheduler(clock=clock)
    async with scheduler.acquire(A, options(), 30.0) as entry:
        assert entry.expires_at_wall() == clock.now() + timedelta(seconds=30)
    runner = harness.factory.runners[0]
    assert entry.expires_at == clock.monotonic() + 30.0
    clock.advance(10.0)
    assert entry.expires_at_wall() == clock.now() + timedelta(seconds=20)

    scheduler._expire(entry)  # a timer firing early: the runner stays, the timer is set again
    await settle()
    assert runner.stops == 0
    assert entry.timer is not None

    clock.advance(20.0)
    scheduler._expire(entry)
    await wait_until(lambda: runner.stops == 1, "the runner to expire")
    assert await scheduler.loaded_models() == []


async def test_a_request_restarts_the_keep_alive_from_its_release(harness: Harness) -> None:
    clock = FakeClock()
    scheduler = harness.scheduler(clock=clock)
    async with scheduler.acquire(A, options(), 30.0) as entry:
        pass
    clock.advance(25.0)
    async with scheduler.acquire(A, options(), None):
        assert entry.expires_at is None  # in use: no expiry
        clock.advance(100.0)
    assert entry.expires_at == clock.monotonic() + 30.0
    scheduler._expire(entry)
    await settle()
    assert harness.factory.runners[0].stops == 0


async def test_stop_of_a_busy_runner_is_a_mark_not_a_keep_alive(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = harness.scheduler()
    holder = harness.hold(scheduler, A, keep_alive=FOREVER)
    await wait_until(lambda: holder.got, "the runner")
    assert await scheduler.unload(A.model_path) is True
    assert holder.entry is not None
    assert holder.entry.keep_alive == FOREVER
    assert holder.entry.unload_when_idle == "requested"
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        await holder.release()
    assert harness.factory.runners[0].stops == 1
    assert _log_line(caplog, "unloading model a").endswith(": requested")


async def test_waiters_wake_on_a_change_not_on_a_timer(harness: Harness) -> None:
    scheduler = harness.scheduler()
    waiter = asyncio.create_task(scheduler._wait_for_change())
    harness.tasks.append(waiter)
    await settle()
    assert not waiter.done()
    scheduler._notify()
    await settle()
    assert waiter.done()


# ---- options --------------------------------------------------------------------------------


async def test_bigger_context_reloads_after_the_running_request(harness: Harness) -> None:
    scheduler = harness.scheduler()
    running = harness.hold(scheduler, A, options(num_ctx=2048))
    await wait_until(lambda: running.got, "the first load")
    old = harness.factory.runners[0]
    assert old.config.num_ctx == 2048

    bigger = harness.hold(scheduler, A, options(num_ctx=8192))
    await wait_until(lambda: scheduler._pending == 1, "the bigger request to wait")
    await settle()
    assert not bigger.got
    assert harness.factory.calls == 1
    assert old.stops == 0

    await running.release()
    await wait_until(lambda: bigger.got, "the reload")
    assert harness.factory.calls == 2
    assert old.stops == 1
    assert bigger.entry is not None
    assert bigger.entry.config.num_ctx == 8192
    await bigger.release()


async def test_smaller_context_reuses_the_loaded_runner(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(num_ctx=8192), None) as entry:
        pass
    async with scheduler.acquire(A, options(num_ctx=1024), None) as again:
        assert again is entry
    assert harness.factory.calls == 1
    assert entry.config.num_ctx == 8192


async def test_idle_runner_with_other_options_is_replaced_at_once(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(num_batch=512), None):
        pass
    async with scheduler.acquire(A, options(num_batch=256), None) as entry:
        assert entry.config.num_batch == 256
    assert harness.factory.calls == 2
    assert harness.factory.runners[0].stops == 1


async def test_context_is_capped_at_the_training_length(harness: Harness) -> None:
    scheduler = harness.scheduler()
    spec = model("short", context_length=2048)
    assert scheduler.load_settings(spec, options(num_ctx=8192)).num_ctx == 2048
    assert scheduler.load_settings(spec, options(num_ctx=1024)).num_ctx == 1024


@pytest.mark.parametrize(("num_ctx", "expected"), [(0, 4), (1, 4), (-5, 4), (4, 4), (5, 5)])
async def test_context_has_a_floor_of_four(harness: Harness, num_ctx: int, expected: int) -> None:
    scheduler = harness.scheduler()
    assert scheduler.load_settings(A, Options.merged({"num_ctx": num_ctx})).num_ctx == expected


@pytest.mark.parametrize(
    ("values", "batch", "threads"),
    [
        ({"num_batch": 0, "num_parallel": 4}, 4, None),
        ({"num_batch": -7, "num_parallel": 4}, 4, None),
        ({"num_batch": 3, "num_parallel": 4}, 4, None),
        ({"num_batch": 2**31, "num_parallel": 4}, 4 * 4096, None),
        ({"num_batch": 2**63 - 1, "num_parallel": 1}, 4096, None),
        ({"num_thread": 2**31}, 512, 512),
        ({"num_thread": -3}, 512, 0),
    ],
)
async def test_no_request_value_reaches_llama_cpp_out_of_its_bounds(
    harness: Harness, values: dict[str, int], batch: int, threads: int | None
) -> None:
    """num_batch 0-3 with 4 slots aborted a runner (GGML_ASSERT), 2^31 crashed it (SIGSEGV),
    a huge num_thread asked ggml for more threads than it has."""
    scheduler = harness.scheduler()
    spec = model("m", context_length=4096)
    settings = scheduler.load_settings(spec, Options.merged(values))
    assert settings.batch_size == batch
    assert 1 <= settings.num_batch < 2**31
    if threads == 0:
        assert 0 < settings.num_thread <= 512  # automatic
    elif threads is not None:
        assert settings.num_thread == threads


async def test_context_without_a_training_length_is_bounded(harness: Harness) -> None:
    scheduler = harness.scheduler()
    spec = model("unknown", context_length=0)
    assert scheduler.load_settings(spec, options(num_ctx=2**62)).num_ctx == 1 << 20


# ---- eviction ---------------------------------------------------------------------------------


async def test_second_model_evicts_the_idle_first(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None) as b:
        (a_runner,) = harness.factory.runners_for(A)
        assert a_runner.stops == 1
        assert await scheduler.loaded_models() == [b]


async def test_second_model_waits_while_the_first_is_busy(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "the first model")
    second = harness.hold(scheduler, B)
    await wait_until(lambda: B.model_path in scheduler._loading, "the second load to wait")
    await settle()
    assert not second.got
    assert harness.factory.calls == 1
    assert harness.factory.runners[0].stops == 0

    await first.release()
    await wait_until(lambda: second.got, "the second model")
    assert harness.factory.runners[0].stops == 1
    assert [m.spec for m in await scheduler.loaded_models()] == [B]
    await second.release()


async def test_two_new_models_load_one_after_the_other(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1)
    first, second = harness.hold(scheduler, A), harness.hold(scheduler, B)
    await wait_until(lambda: first.got or second.got, "one of the two loads")
    winner, loser = (first, second) if first.got else (second, first)
    await settle()
    assert not loser.got
    await winner.release()
    await wait_until(lambda: loser.got, "the other load")
    assert harness.factory.calls == 2
    assert harness.factory.runners[0].stops == 1
    await loser.release()


async def test_two_models_waiting_on_a_busy_one_take_turns(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "the first model")
    second, third = harness.hold(scheduler, B), harness.hold(scheduler, C)
    await wait_until(lambda: len(scheduler._loading) == 2, "both loads to wait")
    await first.release()
    await wait_until(lambda: second.got or third.got, "one of the waiting models")
    winner, loser = (second, third) if second.got else (third, second)
    await settle()
    assert not loser.got
    assert harness.factory.calls == 2  # no load was evicted before its requester had it
    await winner.release()
    await wait_until(lambda: loser.got, "the last model")
    assert harness.factory.calls == 3
    assert [r.stops for r in harness.factory.runners] == [1, 1, 0]
    await loser.release()


async def test_eviction_picks_the_idle_runner_expiring_soonest(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=3)
    async with scheduler.acquire(A, options(), FOREVER):
        pass
    async with scheduler.acquire(B, options(), 10.0):
        pass
    async with scheduler.acquire(C, options(), 100.0):
        pass
    busy = harness.hold(scheduler, model("d"))
    await wait_until(lambda: busy.got, "the fourth model")
    (a, b, c) = (harness.factory.runners_for(s)[0] for s in (A, B, C))
    assert (a.stops, b.stops, c.stops) == (0, 1, 0)

    async with scheduler.acquire(model("e"), options(), None):
        assert (a.stops, c.stops) == (0, 1)  # C expires before A (forever); D is busy
    await busy.release()


# ---- failures and cancellation ---------------------------------------------------------------


async def test_dead_runner_is_dropped_and_reloaded(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None) as first:
        pass
    harness.factory.runners[0].die()
    async with scheduler.acquire(A, options(), None) as second:
        assert second is not first
        assert second.runner.alive
    assert harness.factory.calls == 2
    assert await scheduler.loaded_models() == [second]


async def test_runner_dying_in_use_is_dropped_at_release(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        harness.factory.runners[0].die()
    assert await scheduler.loaded_models() == []


async def test_cancelled_requester_does_not_cancel_the_shared_load(harness: Harness) -> None:
    scheduler = harness.scheduler()
    gate = harness.factory.hang()
    leaving, staying = harness.hold(scheduler, A), harness.hold(scheduler, A)
    await wait_until(lambda: scheduler._pending == 2, "both requests to wait")
    leaving.task.cancel()
    with pytest.raises((RequestCanceledError, asyncio.CancelledError)):
        await leaving.task
    assert scheduler._pending == 1
    gate.set()
    await wait_until(lambda: staying.got, "the remaining request to get the runner")
    assert staying.entry is not None
    assert staying.entry.refcount == 1
    assert harness.factory.calls == 1
    await staying.release()
    assert staying.entry.runner.alive


async def test_failed_load_raises_to_every_waiter_and_loads_nothing(harness: Harness) -> None:
    scheduler = harness.scheduler()
    gate = harness.factory.hang()
    harness.factory.fail = RunnerError("llama runner process has terminated: exit status 1")
    one, two = harness.hold(scheduler, A), harness.hold(scheduler, A)
    await wait_until(lambda: scheduler._pending == 2, "both requests to wait")
    gate.set()
    for holder in (one, two):
        with pytest.raises(RunnerError, match="exit status 1"):
            await holder.task
    assert harness.factory.calls == 1
    assert await scheduler.loaded_models() == []
    assert scheduler._loading == {}
    assert scheduler._pending == 0

    harness.factory.fail = None
    async with scheduler.acquire(A, options(), None) as entry:
        assert entry.runner.alive
    assert harness.factory.calls == 2


async def test_expiry_racing_a_new_request_does_not_stop_it(harness: Harness) -> None:
    clock = FakeClock()
    scheduler = harness.scheduler(clock=clock)
    async with scheduler.acquire(A, options(), None) as entry:
        pass
    clock.advance(scheduler.settings.keep_alive_seconds + 1)  # due
    scheduler._expire(entry)  # the timer fires in the same loop turn as a request arrives
    async with scheduler.acquire(A, options(), None) as again:
        await settle()
        assert again is entry
        assert harness.factory.runners[0].stops == 0
        assert not entry.unloading


# ---- unload, shutdown, listing ----------------------------------------------------------------


async def test_unload_stops_an_idle_model(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        pass
    assert await scheduler.unload(A.model_path) is True
    assert harness.factory.runners[0].stops == 1
    assert await scheduler.loaded_models() == []
    assert await scheduler.unload(A.model_path) is False


async def test_unload_of_a_busy_model_waits_for_its_request(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        assert await scheduler.unload(A.model_path) is True
        assert harness.factory.runners[0].stops == 0
    assert harness.factory.runners[0].stops == 1


async def test_shutdown_stops_every_runner(harness: Harness) -> None:
    scheduler = harness.scheduler()
    for spec in (A, B, C):
        async with scheduler.acquire(spec, options(), None):
            pass
    await scheduler.shutdown()
    assert [r.stops for r in harness.factory.runners] == [1, 1, 1]
    assert await scheduler.loaded_models() == []


async def test_shutdown_cancels_a_pending_load(harness: Harness) -> None:
    scheduler = harness.scheduler()
    harness.factory.hang()
    waiting = harness.hold(scheduler, A)
    await wait_until(lambda: harness.factory.calls == 1, "the load to start")
    await scheduler.shutdown()
    with pytest.raises((RequestCanceledError, asyncio.CancelledError)):
        await waiting.task
    assert await scheduler.loaded_models() == []


async def test_loaded_models_lists_latest_expiry_first(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), 10.0):
        pass
    async with scheduler.acquire(B, options(), 1000.0):
        pass
    async with scheduler.acquire(C, options(), 100.0):
        loaded = await scheduler.loaded_models()
    assert {m.spec.name for m in loaded} == {"a", "b", "c"}
    assert [m.spec.name for m in await scheduler.loaded_models()] == ["b", "c", "a"]


# ---- memory ----------------------------------------------------------------------------


def memory_harness(harness: Harness, total: int, **sizes_gib: float) -> Scheduler:
    sizes = {f"/models/blobs/{name}.gguf": int(size * GIB) for name, size in sizes_gib.items()}
    memory = FakeMemory(harness.factory, total, sizes)
    return harness.scheduler(max_loaded=10, memory=memory, sizes=sizes)


async def test_model_bigger_than_memory_fails_clearly(harness: Harness) -> None:
    scheduler = memory_harness(harness, total=4 * GIB, a=6)
    with pytest.raises(InsufficientMemoryError) as info:
        async with scheduler.acquire(A, options(), None):
            pass
    assert "model requires more system memory (6.0 GiB) than is available (4.0 GiB)" in str(
        info.value
    )
    assert harness.factory.calls == 0


async def test_memory_pressure_evicts_an_idle_model(harness: Harness) -> None:
    scheduler = memory_harness(harness, total=10 * GIB, a=6, b=6)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None):
        pass
    assert harness.factory.runners_for(A)[0].stops == 1
    assert [e.spec.name for e in scheduler.loaded_now()] == ["b"]
    assert scheduler.stats.evictions == 1


async def test_models_that_fit_together_stay_loaded(harness: Harness) -> None:
    scheduler = memory_harness(harness, total=10 * GIB, a=4, b=4)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None):
        pass
    assert sorted(e.spec.name for e in scheduler.loaded_now()) == ["a", "b"]


async def test_memory_pressure_waits_for_a_busy_model(harness: Harness) -> None:
    scheduler = memory_harness(harness, total=10 * GIB, a=6, b=6)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a to load")
    second = harness.hold(scheduler, B)
    await settle()
    assert not second.got
    await first.release()
    await wait_until(lambda: second.got, "b to load once a is released")
    assert harness.factory.runners_for(A)[0].stops == 1
    await second.release()


# ---- fairness ----------------------------------------------------------------------------


async def test_burst_for_a_loaded_model_does_not_starve_another(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a to load")
    waiting_b = harness.hold(scheduler, B)
    # b's load asks the machine for its memory (in a thread), then has a drain
    await wait_until(lambda: scheduler.loaded_now()[0].draining, "a to drain for b")
    assert not waiting_b.got
    burst = [harness.hold(scheduler, A) for _ in range(5)]
    await settle()
    assert not any(h.got for h in burst), "new requests for a draining model must queue"
    await first.release()
    await wait_until(lambda: waiting_b.got, "b to get its turn")
    assert harness.factory.runners_for(A)[0].stops == 1
    await waiting_b.release()
    await wait_until(lambda: all(h.got for h in burst), "the burst to be served after b")
    for holder in burst:
        await holder.release()
    assert len(harness.factory.runners_for(A)) == 2


# ---- GPUs ------------------------------------------------------------------------------------

MIB = 2**20


class FakeGpuMachine:
    """One fake GPU whose free memory shrinks by the VRAM of every live fake runner on it.

    A stopped runner's memory comes back only after ``lag`` more refreshes (the driver frees
    a dead process's memory a little later), which is what the recovery wait is for.
    """

    def __init__(self, factory: FakeFactory, total_gib: float, lag: int = 0) -> None:
        self.factory, self.total, self.lag = factory, int(total_gib * GIB), lag
        self.refreshes = 0
        self._freed_at: dict[int, int] = {}  # runner pid -> refresh at which it is free

    def vram_of(self, runner: FakeRunner) -> int:
        return runner.config.num_gpu_layers * 100 * MIB

    def __call__(self) -> SystemInfo:
        self.refreshes += 1
        used = 0
        for runner in self.factory.runners:
            if not runner.alive:
                freed = self._freed_at.setdefault(runner.pid, self.refreshes + self.lag)
                if self.refreshes >= freed:
                    continue
            used += self.vram_of(runner)
        gpu = GpuInfo(
            id="GPU-fake",
            index=0,
            name="fake",
            compute="8.6",
            driver="12.4",
            total_bytes=self.total,
            free_bytes=self.total - used,
            minimum_bytes=0,
        )
        memory = SystemMemory(total_bytes=64 * GIB, free_bytes=64 * GIB)
        return SystemInfo(gpus=(gpu,), cpu=CPU, memory=memory)


def layered_estimator(layers: dict[str, int]) -> Any:
    """Each model has ``layers[path]`` layers of 100 MiB; as many as fit go to the GPU."""

    def plan(config: LoadSettings, system: SystemInfo) -> Estimate:
        total = layers[config.model_path]
        wanted = total if config.num_gpu < 0 else min(config.num_gpu, total)
        on_gpu = 0
        gpus: tuple[GpuInfo, ...] = system.gpus
        if gpus:
            on_gpu = min(wanted, gpus[0].usable_bytes // (100 * MIB))
        return Estimate(
            layers=total,
            gpu_layers=on_gpu,
            gpu_ids=(gpus[0].id,) if on_gpu else (),
            tensor_split=(on_gpu,) if on_gpu else (),
            gpu_bytes=(on_gpu * 100 * MIB,) if on_gpu else (),
            ram_bytes=(total - on_gpu) * 100 * MIB + 50 * MIB,
        )

    return plan


def gpu_harness(
    harness: Harness, total_gib: float, lag: int = 0, **layers: int
) -> tuple[Scheduler, FakeGpuMachine]:
    machine = FakeGpuMachine(harness.factory, total_gib, lag)
    sizes = {f"/models/blobs/{name}.gguf": count for name, count in layers.items()}
    settings = Settings(num_parallel=1)
    scheduler = Scheduler(
        settings, harness.factory, system=machine, estimator=layered_estimator(sizes)
    )
    harness.schedulers.append(scheduler)
    return scheduler, machine


async def test_a_model_that_fits_goes_whole_to_the_gpu(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=4, a=10)
    async with scheduler.acquire(A, options(), None) as entry:
        assert entry.config.num_gpu_layers == 10
        assert entry.config.gpu_ids == ("GPU-fake",)
        assert entry.config.tensor_split == (10,)
        assert entry.size_vram == 1000 * MIB
        assert entry.size_bytes == 1050 * MIB


async def test_max_loaded_models_defaults_to_three_per_gpu(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=4, a=1)
    assert scheduler._max_loaded == 3


async def test_gpu_memory_evicts_an_idle_model_and_waits_for_it_to_come_back(
    harness: Harness,
) -> None:
    scheduler, machine = gpu_harness(harness, total_gib=1.5, lag=3, a=10, b=10)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None) as entry:
        assert entry.config.num_gpu_layers == 10, "b waited for a's memory, then fit whole"
    assert harness.factory.runners_for(A)[0].stops == 1
    assert scheduler.stats.evictions == 1
    assert machine.refreshes >= 4, "the load polled until the memory came back"


async def test_a_model_bigger_than_the_gpu_loads_partly_when_nothing_else_is_loaded(
    harness: Harness,
) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=1, a=30)
    async with scheduler.acquire(A, options(), None) as entry:
        assert entry.config.num_gpu_layers == 10
        assert entry.size_vram == 1000 * MIB
        assert entry.estimate.ram_bytes == 20 * 100 * MIB + 50 * MIB


async def test_partial_fit_evicts_others_first(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=2, a=5, b=18)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None) as entry:
        assert entry.config.num_gpu_layers == 18
    assert [e.spec.name for e in scheduler.loaded_now()] == ["b"]


async def test_models_that_fit_the_gpu_together_stay_loaded(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=2, a=5, b=5)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None) as entry:
        assert entry.config.num_gpu_layers == 5
    assert sorted(e.spec.name for e in scheduler.loaded_now()) == ["a", "b"]


async def test_num_gpu_asks_for_a_reload_but_placement_alone_does_not(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=2, a=10, b=5)
    async with scheduler.acquire(A, options(), None):
        pass
    async with scheduler.acquire(B, options(), None):
        pass
    # a loaded with every layer; free memory has changed since, which must not reload it
    async with scheduler.acquire(A, options(), None) as entry:
        assert entry.config.num_gpu_layers == 10
    assert len(harness.factory.runners_for(A)) == 1
    async with scheduler.acquire(A, options(num_gpu=3), None) as entry:
        assert entry.config.num_gpu_layers == 3
    assert len(harness.factory.runners_for(A)) == 2


async def test_num_gpu_zero_keeps_a_model_on_the_cpu(harness: Harness) -> None:
    scheduler, _ = gpu_harness(harness, total_gib=4, a=10)
    async with scheduler.acquire(A, options(num_gpu=0), None) as entry:
        assert entry.config.num_gpu_layers == 0
        assert entry.config.gpu_ids == ()
        assert entry.size_vram == 0


# ---- automatic and unset load-time options ----------------------------------------------


def slot_sized(per_model_gib: float, per_slot_gib: float) -> Callable[[LoadSettings], int]:
    """A model's memory: its weights plus a KV cache per parallel slot."""
    return lambda config: int((per_model_gib + per_slot_gib * config.num_parallel) * GIB)


class SlotMemory:
    """A CPU-only machine whose free memory shrinks by what each live fake runner's slots
    take, so how many slots fit depends on which other models are loaded."""

    def __init__(self, factory: FakeFactory, total_gib: float, size: Callable[[LoadSettings], int]):
        self.factory, self.total, self.size = factory, int(total_gib * GIB), size

    def __call__(self) -> SystemInfo:
        used = sum(self.size(r.config) for r in self.factory.runners if r.alive)
        memory = SystemMemory(total_bytes=self.total, free_bytes=self.total - used)
        return SystemInfo(gpus=(), cpu=CPU, memory=memory)


def auto_parallel_scheduler(harness: Harness) -> Scheduler:
    """8 GiB; a model takes 2 GiB + 0.5 GiB per slot: 4 slots (4 GiB) fit with a fifth to
    spare only while the other model is not loaded, 1 slot (2.5 GiB) fits beside it."""
    size = slot_sized(2, 0.5)
    scheduler = Scheduler(
        Settings(num_parallel=0),
        harness.factory,
        system=SlotMemory(harness.factory, 8, size),
        estimator=lambda config, system: Estimate.on_cpu(size(config)),
    )
    harness.schedulers.append(scheduler)
    return scheduler


async def test_automatic_parallel_is_decided_at_load_not_per_request(harness: Harness) -> None:
    scheduler = auto_parallel_scheduler(harness)
    for spec in (A, B, A, B, A, B):
        async with scheduler.acquire(spec, options(), None):
            pass
    assert harness.factory.calls == 2, "models taking turns reloaded each other"
    slots = {r.config.model_path: r.config.num_parallel for r in harness.factory.runners}
    assert slots == {A.model_path: 4, B.model_path: 1}
    assert all(r.stops == 0 for r in harness.factory.runners)


async def test_automatic_parallel_is_one_where_four_slots_do_not_fit(harness: Harness) -> None:
    scheduler = auto_parallel_scheduler(harness)
    async with scheduler.acquire(A, options(num_parallel=4), None):
        pass
    async with scheduler.acquire(B, options(), None) as b:
        assert b.config.num_parallel == 1
    await scheduler.unload(A.model_path)
    async with scheduler.acquire(B, options(), None) as again:  # room now, but no reload
        assert again is b
    assert harness.factory.calls == 2


async def test_unset_context_uses_the_loaded_runner_whatever_its_context(
    harness: Harness,
) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(num_ctx=2048), None) as entry:
        pass
    async with scheduler.acquire(A, options(), None) as again:  # default 4096, not set
        assert again is entry
    model_params = Options.merged({"num_ctx": 8192})  # a Modelfile PARAMETER counts as set
    async with scheduler.acquire(A, model_params, None) as bigger:
        assert bigger is not entry
        assert bigger.config.num_ctx == 8192
    assert harness.factory.calls == 2


@pytest.mark.parametrize(
    ("loaded", "request_options"),
    [
        ({"num_batch": 256}, {}),
        ({"num_thread": 1}, {}),
        ({"use_mmap": False}, {}),
        ({"num_parallel": 2}, {}),
        ({"num_gpu": 3}, {}),
        ({"num_gpu": 3}, {"num_gpu": -1}),  # -1: as many layers as fit, any runner will do
        ({"num_ctx": 8192}, {"num_ctx": 8192}),
        ({"num_ctx": 8192}, {"num_ctx": 1024}),
    ],
)
async def test_options_left_unset_match_any_loaded_runner(
    harness: Harness, loaded: dict[str, Any], request_options: dict[str, Any]
) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(**loaded), None) as entry:
        pass
    async with scheduler.acquire(A, options(**request_options), None) as again:
        assert again is entry
    assert harness.factory.calls == 1


@pytest.mark.parametrize(
    ("loaded", "request_options", "reason"),
    [
        ({"num_batch": 256}, {"num_batch": 512}, "num_batch changed from 256 to 512"),
        ({"num_parallel": 2}, {"num_parallel": 3}, "num_parallel changed from 2 to 3"),
        ({}, {"num_gpu": 0}, "num_gpu changed from -1 to 0"),
        ({"num_ctx": 2048}, {"num_ctx": 4096}, "num_ctx changed from 2048 to 4096"),
        ({"use_mmap": False}, {"use_mmap": True}, "use_mmap changed from False to True"),
    ],
)
async def test_set_options_that_differ_reload_and_say_which(
    harness: Harness,
    loaded: dict[str, Any],
    request_options: dict[str, Any],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(**loaded), None):
        pass
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        async with scheduler.acquire(A, options(**request_options), None):
            pass
    assert harness.factory.calls == 2
    unload = _log_line(caplog, "unloading model a")
    load = _log_line(caplog, "loading model a")
    assert f"options changed: {reason}" in unload
    assert f"reload because options changed: {reason}" in load


async def test_per_request_parallel_reaches_the_runner(harness: Harness) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(num_parallel=3), None) as entry:
        assert entry.config.num_parallel == 3


async def test_requests_beyond_the_slots_count_as_waiting_for_one(harness: Harness) -> None:
    scheduler = harness.scheduler()
    holders = [harness.hold(scheduler, A, options(num_parallel=2)) for _ in range(3)]
    await wait_until(lambda: all(h.got for h in holders), "three requests on two slots")
    (entry,) = scheduler.loaded_now()
    assert (entry.refcount, entry.waiting_for_slot) == (3, 1)
    await holders[0].release()
    assert entry.waiting_for_slot == 0
    for holder in holders[1:]:
        await holder.release()


# ---- log lines ---------------------------------------------------------------------------


def _log_line(caplog: pytest.LogCaptureFixture, start: str) -> str:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(start)]
    assert lines, f"no log line starting {start!r} in {[r.getMessage() for r in caplog.records]}"
    return lines[-1]


async def test_load_line_says_what_is_needed_what_is_free_and_why(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = memory_harness(harness, total=10 * GIB, a=4)
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        async with scheduler.acquire(A, options(), None):
            pass
    line = _log_line(caplog, "loading model a")
    assert "(first use)" in line
    assert "needs 4.0 GiB system memory" in line
    assert "free 10.0 GiB system memory" in line
    assert "ctx 4096 x 1 parallel" in line


async def test_eviction_line_names_both_models_and_the_memory(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = memory_harness(harness, total=10 * GIB, a=6, b=6)
    async with scheduler.acquire(A, options(), None):
        pass
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        async with scheduler.acquire(B, options(), None):
            pass
    line = _log_line(caplog, "evicting a")
    assert "to load b" in line
    assert "needs 6.0 GiB system memory; free 4.0 GiB system memory" in line
    assert "reload because" not in _log_line(caplog, "loading model b")


async def test_runner_dying_while_idle_is_dropped_at_once_and_logged(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        pass
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        harness.factory.runners[0].die("killed by signal 9 (SIGKILL)")
        await wait_until(lambda: not scheduler.loaded_now(), "the dead runner to be dropped")
    died = _log_line(caplog, "runner for model a")
    assert "stopped unexpectedly: killed by signal 9 (SIGKILL)" in died
    assert "runner died (killed by signal 9 (SIGKILL))" in _log_line(caplog, "unloading model a")
    with caplog.at_level(logging.INFO, logger="corral.scheduler"):
        async with scheduler.acquire(A, options(), None):
            pass
    assert "reload because runner died (killed by signal 9" in _log_line(caplog, "loading model a")


async def test_runner_dying_in_use_is_dropped_when_its_request_ends(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = harness.scheduler()
    holder = harness.hold(scheduler, A)
    await wait_until(lambda: holder.got, "the runner")
    with caplog.at_level(logging.WARNING, logger="corral.scheduler"):
        harness.factory.runners[0].die("exit status 139")
        await wait_until(lambda: bool(caplog.records), "the death to be logged")
    assert scheduler.loaded_now(), "dropped while its request still held it"
    await holder.release()
    assert scheduler.loaded_now() == []
    assert "stopped unexpectedly: exit status 139" in _log_line(caplog, "runner for model a")


async def test_a_runner_we_stop_ends_quietly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler = harness.scheduler()
    async with scheduler.acquire(A, options(), None):
        pass
    with caplog.at_level(logging.WARNING, logger="corral.scheduler"):
        await scheduler.unload(A.model_path)
    assert not caplog.records
    (entry_runner,) = harness.factory.runners
    assert entry_runner.stops == 1
