"""The scheduler's records: the model a request wants, each loaded runner, the counters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.estimate import Estimate
from corral.runner.settings import LoadSettings
from corral.scheduler.clock import Clock, SystemClock
from corral.scheduler.decisions import RunnerState, wall_expiry
from corral.scheduler.protocol import RunnerLike
from corral.scheduler.replicas import replica_key

__all__ = ["LoadedModel", "ModelSpec", "SchedulerStats"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """The model a request wants, as the server resolved it from the store."""

    name: str  # display name, e.g. "smollm2:135m"
    model: str  # full name
    digest: str  # manifest digest (hex)
    model_path: str
    size_bytes: int
    context_length: int = 0
    details: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    adapter_paths: tuple[str, ...] = ()  # LoRA blobs the runner applies over model_path
    projector_path: str | None = None  # a vision model's projector blob (clip GGUF)
    draft_path: str | None = None  # a draft model blob (speculative decoding)


@dataclass(slots=True)
class SchedulerStats:
    """Counters since start, for ``/metrics``."""

    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    evictions: int = 0


@dataclass(slots=True)
class LoadedModel:
    """One loaded runner and who uses it (the scheduler's ``ref`` to handlers)."""

    spec: ModelSpec
    runner: RunnerLike
    config: LoadSettings
    loaded_at: float  # wall-clock seconds since the epoch
    keep_alive: float  # seconds after its last request ends (see decisions.keep_alive_for)
    refcount: int = 0
    expires_at: float | None = None  # monotonic seconds; None while in use or forever
    timer: asyncio.TimerHandle | None = None
    unloading: bool = False
    draining: bool = False  # finishing its requests so another model can take its place
    reserved: int = 0  # requests that waited for this load and have not taken it yet
    load_duration: float = 0.0
    estimate: Estimate = field(default_factory=lambda: Estimate.on_cpu(0))
    # why it goes once its last request ends (a stop request, a reload for other options);
    # "" while its keep-alive decides (see decisions.when_idle)
    unload_when_idle: str = ""
    died: str = ""  # how its process ended, when it ended by itself
    #: the context its load asked for before memory cut it down (see scheduler.context):
    #: a prompt needing no more than this does not reload it
    context_asked: int = 0
    stopped_by_us: bool = False  # the process was alive when we asked it to stop
    watcher: asyncio.Task[None] | None = None  # awaits the process's end (see Scheduler._watch)
    replica: int = 0  # its index among the runners of its model (scheduler.replicas)
    idle_since: float | None = None  # monotonic seconds its last request ended
    clock: Clock = field(default_factory=SystemClock, repr=False, compare=False)

    @property
    def waiting_for_slot(self) -> int:
        """Requests holding this runner beyond its parallel slots: they wait in its queue."""
        return max(self.refcount - self.config.num_parallel, 0)

    @property
    def size_bytes(self) -> int:
        """Estimated memory of the runner with its context, GPUs and system together."""
        return self.estimate.total_bytes

    @property
    def size_vram(self) -> int:
        return self.estimate.vram_bytes

    @property
    def key(self) -> str:
        """The scheduler's key: the model file, with ``#N`` for replica N > 0."""
        return replica_key(self.spec.model_path, self.replica)

    def expires_at_wall(self) -> datetime:
        return wall_expiry(
            self.keep_alive, self.expires_at, self.clock.monotonic(), self.clock.now()
        )

    def state(self, *, reloading: bool = False) -> RunnerState:
        """This runner as the decisions see it."""
        return RunnerState(
            key=self.key,
            estimate=self.estimate,
            keep_alive=self.keep_alive,
            refcount=self.refcount,
            reserved=self.reserved,
            expires_at=self.expires_at,
            unloading=self.unloading,
            draining=self.draining,
            reloading=reloading,
        )
