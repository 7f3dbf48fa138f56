"""Replicas of a busy model (``CORRAL_MAX_REPLICAS``): routing and scale decisions, then the
scheduler driving fake runners through a burst and its end."""

from __future__ import annotations

import pytest

from corral.config import FOREVER
from corral.scheduler.replicas import Route, Seat, idle_deadline, last_deadline, route
from tests.test_scheduler import (
    GIB,
    A,
    B,
    FakeClock,
    FakeMemory,
    Harness,
    settle,
    wait_until,
)
from tests.test_scheduler import harness as harness  # the fixture

# ---- the pure decisions ------------------------------------------------------------------


def seat(key: str, replica: int, refcount: int, slots: int = 1) -> Seat:
    return Seat(key, replica, refcount, slots)


def test_a_free_slot_wins_least_busy_first() -> None:
    seats = [seat("a", 0, 3, 4), seat("a#1", 1, 1, 4)]
    assert route(seats, cap=2, loading=False, refused=False) == Route(key="a#1")
    tie = [seat("a", 0, 1, 4), seat("a#1", 1, 1, 4)]
    assert route(tie, cap=2, loading=False, refused=False) == Route(key="a")


def test_every_slot_busy_grows_under_the_cap() -> None:
    assert route([seat("a", 0, 1)], cap=2, loading=False, refused=False) == Route(grow=True)


def test_one_runner_cap_keeps_todays_behaviour() -> None:
    # busy, cap 1: queue in the runner, as with no replicas at all
    assert route([seat("a", 0, 5)], cap=1, loading=False, refused=False) == Route(key="a")


def test_a_loading_replica_is_waited_for_not_doubled() -> None:
    assert route([seat("a", 0, 1)], cap=3, loading=True, refused=False) == Route()


def test_cap_reached_or_refused_queues_in_the_least_busy() -> None:
    seats = [seat("a", 0, 4), seat("a#1", 1, 2)]
    assert route(seats, cap=2, loading=False, refused=False) == Route(key="a#1")
    assert route(seats[:1], cap=2, loading=False, refused=True) == Route(key="a")


def test_extras_go_sooner_the_last_keeps_its_keep_alive() -> None:
    assert idle_deadline(1300.0, 1000.0, has_peer=False, idle=30.0) == 1300.0
    assert idle_deadline(1300.0, 1000.0, has_peer=True, idle=30.0) == 1030.0
    assert idle_deadline(1010.0, 1000.0, has_peer=True, idle=30.0) == 1010.0
    assert idle_deadline(None, 1000.0, has_peer=True, idle=30.0) == 1030.0
    assert last_deadline(300.0, 1000.0) == 1300.0
    assert last_deadline(FOREVER, 1000.0) is None


# ---- the scheduler with fake runners -----------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_a_queue_loads_a_second_runner_and_routes_to_it(harness: Harness) -> None:
    scheduler = harness.scheduler(max_replicas=2)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "the first runner")
    second = harness.hold(scheduler, A)  # the one slot is busy: a replica loads for it
    await wait_until(lambda: second.got, "the replica")
    assert first.entry is not None and second.entry is not None
    assert second.entry is not first.entry
    assert (first.entry.replica, second.entry.replica) == (0, 1)
    assert len(harness.factory.runners_for(A)) == 2
    assert second.entry.config.num_ctx == first.entry.config.num_ctx
    # cap reached: a third queues in the least busy runner, no third load
    third = harness.hold(scheduler, A)
    await wait_until(lambda: third.got, "a queued request")
    assert len(harness.factory.runners_for(A)) == 2
    assert [e.refcount for e in await scheduler.loaded_models()] in ([2, 1], [1, 2])
    await second.release()
    # a free slot on the replica takes the next request
    fourth = harness.hold(scheduler, A)
    await wait_until(lambda: fourth.got, "a free replica slot")
    assert fourth.entry is second.entry


async def test_a_burst_during_the_first_load_spreads_over_a_replica(harness: Harness) -> None:
    scheduler = harness.scheduler(max_replicas=2)
    gate = harness.factory.hang()
    holders = [harness.hold(scheduler, A) for _ in range(3)]
    await wait_until(lambda: harness.factory.calls == 1, "the first load")
    gate.set()  # three requests waited for one runner of one slot: one takes it
    await wait_until(lambda: all(h.got for h in holders), "all served")
    assert len(harness.factory.runners_for(A)) == 2
    replicas = sorted(h.entry.replica for h in holders if h.entry is not None)
    assert replicas in ([0, 0, 1], [0, 1, 1])


async def test_default_cap_one_never_loads_a_replica(harness: Harness) -> None:
    scheduler = harness.scheduler()
    holders = [harness.hold(scheduler, A) for _ in range(4)]
    await wait_until(lambda: all(h.got for h in holders), "all on one runner")
    assert len(harness.factory.runners_for(A)) == 1
    assert {id(h.entry) for h in holders} == {id(holders[0].entry)}


async def test_a_waiting_request_takes_a_freed_slot_before_a_loading_replica(
    harness: Harness,
) -> None:
    scheduler = harness.scheduler(max_replicas=2)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "the first runner")
    gate = harness.factory.hang()  # the replica's load hangs
    second = harness.hold(scheduler, A)
    await wait_until(lambda: harness.factory.calls == 2, "the replica load")
    await settle()
    assert not second.got
    await first.release()
    await wait_until(lambda: second.got, "the freed slot")
    assert second.entry is first.entry
    gate.set()
    await wait_until(lambda: len(scheduler.loaded_now()) == 2, "the replica loaded")


async def test_no_replica_without_memory_and_no_eviction_for_it(harness: Harness) -> None:
    sizes = {A.model_path: 3 * GIB, B.model_path: 3 * GIB}
    memory = FakeMemory(harness.factory, total=8 * GIB, sizes=sizes)
    scheduler = harness.scheduler(memory=memory, sizes=sizes, max_replicas=2)
    b = harness.hold(scheduler, B)
    await wait_until(lambda: b.got, "b")
    await b.release()  # b idle: evictable for a load, not for a replica
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a")
    second = harness.hold(scheduler, A)
    await wait_until(lambda: second.got, "queued on a's runner")
    assert second.entry is first.entry
    assert len(harness.factory.runners_for(A)) == 1
    assert len(harness.factory.runners_for(B)) == 1 and harness.factory.runners[0].alive


async def test_the_max_loaded_count_includes_replicas(harness: Harness) -> None:
    scheduler = harness.scheduler(max_loaded=1, max_replicas=2)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a")
    second = harness.hold(scheduler, A)
    await wait_until(lambda: second.got, "queued on a's runner")
    assert second.entry is first.entry and harness.factory.calls == 1


async def test_replicas_go_one_by_one_the_last_keeps_keep_alive(
    harness: Harness, clock: FakeClock
) -> None:
    scheduler = harness.scheduler(clock=clock, max_replicas=3, keep_alive_seconds=300.0)
    scheduler.replica_idle = 0.01
    holders = [harness.hold(scheduler, A)]
    await wait_until(lambda: holders[0].got, "runner 0")
    holders.append(harness.hold(scheduler, A))
    await wait_until(lambda: len(scheduler.loaded_now()) == 2, "2 runners")
    holders.append(harness.hold(scheduler, A))
    await wait_until(lambda: len(scheduler.loaded_now()) == 3, "3 runners")
    await wait_until(lambda: all(h.got for h in holders), "all served")
    for holder in holders:
        await holder.release()
    idle_at = clock.seconds
    clock.advance(1.0)  # past the extras' idle time (a real 0.01 s timer), not the keep-alive
    await wait_until(lambda: len(scheduler.loaded_now()) == 1, "extras unloaded")
    await settle()
    (last,) = scheduler.loaded_now()
    assert last.runner.alive and last.expires_at == pytest.approx(idle_at + 300.0)
    assert scheduler.stats.unloads == 2


async def test_stop_unloads_every_replica(harness: Harness) -> None:
    scheduler = harness.scheduler(max_replicas=2)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a")
    second = harness.hold(scheduler, A)
    await wait_until(lambda: second.got, "replica")
    await second.release()
    assert await scheduler.unload(A.model_path)
    await wait_until(lambda: len(scheduler.loaded_now()) == 1, "the idle replica gone")
    await first.release()
    await wait_until(lambda: not scheduler.loaded_now(), "every runner gone")
    assert all(not r.alive for r in harness.factory.runners)


async def test_a_request_keep_alive_zero_reaches_every_replica(harness: Harness) -> None:
    scheduler = harness.scheduler(max_replicas=2)
    first = harness.hold(scheduler, A)
    await wait_until(lambda: first.got, "a")
    second = harness.hold(scheduler, A)
    await wait_until(lambda: second.got, "replica")
    await second.release()
    third = harness.hold(scheduler, A, keep_alive=0)
    await wait_until(lambda: third.got, "keep_alive 0")
    await first.release()
    await third.release()
    await wait_until(lambda: not scheduler.loaded_now(), "every runner gone")
