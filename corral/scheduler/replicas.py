"""Replicas of a busy model: pure decisions (``CORRAL_MAX_REPLICAS``).

A model may have up to ``max_replicas`` runners, loaded with the same settings. Each request
goes to one of them (``route``):

- a runner with a free slot first: the least busy one (fewest requests for its slots; ties:
  the lowest replica index). Runners expose no cheap view of their cached prefixes, so the
  longest cached prefix does not take part;
- every slot busy, fewer runners than the cap, none loading, and the last replica load not
  refused: load another (``grow``) and wait. A waiting request takes the first slot that frees,
  on a loaded runner or the new one, whichever comes first;
- every slot busy and no other runner to come (the cap reached, or memory refused the
  last one): queue in the least busy runner, as with one runner.

With a cap of 1 a model has one runner and every request goes to it, as before.

A replica loads only where it fits beside everything loaded (``decisions.decide_fit`` says
``LOAD``): it never evicts another model's runner, idle or busy, and never loads partly.

An idle runner with a peer (another runner of its model) goes after its keep-alive or
``REPLICA_IDLE`` seconds, whichever is shorter (``idle_deadline``); the last runner of a model
keeps the model's keep-alive, counted from when it went idle (``last_deadline``). So replicas
go one by one as traffic drops, and the model stays loaded as with one runner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.config import FOREVER

__all__ = [
    "REPLICA_IDLE",
    "Route",
    "Seat",
    "idle_deadline",
    "last_deadline",
    "replica_key",
    "route",
]

#: most seconds an idle runner stays while another runner of its model is loaded
REPLICA_IDLE = 30.0


@dataclass(frozen=True, slots=True)
class Seat:
    """One runner of a model as routing sees it."""

    key: str
    replica: int  # 0, 1, ...: its index among the model's runners
    refcount: int  # requests holding it (running, or queued in its slots)
    slots: int  # its parallel slots

    @property
    def free(self) -> bool:
        return self.refcount < max(self.slots, 1)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes: ``key`` (a runner), else wait (``grow``: load another first)."""

    key: str | None = None
    grow: bool = False


def route(seats: Sequence[Seat], *, cap: int, loading: bool, refused: bool) -> Route:
    """Which runner of a model takes a request (see the module's text).

    ``seats``: the model's runners taking requests (at least one); ``cap``: the most runners
    it may have; ``loading``: another runner of it is loading; ``refused``: the last replica
    load found no room (until memory changes).
    """
    free = [s for s in seats if s.free]
    if free:
        return Route(key=min(free, key=lambda s: (s.refcount / max(s.slots, 1), s.replica)).key)
    if loading:
        return Route()  # wait for it, or for a slot
    if len(seats) < cap and not refused:
        return Route(grow=True)
    least = min(seats, key=lambda s: (s.refcount - s.slots, s.replica))
    return Route(key=least.key)


def replica_key(path: str, replica: int) -> str:
    """The scheduler's key of a model's runner: its file for the first, ``path#N`` after."""
    return path if replica == 0 else f"{path}#{replica}"


def idle_deadline(
    expires_at: float | None, now: float, has_peer: bool, idle: float
) -> float | None:
    """When an idle runner goes: its keep-alive's deadline (``expires_at``, None: never), or
    sooner (``idle`` seconds) while another runner of its model is loaded."""
    if not has_peer:
        return expires_at
    soon = now + idle
    return soon if expires_at is None else min(expires_at, soon)


def last_deadline(keep_alive: float, idle_since: float) -> float | None:
    """The keep-alive deadline of a model's last runner, idle since ``idle_since``."""
    if keep_alive == FOREVER:
        return None
    return idle_since + keep_alive
