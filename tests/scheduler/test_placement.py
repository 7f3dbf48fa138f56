"""Placing layers on RPC workers: the arithmetic, the leases, and the scheduler's use of
them (fake runners, fake probes; the real thing is tests/integration/test_rpc.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import estimate
from corral.config import Settings
from corral.errors import InsufficientMemoryError
from corral.estimate import Estimate, ModelLayout
from corral.hardware import SystemInfo, SystemMemory
from corral.rpc.probe import ProbeResult, ProbeState
from corral.runner.settings import LoadSettings
from corral.scheduler import Scheduler, placement
from corral.scheduler.placement import LARGE_VOCAB, WorkerPool, plan_layers, ps_fields
from tests.test_scheduler import CPU, FakeFactory, model, options

MiB = 1 << 20
GiB = 1 << 30


def layout(blocks: int = 30, layer: int = 3 * MiB, vocab: int = 49152) -> ModelLayout:
    return ModelLayout(
        architecture="llama",
        block_count=blocks,
        layer_bytes=(layer,) * blocks,
        output_bytes=28 * MiB,
        token_embd_bytes=28 * MiB,
        other_bytes=0,
        repacked_bytes=0,
        kv_elements_per_cell=(2 * 3 * 64,) * blocks,
        n_embd=576,
        n_head=9,
        n_ff=1536,
        n_vocab=vocab,
        tied_output=True,
    )


SETTINGS = LoadSettings(model_path="/m.gguf", num_ctx=512, num_parallel=1)


def test_two_equal_workers_share_every_layer_and_the_output_stays_here() -> None:
    placed = plan_layers(layout(), SETTINGS, [("a:1#0", 4 * GiB), ("b:1#0", 4 * GiB)])
    assert placed is not None
    assert placed.units == (16, 15)  # 30 layers + the output unit, in proportion
    assert placed.local_units == 0
    assert placed.keep_output  # a 49k vocabulary: logits would cost 192 KiB a token
    assert placed.endpoints == ("a:1", "b:1")
    assert placed.per_endpoint()[0]["layers"] == 16
    assert "16 on a:1, 15 on b:1, 0 here, output here" in placed.describe()


def test_shares_follow_free_memory() -> None:
    placed = plan_layers(layout(), SETTINGS, [("a:1#0", 3 * GiB), ("b:1#0", 1 * GiB)])
    assert placed is not None
    assert placed.units == (24, 7)  # budgets after each compute buffer: a bit over 3:1


def test_a_small_vocabulary_sends_the_output_layer_too() -> None:
    placed = plan_layers(layout(vocab=LARGE_VOCAB - 1), SETTINGS, [("a:1#0", 4 * GiB)])
    assert placed is not None
    assert not placed.keep_output
    assert placed.units == (31,)


def test_what_the_workers_cannot_hold_stays_here_first_layers_first() -> None:
    # room for about ten 3 MiB layers (plus KV) beyond each worker's compute buffer
    small = placement.compute_bytes(layout(), SETTINGS, with_logits=False) + 35 * MiB
    placed = plan_layers(layout(), SETTINGS, [("a:1#0", small), ("b:1#0", small)])
    assert placed is not None
    assert placed.local_units > 0
    assert placed.local_units + placed.remote_units == 31
    assert all(size <= small for size in placed.device_bytes)
    assert placed.local_bytes > 28 * MiB  # the embeddings, the output and the local layers


def test_no_room_anywhere_is_no_placement() -> None:
    assert plan_layers(layout(), SETTINGS, [("a:1#0", 10 * MiB)]) is None
    assert plan_layers(layout(), SETTINGS, []) is None


def ok(endpoint: str, *free: int) -> ProbeResult:
    return ProbeResult(endpoint, ProbeState.OK, version="7.0.0", free_bytes=free, total_bytes=free)


class FakeProbes:
    def __init__(self) -> None:
        self.answers: dict[str, ProbeResult] = {}
        self.asked: list[str] = []

    def __call__(self, endpoint: str) -> ProbeResult:
        self.asked.append(endpoint)
        return self.answers.get(endpoint) or ProbeResult(endpoint, ProbeState.UNREACHABLE)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> FakeProbes:
    monkeypatch.setattr(estimate, "model_layout", lambda path: layout())
    fake = FakeProbes()
    fake.answers = {"w1:1": ok("w1:1", 4 * GiB), "w2:1": ok("w2:1", 4 * GiB)}
    return fake


def pool(probes: FakeProbes) -> WorkerPool:
    return WorkerPool(("w1:1", "w2:1"), probe=probes)


async def test_a_worker_is_leased_to_one_runner_at_a_time(probes: FakeProbes) -> None:
    workers = pool(probes)
    await workers.refresh()
    first = workers.place("/a.gguf", SETTINGS)
    assert first is not None
    config, plan = first
    assert config.rpc_servers == ("w1:1", "w2:1")
    assert config.tensor_split == (16.0, 15.0)
    assert config.num_gpu_layers == 31 and config.rpc_keep_output
    assert plan.ram_bytes < 200 * MiB  # this host keeps the embeddings and the output
    assert workers.leased_to("w1:1") == "/a.gguf"
    await workers.refresh()
    assert probes.asked.count("w1:1") == 1  # a leased worker is not probed
    assert workers.place("/b.gguf", SETTINGS) is None  # nothing left to lease
    workers.release(config.rpc_servers)
    assert workers.place("/b.gguf", SETTINGS) is None  # not probed since: not used blind
    await workers.refresh()
    assert workers.place("/b.gguf", SETTINGS) is not None


async def test_busy_or_unreachable_workers_are_left_out(probes: FakeProbes) -> None:
    probes.answers["w1:1"] = ProbeResult("w1:1", ProbeState.BUSY, "another client")
    workers = pool(probes)
    await workers.refresh()
    placed = workers.place("/a.gguf", SETTINGS)
    assert placed is not None
    assert placed[0].rpc_servers == ("w2:1",)
    assert placed[0].tensor_split == (31.0,)
    fields = ps_fields(workers, placed[0])
    assert fields == {
        "rpc": {
            "workers": [{"endpoint": "w2:1", "layers": 31, "size": pytest.approx(1, abs=1 << 40)}],
            "local_layers": 0,
            "output_local": True,
        }
    }
    assert ps_fields(workers, SETTINGS) == {}


def test_bad_operator_entries_are_dropped() -> None:
    made = WorkerPool.from_settings(("a:1", "bad:port", "b"))
    assert made is not None and made.endpoints == ("a:1", "b:50052")
    assert WorkerPool.from_settings(()) is None


class _Machine:
    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self) -> SystemInfo:
        return SystemInfo(
            gpus=(), cpu=CPU, memory=SystemMemory(total_bytes=self.free, free_bytes=self.free)
        )


def _scheduler(probes: FakeProbes, factory: FakeFactory, *, free: int, **changes: Any) -> Scheduler:
    settings = Settings(num_parallel=1).with_changes(runner_stall_seconds=7.0, **changes)
    return Scheduler(
        settings,
        factory,
        system=_Machine(free),
        estimator=lambda config, system: Estimate.on_cpu(2 * GiB),
        workers=pool(probes),
    )


async def test_a_model_too_big_for_this_host_goes_to_the_workers(probes: FakeProbes) -> None:
    factory = FakeFactory()
    scheduler = _scheduler(probes, factory, free=1 * GiB)
    async with scheduler.acquire(model("big"), options(), None) as entry:
        assert entry.config.rpc_servers == ("w1:1", "w2:1")
        assert entry.config.rpc_stall_seconds == 7.0
        assert entry.config.num_gpu_layers == 31
        assert scheduler.workers is not None
        assert scheduler.workers.leased_to("w2:1") == entry.key
    await scheduler.unload(entry.key)
    assert scheduler.workers.leased_to("w1:1") is None
    await scheduler.shutdown()


async def test_a_model_that_fits_stays_here_unless_told(probes: FakeProbes) -> None:
    factory = FakeFactory()
    scheduler = _scheduler(probes, factory, free=8 * GiB)
    async with scheduler.acquire(model("small"), options(), None) as entry:
        assert entry.config.rpc_servers == ()
    assert probes.asked == []  # no worker is asked when none is needed
    await scheduler.shutdown()
    forced = _scheduler(probes, FakeFactory(), free=8 * GiB, rpc_only=True)
    async with forced.acquire(model("small"), options(), None) as entry:
        assert entry.config.rpc_servers == ("w1:1", "w2:1")
    await forced.shutdown()


async def test_a_dead_runner_gives_its_workers_back_and_the_next_load_replans(
    probes: FakeProbes,
) -> None:
    factory = FakeFactory()
    scheduler = _scheduler(probes, factory, free=1 * GiB)
    spec = model("big")
    async with scheduler.acquire(spec, options(), None):
        pass
    # a worker is lost: the runner dies (exit 75), the worker stops answering
    probes.answers["w1:1"] = ProbeResult("w1:1", ProbeState.UNREACHABLE, "refused")
    factory.runners[0].die("exit status 75")
    for _ in range(50):
        await asyncio.sleep(0)
    async with scheduler.acquire(spec, options(), None) as entry:
        assert entry.config.rpc_servers == ("w2:1",)
        assert entry.config.tensor_split == (31.0,)
    await scheduler.shutdown()


async def test_no_worker_left_is_a_clear_error(probes: FakeProbes) -> None:
    probes.answers = {}
    scheduler = _scheduler(probes, FakeFactory(), free=1 * GiB)
    with pytest.raises(
        InsufficientMemoryError, match=r"RPC workers cannot hold it .*w1:1 unreachable"
    ):
        async with scheduler.acquire(model("big"), options(), None):
            pass
    await scheduler.shutdown()


async def test_a_worker_with_several_devices_gets_a_share_per_device(probes: FakeProbes) -> None:
    # w1 has a big and a tiny device; the tiny one takes nothing but keeps its place
    probes.answers["w1:1"] = ok("w1:1", 4 * GiB, 10 * MiB)
    workers = pool(probes)
    await workers.refresh()
    placed = workers.place("/a.gguf", SETTINGS)
    assert placed is not None
    config, _ = placed
    assert config.rpc_servers == ("w1:1", "w2:1")
    assert len(config.tensor_split) == 3
    assert config.tensor_split[1] == 0.0
    assert sum(config.tensor_split) == config.num_gpu_layers == 31
