"""The scheduler: every loaded runner, who uses it, and when it goes away.

Handlers call ``async with scheduler.acquire(model, options, keep_alive) as ref`` and talk to
``ref.runner``. Behind that:
- a bounded count of pending requests (``OLLAMA_MAX_QUEUE``): one more gets ``ServerBusyError``;
- reuse of a loaded runner whose load-time options fit the request, else a new load (one load
  per model at a time, shared by everyone waiting for it; a cancelled requester does not
  cancel the load for the others). Only options the request (or the model's Modelfile) set
  are compared: an unset ``num_ctx``, ``num_batch``, ``num_parallel``, ... and ``num_gpu: -1``
  match any loaded runner, and a smaller ``num_ctx`` than loaded is fine. The automatic
  ``num_parallel`` (4 where memory allows, else 1) is decided once, when loading, so two
  models taking turns with modest free memory do not reload each other's runners;
- a reference count per runner; when it drops to zero the keep-alive timer starts (``0``
  unloads at once, ``FOREVER`` never), and a request overwrites the runner's keep-alive;
- at most ``max_loaded`` runners: the idle one expiring soonest is evicted first; if every one
  is busy the load waits until one is released;
- memory: before each load the machine is asked again (``system``: free system memory and
  each GPU's free memory) and the estimator places the model's layers; a model that does not
  fit whole (every layer on a GPU where there are GPUs, its system memory free) evicts others
  first, and after evicting one that had GPU memory the load waits (up to 5 s) for the GPU
  to report that memory free again. With nothing left to evict it loads as well as it can
  (part of the layers on the CPU), or fails with how much was needed and how much is free;
- a runner that dies is dropped at once (a task per runner awaits its process), its exit
  status or signal logged, and loaded again on the next request;
- every load, unload and eviction is logged in one line with the model, the memory it needs
  and what is free, and its cause (first use, which option changed, expiry, a death, ...).

The factory that starts runners (``runner_factory``), the machine (``system``) and the
estimator are injected, so tests can use fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from corral import estimate
from corral.api.options import Options
from corral.config import FOREVER, Settings
from corral.errors import (
    CorralError,
    InsufficientMemoryError,
    RequestCanceledError,
    ServerBusyError,
)
from corral.estimate import Estimate, LoadRequest
from corral.hardware import SystemInfo, cpu_info, system_memory
from corral.runner.client import RunnerConfig

__all__ = ["LoadedModel", "ModelSpec", "RunnerLike", "Scheduler", "SchedulerStats"]

logger = logging.getLogger(__name__)


class RunnerLike(Protocol):
    """What the scheduler needs of a runner (``RunnerClient`` or a test fake)."""

    config: RunnerConfig

    @property
    def alive(self) -> bool: ...

    @property
    def pid(self) -> int: ...

    async def stop(self, grace: float = 5.0) -> None: ...

    async def exited(self) -> str:
        """Return once the process has ended, saying how (``exit status 1``, ``killed by
        signal 9 (SIGKILL)``)."""
        ...


RunnerFactory = Callable[[RunnerConfig], Awaitable[RunnerLike]]


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


@dataclass(slots=True)
class SchedulerStats:
    """Counters since start, for ``/metrics``."""

    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    evictions: int = 0


@dataclass(slots=True)
class LoadedModel:
    spec: ModelSpec
    runner: RunnerLike
    config: RunnerConfig
    loaded_at: float
    keep_alive: float
    refcount: int = 0
    expires_at: float | None = None  # monotonic seconds; None while in use or forever
    timer: asyncio.TimerHandle | None = None
    unloading: bool = False
    draining: bool = False  # finishing its requests so another model can take its place
    reserved: int = 0  # requests that waited for this load and have not taken it yet
    load_duration: float = 0.0
    estimate: Estimate = field(default_factory=lambda: Estimate.on_cpu(0))
    stale: str = ""  # why it must be replaced once its requests end (an option changed)
    died: str = ""  # how its process ended, when it ended by itself
    stopped_by_us: bool = False  # the process was alive when we asked it to stop
    watcher: asyncio.Task[None] | None = None  # awaits the process's end (see _watch)

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
        return self.spec.model_path

    def expires_at_wall(self) -> datetime:
        if self.keep_alive == FOREVER:
            return datetime.now(UTC) + timedelta(days=365 * 292)
        if self.expires_at is None:
            return datetime.now(UTC) + timedelta(seconds=self.keep_alive)
        return datetime.now(UTC) + timedelta(seconds=max(self.expires_at - time.monotonic(), 0))


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        runner_factory: RunnerFactory,
        *,
        max_loaded: int | None = None,
        system: Callable[[], SystemInfo] | None = None,
        estimator: Callable[[RunnerConfig, SystemInfo], Estimate] | None = None,
    ) -> None:
        self.settings = settings
        self._factory = runner_factory
        self._system = system or _CpuOnly()
        self._estimate = estimator or self._estimate_runner
        self._last_system = self._system()
        gpus = len(self._last_system.gpus)
        self._max_loaded = max_loaded or settings.max_loaded_models or 3 * max(gpus, 1)
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        # loads past _make_room, not yet in _loaded, with the memory they were given
        self._reserved: dict[str, Estimate] = {}
        # loads that evicted a runner and have yet to take its place: the freed room is
        # theirs, not that of a load that happens to look first
        self._claims: dict[str, Estimate] = {}
        self._pending = 0
        self._load_waiters: dict[str, int] = {}
        # why each model was last unloaded, so that its next load can say why it happens
        self._unloaded_because: dict[str, str] = {}
        self.stats = SchedulerStats()
        self._changed = asyncio.Condition()
        self._closed = False

    # ---- public ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(
        self, spec: ModelSpec, options: Options, keep_alive: float | None
    ) -> AsyncIterator[LoadedModel]:
        """Hold a runner for ``spec`` for the duration of the ``async with`` block."""
        config = self.runner_config(spec, options)
        entry = await self._get(spec, config, options.given, keep_alive)
        try:
            yield entry
        finally:
            await self._release(entry)

    def runner_config(self, spec: ModelSpec, options: Options) -> RunnerConfig:
        """The runner a request needs: load-time options resolved against this machine.

        ``num_parallel`` 0 means automatic: decided when a load places the model
        (``_with_parallel``), never per request, which would make a loaded runner look
        incompatible whenever free memory changed.
        """
        num_ctx = options.num_ctx
        train = spec.context_length
        if train and num_ctx > train:
            num_ctx = train
        parallel = options.num_parallel or self.settings.num_parallel
        return RunnerConfig(
            model_path=spec.model_path,
            num_ctx=max(num_ctx, 4),
            num_parallel=max(parallel, 0),
            num_batch=max(options.num_batch, 1),
            # physical cores within this process's affinity and cgroup quota, as Ollama
            num_thread=options.num_thread
            or self.settings.num_thread
            or self._last_system.cpu.default_threads,
            num_gpu=options.num_gpu,
            main_gpu=options.main_gpu,
            use_mmap=options.use_mmap if options.use_mmap is not None else True,
            flash_attention=self.settings.flash_attention,
            kv_cache_type=self.settings.kv_cache_type,
            verbose=self.settings.debug > 0,
            # CPU runners take turns per decode step (see runner.engine._FileTurn)
            cpu_lock_path=str(Path(tempfile.gettempdir()) / "corral-cpu.lock"),
            adapters=spec.adapter_paths,
        )

    def _load_request(self, config: RunnerConfig) -> LoadRequest:
        return LoadRequest(
            num_ctx=config.num_ctx,
            num_parallel=config.num_parallel,
            num_batch=config.num_batch,
            num_gpu=config.num_gpu,
            kv_cache_type=config.kv_cache_type,
            flash_attention=config.flash_attention,
            embedding=config.embedding,
            spread=self.settings.sched_spread,
        )

    def _with_parallel(self, config: RunnerConfig, system: SystemInfo) -> RunnerConfig:
        """``config`` with an automatic ``num_parallel`` decided for ``system`` (what is
        free for this load): 4 where the model with 4 slots fits with a fifth of the
        system memory to spare, else 1 (Ollama's rule, through the injected estimator)."""
        if config.num_parallel > 0:
            return config
        four = replace(config, num_parallel=4)
        memory = system.memory
        roomy = replace(system, memory=replace(memory, free_bytes=int(memory.free_bytes * 0.8)))
        if estimate.fits(self._estimate(four, roomy), roomy, wanted_gpu_layers=config.num_gpu):
            return four
        return replace(config, num_parallel=1)

    def _estimate_runner(self, config: RunnerConfig, system: SystemInfo) -> Estimate:
        try:
            return estimate.estimate(
                config.model_path, self._load_request(config), system.gpus, system.cpu
            )
        except CorralError:
            return Estimate.on_cpu(0)  # unreadable GGUF: the runner's load error says why

    @property
    def pending(self) -> int:
        """Requests waiting for a runner right now (the bounded queue's depth)."""
        return self._pending

    def loaded_now(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def loaded_models(self) -> list[LoadedModel]:
        return sorted(self._loaded.values(), key=lambda m: m.expires_at_wall(), reverse=True)

    async def unload(self, model_path: str) -> bool:
        """Unload now if idle, else as soon as its last request ends (``keep_alive: 0``)."""
        entry = self._loaded.get(model_path)
        if entry is None:
            return False
        entry.keep_alive = 0.0
        if entry.refcount == 0:
            await self._unload(entry, reason="requested")
        return True

    async def shutdown(self) -> None:
        self._closed = True
        for task in list(self._loading.values()):
            task.cancel()
        entries = list(self._loaded.values())
        await asyncio.gather(*(self._unload(e, reason="shutdown") for e in entries))

    # ---- acquiring -------------------------------------------------------------------

    async def _get(
        self,
        spec: ModelSpec,
        config: RunnerConfig,
        given: frozenset[str],
        keep_alive: float | None,
    ) -> LoadedModel:
        if self._pending >= self.settings.max_queue:
            raise ServerBusyError()
        self._pending += 1
        try:
            while True:
                entry = self._loaded.get(spec.model_path)
                if entry is not None and not entry.unloading:
                    if not entry.runner.alive:
                        await self._unload(entry, reason=_death(entry))
                        continue
                    if entry.draining:  # it makes room for another model: queue behind it
                        await self._wait_for_change()
                        continue
                    why = _reload_reason(entry.config, config, given)
                    if not why:
                        self._use(entry, keep_alive)
                        return entry
                    if entry.refcount == 0:
                        await self._unload(entry, reason=why)
                        continue
                    entry.keep_alive = 0.0  # drain it; reload once its requests end
                    entry.stale = why
                    await self._wait_for_change()
                    continue
                if entry is not None:  # unloading
                    await self._wait_for_change()
                    continue
                entry = await self._load_shared(spec, config, keep_alive)
                if entry.unloading or self._loaded.get(spec.model_path) is not entry:
                    self._unclaim(entry)
                    continue
                self._claim(entry, keep_alive)
                return entry
        except asyncio.CancelledError:
            raise RequestCanceledError() from None
        finally:
            self._pending -= 1

    def _use(self, entry: LoadedModel, keep_alive: float | None) -> None:
        entry.refcount += 1
        if keep_alive is not None:
            entry.keep_alive = keep_alive
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.expires_at = None

    async def _load_shared(
        self, spec: ModelSpec, config: RunnerConfig, keep_alive: float | None
    ) -> LoadedModel:
        """Wait for the (shared) load; the entry comes back reserved for this caller, who must
        ``_claim`` it or ``_unclaim`` it."""
        path = spec.model_path
        task = self._loading.get(path)
        if task is None:
            task = asyncio.create_task(self._load(spec, config, keep_alive))
            self._loading[path] = task
            task.add_done_callback(lambda _t: self._loading.pop(path, None))
        self._load_waiters[path] = self._load_waiters.get(path, 0) + 1
        try:
            # shield: a cancelled requester must not cancel the load others wait for
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and not task.cancelled() and task.exception() is None:
                self._unclaim(task.result())
            raise
        finally:
            self._load_waiters[path] -= 1
            if not self._load_waiters[path]:
                del self._load_waiters[path]

    def _claim(self, entry: LoadedModel, keep_alive: float | None) -> None:
        entry.reserved = max(entry.reserved - 1, 0)
        self._use(entry, keep_alive)

    def _unclaim(self, entry: LoadedModel) -> None:
        entry.reserved = max(entry.reserved - 1, 0)
        if entry.reserved == 0 and entry.refcount == 0 and entry.timer is None:
            self._schedule_expiry(entry)

    async def _load(
        self, spec: ModelSpec, config: RunnerConfig, keep_alive: float | None
    ) -> LoadedModel:
        cause = self._load_cause(spec.model_path)
        sized, plan, free = await self._make_room(spec, config)
        placed = replace(
            sized,
            num_gpu_layers=plan.gpu_layers,
            gpu_ids=plan.gpu_ids,
            tensor_split=plan.tensor_split,
        )
        self._reserved[spec.model_path] = plan
        logger.info(
            "loading model %s (%s): needs %s; free %s; ctx %d x %d parallel%s",
            spec.name,
            cause,
            _describe(plan),
            _free_text(free),
            placed.num_ctx,
            placed.num_parallel,
            " (automatic)" if config.num_parallel <= 0 else "",
            extra={"model": spec.name},
        )
        try:
            entry = await self._start(spec, placed, keep_alive, plan)
        finally:
            self._reserved.pop(spec.model_path, None)
        await self._notify()
        # Nobody may be using it yet (all requesters cancelled): start its keep-alive now;
        # the next _use cancels the timer.
        self._schedule_expiry(entry)
        return entry

    def _load_cause(self, path: str) -> str:
        """Why a model loads now, for the load line: its first use, or why the last runner
        for it went away (an option changed, it expired, it died, it was evicted)."""
        last = self._unloaded_because.get(path)
        return "first use" if last is None else f"reload because {last}"

    async def _start(
        self, spec: ModelSpec, config: RunnerConfig, keep_alive: float | None, plan: Estimate
    ) -> LoadedModel:
        started = time.monotonic()
        try:
            runner = await self._factory(config)
        except BaseException as exc:
            self.stats.load_failures += 1
            if isinstance(exc, Exception):  # not a cancel (shutdown)
                logger.warning("loading model %s failed: %s", spec.name, exc)
            raise
        self.stats.loads += 1
        entry = LoadedModel(
            spec=spec,
            runner=runner,
            config=config,
            loaded_at=time.time(),
            keep_alive=self.settings.keep_alive_seconds if keep_alive is None else keep_alive,
            load_duration=time.monotonic() - started,
            estimate=plan,
        )
        if self._closed:
            await runner.stop()
            raise RequestCanceledError("server is shutting down")
        self._loaded[spec.model_path] = entry
        # Reserved for the requests waiting on this load, so that no other load evicts it
        # in the moment before they resume and take it.
        entry.reserved = self._load_waiters.get(spec.model_path, 0)
        entry.watcher = asyncio.create_task(self._watch(entry))
        entry.watcher.add_done_callback(_log_task_error)
        logger.info("loaded model %s in %.2fs (pid %d)", spec.name, entry.load_duration, runner.pid)
        return entry

    async def _watch(self, entry: LoadedModel) -> None:
        """Drop a runner the moment its process ends by itself (a crash, the OOM killer,
        ``kill -9``), so ``/api/ps`` never lists a dead runner and its memory counts as free
        again; log how it ended. A runner we stopped ends quietly."""
        how = await entry.runner.exited()
        if entry.unloading and entry.stopped_by_us:
            return
        entry.died = how
        logger.warning(
            "runner for model %s (pid %d) stopped unexpectedly: %s",
            entry.spec.name,
            entry.runner.pid,
            how,
            extra={"model": entry.spec.name, "pid": entry.runner.pid},
        )
        if entry.refcount == 0:
            await self._unload(entry, reason=_death(entry))
        # else: its requests fail now, and the last release drops it

    def _held(self, path: str) -> list[Estimate]:
        """Room held by other loads: started (reserved) or promised after an eviction."""
        held = [plan for key, plan in self._reserved.items() if key != path]
        held += [plan for key, plan in self._claims.items() if key != path]
        return held

    def _available(self, system: SystemInfo, path: str) -> SystemInfo:
        """``system`` less what loaded runners were promised but have not taken yet.

        System memory: a runner's weights are mapped and its compute buffers touched as it
        works, so the OS's free figure lags behind; the estimates of loaded runners are
        taken off the total instead, whichever is smaller. GPU memory is allocated whole
        at load, so only loads still starting are taken off each GPU's free figure.
        Synchronous on purpose: the decision built on it and the reservation that follows
        happen with no await in between, so two loads never count the same bytes.
        """
        held = self._held(path)
        promised = sum(e.estimate.ram_bytes for e in self._loaded.values() if not e.unloading)
        promised += sum(p.ram_bytes for p in held)
        memory = system.memory
        free = max(min(memory.free_bytes, memory.total_bytes - promised), 0)
        starting: dict[str, int] = {}
        for plan in held:
            for gpu_id, size in zip(plan.gpu_ids, plan.gpu_bytes, strict=True):
                starting[gpu_id] = starting.get(gpu_id, 0) + size
        gpus = tuple(
            replace(g, free_bytes=max(g.free_bytes - starting.get(g.id, 0), 0)) for g in system.gpus
        )
        return replace(system, gpus=gpus, memory=replace(memory, free_bytes=free))

    async def _refresh_system(self) -> SystemInfo:
        system = await asyncio.to_thread(self._system)
        self._last_system = system
        return system

    async def _make_room(
        self, spec: ModelSpec, config: RunnerConfig
    ) -> tuple[RunnerConfig, Estimate, SystemInfo]:
        """Evict until the model fits (count and memory); return the config with its
        automatic values decided, where it goes, and what was free for it."""
        drained: list[LoadedModel] = []
        path = spec.model_path
        try:
            while True:
                fresh = await self._refresh_system()
                # From here to the reservation in _load: no await (see _available).
                # Loads still waiting here do not count, or two would wait for each other.
                held = self._held(path)
                count_ok = len(self._loaded) + len(held) < self._max_loaded
                system = self._available(fresh, path)
                sized = self._with_parallel(config, system)
                plan = self._estimate(sized, system)
                if count_ok and estimate.fits(plan, system, wanted_gpu_layers=config.num_gpu):
                    return sized, plan, system
                alone = not self._loaded and not held
                if alone and plan.ram_bytes <= system.memory.free_bytes:
                    # nothing left to evict: part of it on the CPU is the best
                    return sized, plan, system
                if await self._evict_one(spec, plan, system, count_ok, drained):
                    self._claims[path] = plan
                else:
                    await self._wait_for_change()
        finally:
            self._claims.pop(path, None)
            for entry in drained:
                entry.draining = False

    async def _evict_one(
        self,
        spec: ModelSpec,
        plan: Estimate,
        system: SystemInfo,
        count_ok: bool,
        drained: list[LoadedModel],
    ) -> bool:
        """Unload an idle runner (True), or mark a busy one to drain and wait (False).

        A draining runner takes no new requests, so a burst for a loaded model cannot
        starve a request for another model that waits for its place (Ollama's loop can).
        """
        victim = self._pick_victim()
        free = system.memory.free_bytes
        if victim is not None:
            cause = (
                f"max loaded models {self._max_loaded}"
                if not count_ok
                else f"needs {_describe(plan)}; free {_free_text(system)}"
            )
            logger.info(
                "evicting %s (%s) to load %s (%s)",
                victim.spec.name,
                _describe(victim.estimate),
                spec.name,
                cause,
                extra={"model": victim.spec.name},
            )
            await self._unload(victim, reason=f"evicted for {spec.name}")
            await self._wait_for_gpu_recovery(victim)
            return True
        if not self._loaded and not self._held(spec.model_path):
            raise InsufficientMemoryError(
                f"model requires more system memory ({_gib(plan.ram_bytes)}) than is available"
                f" ({_gib(free)})"
            )
        busy = [e for e in self._loaded.values() if not e.unloading and not e.draining]
        if busy and not any(e.draining for e in self._loaded.values()):
            chosen = min(busy, key=lambda e: (e.keep_alive, e.key))
            chosen.draining = True
            drained.append(chosen)
            logger.info(
                "waiting for %s to finish its requests to load %s", chosen.spec.name, spec.name
            )
        return False

    async def _wait_for_gpu_recovery(self, victim: LoadedModel, seconds: float = 5.0) -> None:
        """After unloading a runner that had GPU memory, wait until the GPUs report most of
        it free again (the driver frees a dead process's memory a little later), as Ollama's
        ``waitForVRAMRecovery``; give up after ``seconds``."""
        plan = victim.estimate
        if not plan.vram_bytes:
            return
        before = {g.id: g.free_bytes for g in self._last_system.gpus}
        wanted = {
            gpu_id: before.get(gpu_id, 0) + int(size * 0.75)
            for gpu_id, size in zip(plan.gpu_ids, plan.gpu_bytes, strict=True)
        }
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            system = await self._refresh_system()
            free = {g.id: g.free_bytes for g in system.gpus}
            if all(free.get(gpu_id, 0) >= need for gpu_id, need in wanted.items()):
                return
            await asyncio.sleep(0.05)
        logger.info("GPU memory of %s did not come back within %.0fs", victim.spec.name, seconds)

    def _pick_victim(self) -> LoadedModel | None:
        # A runner still reserved for the requests that waited on its load is not idle.
        idle = [
            e
            for e in self._loaded.values()
            if e.refcount == 0
            and e.reserved == 0
            and not e.unloading
            and e.key not in self._loading
        ]
        if not idle:
            return None
        return min(idle, key=lambda e: (e.expires_at or float("inf"), e.keep_alive, e.key))

    # ---- releasing and expiry ------------------------------------------------------

    async def _release(self, entry: LoadedModel) -> None:
        entry.refcount = max(entry.refcount - 1, 0)
        if entry.refcount == 0:
            if not entry.runner.alive:
                await self._unload(entry, reason=_death(entry))
            elif entry.keep_alive <= 0:
                await self._unload(entry, reason=entry.stale or "keep_alive 0")
            else:
                self._schedule_expiry(entry)
        await self._notify()

    def _schedule_expiry(self, entry: LoadedModel) -> None:
        if entry.refcount > 0 or entry.unloading:
            return
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if entry.keep_alive == FOREVER:
            entry.expires_at = None
            return
        loop = asyncio.get_running_loop()
        entry.expires_at = time.monotonic() + entry.keep_alive
        entry.timer = loop.call_later(entry.keep_alive, self._expire, entry)

    def _expire(self, entry: LoadedModel) -> None:
        entry.timer = None
        if entry.refcount == 0 and not entry.unloading:
            task = asyncio.get_running_loop().create_task(self._unload_if_idle(entry))
            task.add_done_callback(_log_task_error)

    async def _unload_if_idle(self, entry: LoadedModel) -> None:
        # Checked again here: a request may have taken the runner before this task ran.
        if entry.refcount == 0 and entry.reserved == 0 and not entry.unloading:
            await self._unload(entry, reason="expired")

    async def _unload(self, entry: LoadedModel, *, reason: str) -> None:
        if entry.unloading:
            return
        entry.unloading = True
        entry.stopped_by_us = entry.runner.alive  # else it died first: _watch says how
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        logger.info(
            "unloading model %s (pid %d, %s): %s",
            entry.spec.name,
            entry.runner.pid,
            _describe(entry.estimate),
            reason,
            extra={"model": entry.spec.name, "pid": entry.runner.pid},
        )
        self.stats.unloads += 1
        if reason.startswith("evicted"):
            self.stats.evictions += 1
        self._unloaded_because[entry.key] = reason
        try:
            await entry.runner.stop()
        finally:
            if self._loaded.get(entry.key) is entry:
                del self._loaded[entry.key]
            await self._end_watch(entry)
            await self._notify()

    async def _end_watch(self, entry: LoadedModel) -> None:
        """Let the watcher see the stopped process end (it logs a death we did not cause),
        then make sure it is gone; never wait on the watcher from inside it."""
        watcher = entry.watcher
        if watcher is None or watcher is asyncio.current_task():
            return
        if not watcher.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await asyncio.wait({watcher})
        if not watcher.done():
            watcher.cancel()
            await asyncio.wait({watcher})

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for_change(self) -> None:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._changed.wait()


class _CpuOnly:
    """The machine as a scheduler without GPU discovery sees it: the CPU and its memory."""

    def __init__(self) -> None:
        self._cpu = cpu_info()

    def __call__(self) -> SystemInfo:
        return SystemInfo(gpus=(), cpu=self._cpu, memory=system_memory())


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _describe(plan: Estimate) -> str:
    """One line of where a model goes: layers on GPUs, bytes on each device."""
    parts = [f"{_gib(plan.ram_bytes)} system memory"]
    if plan.layers:
        parts.insert(0, f"{plan.gpu_layers}/{plan.layers} layers on GPU")
    parts += [
        f"{gpu_id} {_gib(size)} ({layers} layers)"
        for gpu_id, size, layers in zip(
            plan.gpu_ids, plan.gpu_bytes, plan.tensor_split, strict=True
        )
    ]
    return ", ".join(parts)


def _free_text(system: SystemInfo) -> str:
    """What a load could use: free system memory and each GPU's usable memory."""
    text = f"{_gib(system.memory.free_bytes)} system memory"
    return text + "".join(f", {g.id} {_gib(g.usable_bytes)} usable" for g in system.gpus)


def _death(entry: LoadedModel) -> str:
    """The unload reason of a runner whose process ended by itself."""
    return f"runner died ({entry.died})" if entry.died else "runner died"


#: load-time options compared only when the request or the model set them
_GIVEN_EQUAL = ("num_batch", "num_thread", "use_mmap", "main_gpu")


def _reload_reason(loaded: RunnerConfig, wanted: RunnerConfig, given: frozenset[str]) -> str:
    """Why a loaded runner cannot serve a request, or ``""`` when it can.

    Ollama's ``needsReload`` with its automatic values: an option neither the request nor
    the model set matches whatever the runner has (so a default ``num_ctx`` of 4096 uses a
    runner loaded with 2048, and an automatic ``num_parallel`` any slot count); ``num_gpu``
    below 0 (as many layers as fit) matches any runner; a set ``num_ctx`` smaller than or
    equal to the loaded one is fine (no reload just to shrink it). A different model file,
    LoRA adapters or embedding mode always needs another runner.
    """
    if loaded.model_path != wanted.model_path:
        return "the model file changed"
    if loaded.adapters != wanted.adapters:  # same weights, another LoRA: Ollama reloads
        return f"adapters changed from {list(loaded.adapters)} to {list(wanted.adapters)}"
    if loaded.embedding != wanted.embedding:
        return "embedding mode changed"
    changed: list[str] = []
    if "num_ctx" in given and wanted.num_ctx > loaded.num_ctx:
        changed.append(_change("num_ctx", loaded.num_ctx, wanted.num_ctx))
    if "num_gpu" in given and wanted.num_gpu >= 0 and wanted.num_gpu != loaded.num_gpu:
        changed.append(_change("num_gpu", loaded.num_gpu, wanted.num_gpu))
    if "num_parallel" in given and 0 < wanted.num_parallel != loaded.num_parallel:
        changed.append(_change("num_parallel", loaded.num_parallel, wanted.num_parallel))
    for name in _GIVEN_EQUAL:
        before, after = getattr(loaded, name), getattr(wanted, name)
        if name in given and before != after:
            changed.append(_change(name, before, after))
    return "options changed: " + ", ".join(changed) if changed else ""


def _change(name: str, before: object, after: object) -> str:
    return f"{name} changed from {before} to {after}"


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler task failed", exc_info=task.exception())
