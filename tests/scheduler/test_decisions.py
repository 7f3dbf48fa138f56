"""The scheduler's decisions, one step at a time: pure functions over a snapshot, the time
passed in, no event loop and no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.config import FOREVER
from corral.estimate import Estimate
from corral.hardware import CpuInfo, GpuInfo, SystemInfo, SystemMemory
from corral.runner.settings import LoadSettings
from corral.scheduler.decisions import (
    Fit,
    Idle,
    Outcome,
    RunnerState,
    Snapshot,
    available,
    choose_parallel,
    decide_fit,
    describe,
    expiry_reason,
    free_text,
    held,
    keep_alive_for,
    pick_drain,
    pick_victim,
    recovered,
    recovery_targets,
    reload_reason,
    unloads_when_idle,
    wall_expiry,
    when_idle,
)

GIB = 2**30
MIB = 2**20
CPU = CpuInfo("fake", 2, 2, 2.0, ("avx2",))
NOW = 1000.0  # monotonic seconds, as a clock would pass them in


def machine(free_gib: float, total_gib: float = 16, *gpus_free_gib: float) -> SystemInfo:
    gpus = tuple(
        GpuInfo(
            id=f"GPU-{i}",
            index=i,
            name="fake",
            compute="8.6",
            driver="12.4",
            total_bytes=8 * GIB,
            free_bytes=int(free * GIB),
            minimum_bytes=0,
        )
        for i, free in enumerate(gpus_free_gib)
    )
    memory = SystemMemory(total_bytes=int(total_gib * GIB), free_bytes=int(free_gib * GIB))
    return SystemInfo(gpus=gpus, cpu=CPU, memory=memory)


def on_cpu(gib: float) -> Estimate:
    return Estimate.on_cpu(int(gib * GIB))


def on_gpu(layers: int, gpu_layers: int, gpu: str = "GPU-0", ram_gib: float = 0.5) -> Estimate:
    """``layers`` of 100 MiB each, ``gpu_layers`` of them on ``gpu``."""
    return Estimate(
        layers=layers,
        gpu_layers=gpu_layers,
        gpu_ids=(gpu,) if gpu_layers else (),
        tensor_split=(gpu_layers,) if gpu_layers else (),
        gpu_bytes=(gpu_layers * 100 * MIB,) if gpu_layers else (),
        ram_bytes=int(ram_gib * GIB),
    )


def runner(key: str, **fields: Any) -> RunnerState:
    values: dict[str, Any] = {"estimate": on_cpu(1), "keep_alive": 300.0}
    values.update(fields)
    return RunnerState(key=key, **values)


# ---- keep-alive --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "current", "expected"),
    [
        (None, None, 300.0),  # a new runner, unset: the default from settings
        (None, 5.0, 5.0),  # unset keeps the runner's
        (10.0, 5.0, 10.0),  # a request's value replaces it
        (0.0, 5.0, 0.0),  # 0 too (unload when idle)
        (FOREVER, 5.0, FOREVER),
        (5.0, FOREVER, 5.0),
    ],
)
def test_keep_alive_for(requested: float | None, current: float | None, expected: float) -> None:
    assert keep_alive_for(requested, current, default=300.0) == expected


def test_when_idle_zero_unloads_at_once() -> None:
    assert when_idle(0.0, NOW) == Idle(unload="keep_alive 0")
    assert when_idle(-1.0, NOW) == Idle(unload="keep_alive 0")


@pytest.mark.parametrize(
    ("keep_alive", "unloads"),
    [(None, False), (0.0, True), (-1.0, True), (30.0, False), (FOREVER, False)],
)
def test_which_keep_alive_unloads_when_idle(keep_alive: float | None, unloads: bool) -> None:
    assert unloads_when_idle(keep_alive) is unloads
    if keep_alive is not None:  # the same rule as when the last request ends
        assert bool(when_idle(keep_alive, NOW).unload) is unloads


def test_when_idle_keeps_until_the_keep_alive_after_now() -> None:
    assert when_idle(30.0, NOW) == Idle(expires_at=NOW + 30.0)


def test_when_idle_forever_never_expires() -> None:
    assert when_idle(FOREVER, NOW) == Idle()


@pytest.mark.parametrize("keep_alive", [0.0, 30.0, FOREVER])
def test_when_idle_a_runner_marked_to_go_goes_whatever_its_keep_alive(keep_alive: float) -> None:
    assert when_idle(keep_alive, NOW, "requested") == Idle(unload="requested")


def test_expiry_reason_only_once_the_deadline_has_passed() -> None:
    assert expiry_reason(30.0, NOW + 30.0, NOW + 29.9) == ""  # fired early: stays
    assert expiry_reason(30.0, NOW + 30.0, NOW + 30.0) == "expired"
    assert expiry_reason(FOREVER, None, NOW + 1e9) == ""
    assert expiry_reason(0.0, NOW, NOW) == "keep_alive 0"
    assert expiry_reason(30.0, NOW + 30.0, NOW, "options changed") == "options changed"


def test_wall_expiry() -> None:
    wall = datetime(2025, 1, 1, tzinfo=UTC)
    assert wall_expiry(30.0, None, NOW, wall) == wall + timedelta(seconds=30)  # in use
    assert wall_expiry(30.0, NOW + 10.0, NOW, wall) == wall + timedelta(seconds=10)
    assert wall_expiry(30.0, NOW - 5.0, NOW, wall) == wall  # overdue: now, not the past
    assert wall_expiry(FOREVER, None, NOW, wall).year > 2200


# ---- reuse or reload ---------------------------------------------------------------------

LOADED = LoadSettings(model_path="/m/a.gguf", num_ctx=4096, num_parallel=2, num_gpu=10)


@pytest.mark.parametrize(
    ("changes", "given", "reason"),
    [
        ({}, {"num_ctx", "num_gpu", "num_parallel", "num_batch"}, ""),
        ({"num_ctx": 8192}, set(), ""),  # unset: any context will do
        ({"num_ctx": 2048}, {"num_ctx"}, ""),  # smaller: no reload to shrink it
        ({"num_ctx": 8192}, {"num_ctx"}, "options changed: num_ctx changed from 4096 to 8192"),
        ({"num_gpu": -1}, {"num_gpu"}, ""),  # as many as fit: any runner
        ({"num_gpu": 0}, {"num_gpu"}, "options changed: num_gpu changed from 10 to 0"),
        ({"num_parallel": 0}, {"num_parallel"}, ""),  # automatic: any slot count
        (
            {"num_parallel": 4},
            {"num_parallel"},
            "options changed: num_parallel changed from 2 to 4",
        ),
        ({"num_batch": 256}, set(), ""),
        ({"num_batch": 256}, {"num_batch"}, "options changed: num_batch changed from 512 to 256"),
        (
            {"num_batch": 256, "use_mmap": False},
            {"num_batch", "use_mmap"},
            "options changed: num_batch changed from 512 to 256,"
            " use_mmap changed from True to False",
        ),
        ({"model_path": "/m/b.gguf"}, set(), "the model file changed"),
        ({"adapters": ("/m/lora",)}, set(), "adapters changed from [] to ['/m/lora']"),
        ({"embedding": True}, set(), "embedding mode changed"),
    ],
)
def test_reload_reason(changes: dict[str, Any], given: set[str], reason: str) -> None:
    wanted = LoadSettings(**{**_fields(LOADED), **changes})
    assert reload_reason(LOADED, wanted, frozenset(given)) == reason


def _fields(config: LoadSettings) -> dict[str, Any]:
    return {name: getattr(config, name) for name in LoadSettings.__dataclass_fields__}


# ---- num_parallel ------------------------------------------------------------------------


def _slot_sized(config: LoadSettings, system: SystemInfo) -> Estimate:
    """2 GiB of weights and 0.5 GiB per slot: 4 slots take 4 GiB."""
    return on_cpu(2 + 0.5 * config.num_parallel)


@pytest.mark.parametrize(
    ("free_gib", "parallel"),
    [
        (5.0, 4),  # 4 GiB fit in 4/5 of 5 GiB
        (4.9, 1),  # not with a fifth to spare
        (1.0, 1),
    ],
)
def test_choose_parallel_automatic(free_gib: float, parallel: int) -> None:
    config = LoadSettings(model_path="/m/a.gguf", num_parallel=0)
    assert choose_parallel(config, machine(free_gib), _slot_sized).num_parallel == parallel


def test_choose_parallel_keeps_a_set_value() -> None:
    config = LoadSettings(model_path="/m/a.gguf", num_parallel=3)
    assert choose_parallel(config, machine(1.0), _slot_sized) is config


def test_choose_parallel_on_a_gpu_wants_every_layer_there() -> None:
    def plan(config: LoadSettings, system: SystemInfo) -> Estimate:
        # 4 slots leave room for only 8 of 10 layers on the GPU
        return on_gpu(10, 8 if config.num_parallel == 4 else 10)

    config = LoadSettings(model_path="/m/a.gguf", num_parallel=0)
    assert choose_parallel(config, machine(32, 64, 4), plan).num_parallel == 1


# ---- memory -------------------------------------------------------------------------------


def test_held_is_what_other_loads_hold() -> None:
    snapshot = Snapshot(
        starting={"/m/a": on_cpu(1), "/m/b": on_cpu(2)},
        claims={"/m/a": on_cpu(3), "/m/c": on_cpu(4)},
    )
    assert held(snapshot, "/m/a") == [on_cpu(2), on_cpu(4)]
    assert len(held(snapshot, "/m/x")) == 4


def test_available_takes_promised_memory_off_the_total() -> None:
    snapshot = Snapshot(
        runners=(
            runner("/m/a", estimate=on_cpu(4)),
            runner("/m/gone", estimate=on_cpu(8), unloading=True),  # no longer promised
        ),
        starting={"/m/b": on_cpu(2)},
        claims={"/m/self": on_cpu(5)},  # the load asking: not held against itself
    )
    # the OS says 12 GiB free (the runners have not touched their memory yet): 16 - 6 = 10
    assert available(machine(12, 16), snapshot, "/m/self").memory.free_bytes == 10 * GIB
    # the OS figure when it is smaller
    assert available(machine(3, 16), snapshot, "/m/self").memory.free_bytes == 3 * GIB
    # never below zero
    crowded = Snapshot(runners=(runner("/m/a", estimate=on_cpu(20)),))
    assert available(machine(3, 16), crowded, "/m/x").memory.free_bytes == 0


def test_available_gpu_memory_less_only_loads_still_starting() -> None:
    snapshot = Snapshot(
        runners=(runner("/m/a", estimate=on_gpu(10, 10)),),  # already counted by the driver
        starting={"/m/b": on_gpu(10, 5)},
        claims={"/m/c": on_gpu(10, 20, gpu="GPU-1")},
    )
    system = available(machine(32, 64, 4, 1), snapshot, "/m/self")
    # GPU-1 has 1 GiB free, less the 2000 MiB a claim holds: none, not less than none
    assert [g.free_bytes for g in system.gpus] == [4 * GIB - 500 * MIB, 0]


def test_gpu_recovery() -> None:
    victim = on_gpu(10, 8)  # 800 MiB on GPU-0
    before = machine(8, 16, 1)
    targets = recovery_targets(victim, before)
    assert targets == {"GPU-0": GIB + 600 * MIB}
    assert not recovered(targets, before)
    assert recovered(targets, machine(8, 16, (1024 + 600) / 1024))
    assert recovery_targets(on_cpu(4), before) == {}
    assert recovered({}, before)


# ---- eviction ----------------------------------------------------------------------------


def test_pick_victim_takes_only_idle_runners() -> None:
    busy = [
        runner("/m/used", refcount=1),
        runner("/m/reserved", reserved=1),  # requests waited for its load: not idle
        runner("/m/unloading", unloading=True),
        runner("/m/reloading", reloading=True),
    ]
    assert pick_victim(busy) is None
    idle = runner("/m/idle", expires_at=NOW + 100)
    assert pick_victim([*busy, idle]) == idle
    assert pick_victim([]) is None


def test_pick_victim_soonest_expiry_first_forever_last() -> None:
    forever = runner("/m/forever", keep_alive=FOREVER, expires_at=None)
    later = runner("/m/later", keep_alive=100.0, expires_at=NOW + 100)
    soon = runner("/m/soon", keep_alive=10.0, expires_at=NOW + 10)
    assert pick_victim([forever, later, soon]) == soon
    assert pick_victim([forever, later]) == later
    assert pick_victim([forever]) == forever


def test_pick_victim_ties_go_to_the_shorter_keep_alive_then_the_path() -> None:
    a = runner("/m/a", keep_alive=FOREVER)
    b = runner("/m/b", keep_alive=FOREVER)
    assert pick_victim([b, a]) == a
    short = runner("/m/z", keep_alive=50.0, expires_at=NOW + 10)
    long = runner("/m/y", keep_alive=500.0, expires_at=NOW + 10)
    assert pick_victim([long, short]) == short


def test_pick_drain_one_at_a_time_shortest_keep_alive_first() -> None:
    a = runner("/m/a", refcount=1, keep_alive=300.0)
    b = runner("/m/b", refcount=2, keep_alive=10.0)
    assert pick_drain([a, b]) == b
    assert pick_drain([a, runner("/m/b", refcount=1, draining=True)]) is None
    assert pick_drain([runner("/m/a", unloading=True)]) is None
    assert pick_drain([]) is None


# ---- the fit decision --------------------------------------------------------------------


def test_fit_loads_when_it_fits() -> None:
    snapshot = Snapshot(runners=(runner("/m/a", refcount=1),), max_loaded=2)
    assert decide_fit(snapshot, "/m/b", on_cpu(4), machine(8), -1) == Fit(Outcome.LOAD)


def test_fit_evicts_the_idle_runner_for_the_count() -> None:
    idle = runner("/m/a")
    fit = decide_fit(Snapshot(runners=(idle,), max_loaded=1), "/m/b", on_cpu(1), machine(8), -1)
    assert fit == Fit(Outcome.EVICT, victim=idle, why="max loaded models 1")


def test_fit_evicts_the_idle_runner_for_memory() -> None:
    idle = runner("/m/a")
    fit = decide_fit(Snapshot(runners=(idle,)), "/m/b", on_cpu(6), machine(4), -1)
    assert fit.outcome is Outcome.EVICT
    assert fit.victim == idle
    assert fit.why == "needs 6.0 GiB system memory; free 4.0 GiB system memory"


def test_fit_other_loads_count_towards_the_limit() -> None:
    snapshot = Snapshot(starting={"/m/a": on_cpu(1)}, max_loaded=1)
    assert decide_fit(snapshot, "/m/b", on_cpu(1), machine(8), -1) == Fit(Outcome.WAIT)


def test_fit_waits_for_a_busy_runner_and_drains_it() -> None:
    busy = runner("/m/a", refcount=1)
    fit = decide_fit(Snapshot(runners=(busy,), max_loaded=1), "/m/b", on_cpu(1), machine(8), -1)
    assert fit == Fit(Outcome.WAIT, drain=busy)
    draining = runner("/m/a", refcount=1, draining=True)
    snapshot = Snapshot(runners=(draining,), max_loaded=1)
    assert decide_fit(snapshot, "/m/b", on_cpu(1), machine(8), -1) == Fit(Outcome.WAIT)


def test_fit_alone_loads_partly_when_the_gpu_is_too_small() -> None:
    plan = on_gpu(30, 10)  # 10 of 30 layers fit the GPU; the rest in system memory
    system = machine(8, 16, 1)
    assert decide_fit(Snapshot(), "/m/a", plan, system, -1) == Fit(Outcome.PARTIAL)
    # with another runner loaded, that one goes first
    idle = runner("/m/b", estimate=on_gpu(5, 5))
    fit = decide_fit(Snapshot(runners=(idle,)), "/m/a", plan, system, -1)
    assert (fit.outcome, fit.victim) == (Outcome.EVICT, idle)


def test_fit_num_gpu_zero_fits_on_the_cpu() -> None:
    plan = on_gpu(30, 0, ram_gib=3)
    assert decide_fit(Snapshot(), "/m/a", plan, machine(8, 16, 1), 0) == Fit(Outcome.LOAD)


def test_fit_fails_when_system_memory_can_never_hold_it() -> None:
    fit = decide_fit(Snapshot(), "/m/a", on_cpu(6), machine(4, 4), -1)
    assert fit.outcome is Outcome.FAIL
    assert fit.why == "model requires more system memory (6.0 GiB) than is available (4.0 GiB)"


def test_fit_does_not_fail_while_others_may_still_give_memory_back() -> None:
    unloading = runner("/m/a", unloading=True)
    fit = decide_fit(Snapshot(runners=(unloading,)), "/m/b", on_cpu(6), machine(4), -1)
    assert fit == Fit(Outcome.WAIT)


# ---- log text ----------------------------------------------------------------------------


def test_describe_and_free_text() -> None:
    assert describe(on_cpu(4)) == "4.0 GiB system memory"
    assert describe(on_gpu(10, 8)) == (
        "8/10 layers on GPU, 0.5 GiB system memory, GPU-0 0.8 GiB (8 layers)"
    )
    assert free_text(machine(4, 16, 2)) == "4.0 GiB system memory, GPU-0 2.0 GiB usable"
