"""The automatic context: the default by the GPUs' memory, grown for a long prompt, stepped
down to fit memory; and when a loaded runner is reloaded for it (fake runners)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from corral.api.options import Options
from corral.config import Settings
from corral.estimate import Estimate
from corral.hardware import GpuInfo, SystemInfo, SystemMemory
from corral.runner.settings import LoadSettings
from corral.scheduler import ContextNeed, Scheduler
from corral.scheduler.context import (
    answer_room,
    default_context,
    fit_context,
    grown_context,
    reclaimable,
    regrow_reason,
    tiered_context,
)
from corral.scheduler.decisions import RunnerState, Snapshot
from tests.test_scheduler import CPU, GIB, FakeFactory, model

GEMMA = model("gemma", context_length=32768)
SMOL = model("smol", context_length=8192)


def gpu(total_gib: float, overhead_gib: float = 0, ident: str = "GPU-0") -> GpuInfo:
    total = int(total_gib * GIB)
    return GpuInfo(
        id=ident,
        index=0,
        name="fake",
        compute="9.0",
        driver="12.4",
        total_bytes=total,
        free_bytes=total,
        overhead_bytes=int(overhead_gib * GIB),
    )


# ---- pure decisions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        ((), 4096),
        ((gpu(16),), 4096),
        ((gpu(22.9),), 4096),
        ((gpu(23),), 32768),
        ((gpu(24), gpu(24, ident="GPU-1")), 262144),  # the total counts
        ((gpu(46.9),), 32768),
        ((gpu(80),), 262144),
        ((gpu(24, overhead_gib=2),), 4096),  # OLLAMA_GPU_OVERHEAD comes off
    ],
)
def test_the_default_context_is_tiered_by_total_gpu_memory(
    gpus: tuple[GpuInfo, ...], expected: int
) -> None:
    assert tiered_context(gpus) == expected
    assert default_context(0, gpus) == expected
    assert default_context(8192, gpus) == 8192  # OLLAMA_CONTEXT_LENGTH wins


def test_answer_room() -> None:
    assert answer_room(-1) == 2048
    assert answer_room(-2) == 2048
    assert answer_room(100) == 100
    assert answer_room(32000) == 4096  # an agent's max_tokens is a ceiling


@pytest.mark.parametrize(
    ("base", "tokens", "limit", "expected"),
    [
        (4096, 1000, 32768, 4096),  # fits the default: unchanged
        (4096, 6000, 32768, 8192),  # 6000 + 2048 for the answer rounds up to 8192
        (4096, 6200, 32768, 16384),
        (4096, 14000, 32768, 16384),
        (4096, 14400, 32768, 32768),
        (4096, 20000, 8192, 8192),  # never past the training length
        (32768, 6000, 32768, 32768),  # a larger default stays
        (4096, 100000, 1 << 20, 131072),
    ],
)
def test_a_long_prompt_grows_the_context_to_a_power_of_two(
    base: int, tokens: int, limit: int, expected: int
) -> None:
    assert grown_context(base, ContextNeed(tokens), limit) == expected


def test_regrow_only_for_more_than_the_runner_has_or_its_load_asked() -> None:
    assert regrow_reason(loaded=4096, wanted=16384, asked=4096, base=4096)
    assert not regrow_reason(loaded=16384, wanted=8192, asked=16384, base=4096)  # it serves
    # its load asked for 16384 and memory gave 8192: asking again changes nothing
    assert not regrow_reason(loaded=8192, wanted=16384, asked=16384, base=4096)
    assert regrow_reason(loaded=8192, wanted=32768, asked=16384, base=4096)
    # a prompt that fits the default uses whatever runner is loaded (a set num_ctx 2048)
    assert not regrow_reason(loaded=2048, wanted=4096, asked=2048, base=4096)


def cpu_system(free_gib: float, total_gib: float = 64) -> SystemInfo:
    memory = SystemMemory(total_bytes=int(total_gib * GIB), free_bytes=int(free_gib * GIB))
    return SystemInfo(gpus=(), cpu=CPU, memory=memory)


def kv_estimator(bytes_per_token: int = 1 << 16) -> Any:
    """Memory that grows with the context: 100 MiB plus ``bytes_per_token`` per cell."""

    def plan(config: LoadSettings, system: SystemInfo) -> Estimate:
        size = (100 << 20) + bytes_per_token * config.num_ctx * max(config.num_parallel, 1)
        if not system.gpus:
            return Estimate.on_cpu(size)
        card = system.gpus[0]  # all on the first GPU when it fits, else all on the CPU
        if size > card.free_bytes:
            return Estimate(layers=1, gpu_layers=0, ram_bytes=size)
        return Estimate(
            layers=1, gpu_layers=1, gpu_ids=(card.id,), tensor_split=(1,), gpu_bytes=(size,)
        )

    return plan


def test_the_context_steps_down_to_what_fits() -> None:
    config = LoadSettings("/m.gguf", num_ctx=32768, num_parallel=0)
    plan = kv_estimator()  # 64 KiB a token: 32768 is 2 GiB, 16384 is 1 GiB
    assert fit_context(config, 4096, cpu_system(4), plan).num_ctx == 32768
    assert fit_context(config, 4096, cpu_system(1.5), plan).num_ctx == 16384
    assert fit_context(config, 4096, cpu_system(0.5), plan).num_ctx == 4096
    assert fit_context(config, 4096, cpu_system(0.1), plan).num_ctx == 4096  # the floor
    # the floor is never stepped under, and a context at the floor is left alone
    assert fit_context(config, 8192, cpu_system(0.5), plan).num_ctx == 8192
    small = LoadSettings("/m.gguf", num_ctx=4096)
    assert fit_context(small, 4096, cpu_system(0), plan) == small


def test_idle_runners_count_as_free_memory_for_the_context() -> None:
    idle = RunnerState(key="/other.gguf", estimate=Estimate.on_cpu(2 * GIB), keep_alive=300)
    busy = RunnerState(
        key="/busy.gguf", estimate=Estimate.on_cpu(1 * GIB), keep_alive=300, refcount=1
    )
    system = cpu_system(free_gib=1, total_gib=8)
    roomy = reclaimable(system, Snapshot(runners=(idle, busy)), "/m.gguf")
    assert roomy.memory.free_bytes == 3 * GIB  # the idle runner's 2 GiB come back
    held = reclaimable(system, Snapshot(runners=(busy,)), "/m.gguf")
    assert held.memory.free_bytes == 1 * GIB


def test_idle_runners_gpu_memory_counts_as_free() -> None:
    card = gpu(24)
    on_gpu = Estimate(
        layers=10, gpu_layers=10, gpu_ids=(card.id,), tensor_split=(10,), gpu_bytes=(4 * GIB,)
    )
    idle = RunnerState(key="/other.gguf", estimate=on_gpu, keep_alive=300)
    system = replace(cpu_system(8), gpus=(replace(card, free_bytes=10 * GIB),))
    roomy = reclaimable(system, Snapshot(runners=(idle,)), "/m.gguf")
    assert roomy.gpus[0].free_bytes == 14 * GIB


# ---- the scheduler ----------------------------------------------------------------------


def scheduler(
    factory: FakeFactory,
    *,
    free_gib: float = 32,
    gpus: tuple[GpuInfo, ...] = (),
    **changes: Any,
) -> Scheduler:
    settings = Settings(num_parallel=1).with_changes(**changes)
    system = cpu_system(free_gib)
    if gpus:
        system = replace(system, gpus=gpus)
    return Scheduler(settings, factory, system=lambda: system, estimator=kv_estimator())


async def loaded_ctx(sched: Scheduler, spec: Any, opts: Options, need: Any = None) -> int:
    async with sched.acquire(spec, opts, None, need=need) as ref:
        return ref.config.num_ctx


async def test_a_cold_load_is_sized_for_the_estimated_prompt() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    try:
        assert await loaded_ctx(sched, GEMMA, Options.merged(), ContextNeed(9000)) == 16384
        # an estimate never reloads a loaded runner, whatever it says
        assert await loaded_ctx(sched, GEMMA, Options.merged(), ContextNeed(20000)) == 16384
        assert factory.calls == 1
        # a small request uses the large runner
        assert await loaded_ctx(sched, GEMMA, Options.merged()) == 16384
        assert factory.calls == 1
    finally:
        await sched.shutdown()


async def test_a_counted_prompt_reloads_a_runner_that_is_too_short() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    try:
        assert await loaded_ctx(sched, GEMMA, Options.merged()) == 4096
        counted = ContextNeed(9000, counted=True)
        async with sched.acquire(GEMMA, Options.merged(), None) as ref:
            assert sched.context_short(ref, Options.merged(), counted)
        assert await loaded_ctx(sched, GEMMA, Options.merged(), counted) == 16384
        assert factory.calls == 2 and factory.runners[0].stops == 1
        # then the same need, or a smaller one, keeps it
        async with sched.acquire(GEMMA, Options.merged(), None, need=counted) as ref:
            assert not sched.context_short(ref, Options.merged(), counted)
        assert factory.calls == 2
    finally:
        await sched.shutdown()


async def test_a_set_num_ctx_is_never_grown() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    opts = Options.merged({"num_ctx": 2048})
    counted = ContextNeed(9000, counted=True)
    try:
        assert await loaded_ctx(sched, GEMMA, opts, counted) == 2048
        async with sched.acquire(GEMMA, opts, None) as ref:
            assert sched.context_short(ref, opts, counted) == ""
    finally:
        await sched.shutdown()


async def test_the_training_length_caps_the_growth() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    counted = ContextNeed(20000, counted=True)
    try:
        assert await loaded_ctx(sched, SMOL, Options.merged(), counted) == 8192
        async with sched.acquire(SMOL, Options.merged(), None) as ref:
            assert sched.context_short(ref, Options.merged(), counted) == ""  # it cuts
    finally:
        await sched.shutdown()


async def test_memory_caps_the_growth_without_reload_ping_pong() -> None:
    factory = FakeFactory()
    sched = scheduler(factory, free_gib=1.5)  # 16384 fits (1.1 GiB), 32768 does not
    counted = ContextNeed(20000, counted=True)
    try:
        assert await loaded_ctx(sched, GEMMA, Options.merged(), counted) == 16384
        async with sched.acquire(GEMMA, Options.merged(), None) as ref:
            assert ref.context_asked == 32768
            assert sched.context_short(ref, Options.merged(), counted) == ""
        assert await loaded_ctx(sched, GEMMA, Options.merged(), counted) == 16384
        assert factory.calls == 1
    finally:
        await sched.shutdown()


async def test_the_tiered_default_follows_the_gpus_and_the_model() -> None:
    factory = FakeFactory()
    sched = scheduler(factory, gpus=(gpu(80),))
    try:
        assert sched.default_context == 262144
        assert await loaded_ctx(sched, GEMMA, Options.merged(num_ctx_default=0)) == 32768
        assert await loaded_ctx(sched, SMOL, Options.merged(num_ctx_default=0)) == 8192
    finally:
        await sched.shutdown()
    configured = scheduler(FakeFactory(), gpus=(gpu(80),), context_length=2048)
    try:
        opts = Options.merged(num_ctx_default=2048)
        assert await loaded_ctx(configured, GEMMA, opts) == 2048
    finally:
        await configured.shutdown()


async def test_a_busy_runner_is_regrown_once_its_requests_end() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    counted = ContextNeed(9000, counted=True)
    try:
        async with sched.acquire(GEMMA, Options.merged(), None):
            waiting = asyncio.create_task(loaded_ctx(sched, GEMMA, Options.merged(), counted))
            await asyncio.sleep(0.01)
            assert not waiting.done() and factory.calls == 1
        assert await asyncio.wait_for(waiting, 2) == 16384
        assert factory.calls == 2
    finally:
        await sched.shutdown()


async def test_a_tiered_default_steps_down_to_what_the_gpu_holds() -> None:
    factory = FakeFactory()
    small_free = replace(gpu(24), free_bytes=int(1.5 * GIB))  # a 24 GiB card, mostly in use
    sched = scheduler(factory, gpus=(small_free,))
    try:
        assert sched.default_context == 32768
        # 32768 cells (2.1 GiB) would spill to the CPU; 16384 (1.1 GiB) stays on the GPU
        assert await loaded_ctx(sched, GEMMA, Options.merged(num_ctx_default=0)) == 16384
        async with sched.acquire(GEMMA, Options.merged(num_ctx_default=0), None) as ref:
            assert ref.context_asked == 32768
    finally:
        await sched.shutdown()


async def test_a_prompt_that_fits_the_default_uses_a_smaller_loaded_runner() -> None:
    factory = FakeFactory()
    sched = scheduler(factory)
    small = ContextNeed(100, counted=True)  # with room for the answer, under 4096
    try:
        assert await loaded_ctx(sched, GEMMA, Options.merged({"num_ctx": 2048})) == 2048
        assert await loaded_ctx(sched, GEMMA, Options.merged(), small) == 2048
        async with sched.acquire(GEMMA, Options.merged(), None) as ref:
            assert sched.context_short(ref, Options.merged(), small) == ""
        assert factory.calls == 1
        # a prompt over the default does reload it
        assert await loaded_ctx(sched, GEMMA, Options.merged(), ContextNeed(5000, counted=True))
        assert factory.calls == 2
    finally:
        await sched.shutdown()
