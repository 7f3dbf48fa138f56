"""The scheduler's asynchronous part: the queue, references, keep-alive timers, loads,
and the tasks that watch runners. Every decision is one of ``decisions``' pure functions,
asked with a snapshot of what is held here; every change of that state wakes whoever waits
on it (``_notify``), so nothing here polls the scheduler's own state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from corral import estimate
from corral.api.options import Options
from corral.config import Settings
from corral.errors import (
    CorralError,
    InsufficientMemoryError,
    RequestCanceledError,
    ServerBusyError,
)
from corral.estimate import Estimate
from corral.hardware import SystemInfo, cpu_info, system_memory
from corral.runner.settings import MAX_NUM_CTX, MAX_NUM_THREAD, MIN_NUM_CTX, LoadSettings
from corral.scheduler import context, decisions, replicas
from corral.scheduler.clock import Clock, SystemClock
from corral.scheduler.context import ContextNeed
from corral.scheduler.decisions import Estimator, Outcome, Snapshot, describe, free_text
from corral.scheduler.entries import LoadedModel, ModelSpec, SchedulerStats
from corral.scheduler.placement import WorkerPool
from corral.scheduler.protocol import RunnerFactory

__all__ = ["Scheduler"]

# one logger for the whole package, as when the scheduler was one module
logger = logging.getLogger("corral.scheduler")


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        runner_factory: RunnerFactory,
        *,
        max_loaded: int | None = None,
        system: Callable[[], SystemInfo] | None = None,
        estimator: Estimator | None = None,
        clock: Clock | None = None,
        workers: WorkerPool | None = None,
    ) -> None:
        self.settings = settings
        # RPC workers a model too big for this host is spread over (scheduler.placement)
        self.workers = workers or WorkerPool.from_settings(settings.rpc_servers)
        self._factory = runner_factory
        self._system = system or _CpuOnly()
        self._estimate = estimator or self._estimate_runner
        self._clock: Clock = clock or SystemClock()
        self._last_system = self._system()
        gpus = len(self._last_system.gpus)
        self._max_loaded = max_loaded or settings.max_loaded_models or 3 * max(gpus, 1)
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        # replica loads under way (scheduler.replicas), by the key their runner will have
        self._growing: dict[str, asyncio.Task[LoadedModel | None]] = {}
        # loads past _make_room, not yet in _loaded, with the memory they were given
        self._reserved: dict[str, Estimate] = {}
        # loads that evicted a runner and have yet to take its place: the freed room is
        # theirs, not that of a load that happens to look first
        self._claims: dict[str, Estimate] = {}
        self._pending = 0
        self._load_waiters: dict[str, int] = {}
        # why each model was last unloaded, so that its next load can say why it happens
        self._unloaded_because: dict[str, str] = {}
        # models whose last replica load found no room: none again until a runner unloads
        self._refused: set[str] = set()
        #: most seconds an idle runner stays while its model has another (scheduler.replicas)
        self.replica_idle = replicas.REPLICA_IDLE
        self.stats = SchedulerStats()
        # set (and replaced) on every change of what waiters decide on; see _notify
        self._changed = asyncio.Event()
        self._waiting = 0  # tasks in _wait_for_change
        self._closed = False

    # ---- public ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def acquire(
        self,
        spec: ModelSpec,
        options: Options,
        keep_alive: float | None,
        *,
        need: ContextNeed | None = None,
    ) -> AsyncIterator[LoadedModel]:
        """Hold a runner for ``spec`` for the duration of the ``async with`` block.

        ``keep_alive`` as the request gave it: ``None`` (unset) keeps the runner's, or the
        default for a new one; see ``decisions.keep_alive_for`` and ``decisions.when_idle``.
        ``need``: what the prompt needs of the context where the request leaves ``num_ctx``
        automatic (``scheduler.context``): an estimate sizes a new load, a counted need also
        reloads a runner whose context is too small for it.
        """
        config = self.load_settings(spec, options, need)
        floor = self._context_floor(options, config)
        base = None if floor is None else self._context_base(spec, options)
        entry = await self._get(spec, config, options.given, keep_alive, need, floor, base)
        try:
            yield entry
        finally:
            await self._release(entry)

    def load_settings(
        self, spec: ModelSpec, options: Options, need: ContextNeed | None = None
    ) -> LoadSettings:
        """What a runner for this request is loaded with: the load-time options resolved
        against the model and this machine, in the one place they are clamped.

        ``num_ctx`` (per slot) is capped at the model's training length (``MAX_NUM_CTX``
        where the model does not say), then raised to at least ``MIN_NUM_CTX``;
        ``num_batch`` is at least 1 (``LoadSettings.batch_size`` fits it to the slots and
        the context); ``num_thread`` at most ggml's ``MAX_NUM_THREAD``, and 0 or less means
        automatic. No request value can make a runner assert or overflow. ``num_parallel`` 0 means
        automatic: decided when a load places the model (``decisions.choose_parallel``),
        never per request. A ``num_ctx`` neither the request nor the model set is automatic:
        the default (``OLLAMA_CONTEXT_LENGTH``, or by the GPUs' memory where that is 0),
        grown to hold what ``need`` asks for (``context.grown_context``).
        """
        limit = spec.context_length or MAX_NUM_CTX
        if options.is_set("num_ctx"):
            num_ctx = min(options.num_ctx, limit)
        else:
            num_ctx = context.grown_context(self._context_base(spec, options), need, limit)
        parallel = options.num_parallel or self.settings.num_parallel
        threads = options.num_thread if options.num_thread > 0 else 0
        return LoadSettings(
            model_path=spec.model_path,
            num_ctx=max(num_ctx, MIN_NUM_CTX),
            num_parallel=max(parallel, 0),
            # what llama.cpp gets is LoadSettings.batch_size: at least a token per slot
            num_batch=min(max(options.num_batch, 1), (1 << 31) - 1),
            # physical cores within this process's affinity and cgroup quota, as Ollama
            num_thread=min(
                threads or self.settings.num_thread or self._last_system.cpu.default_threads,
                MAX_NUM_THREAD,
            ),
            num_gpu=options.num_gpu,
            main_gpu=options.main_gpu,
            use_mmap=options.use_mmap if options.use_mmap is not None else True,
            flash_attention=self.settings.flash_attention,
            kv_cache_type=self.settings.kv_cache_type,
            adapters=spec.adapter_paths,
            projector=spec.projector_path,
            draft_path=spec.draft_path,
            verbose=self.settings.debug > 0,
            # CPU runners take turns per decode step (see runner.engine._FileTurn)
            cpu_lock_path=str(Path(tempfile.gettempdir()) / "corral-cpu.lock"),
        )

    @property
    def system(self) -> SystemInfo:
        """The latest snapshot of the hardware (GPUs, CPU, memory)."""
        return self._last_system

    @property
    def default_context(self) -> int:
        """The context of a request that sets none, before the model's cap: newest Ollama's
        tier by the GPUs' memory when ``OLLAMA_CONTEXT_LENGTH`` is 0 or unset."""
        return context.default_context(self.settings.context_length, self._last_system.gpus)

    def _context_base(self, spec: ModelSpec, options: Options) -> int:
        """The automatic context before any growth: the default, within the model's
        training length."""
        base = options.num_ctx if options.num_ctx > 0 else self.default_context
        return min(base, spec.context_length or MAX_NUM_CTX)

    def _context_floor(self, options: Options, config: LoadSettings) -> int | None:
        """How far an automatic context may step down to fit memory (None: it is the
        request's or the model's own ``num_ctx``, which never changes): to the configured
        default, or to 4096 under a tiered one."""
        if options.is_set("num_ctx"):
            return None
        configured = options.num_ctx if options.num_ctx > 0 else context.DEFAULT_CONTEXT
        return min(configured, config.num_ctx)

    def context_short(self, ref: LoadedModel, options: Options, need: ContextNeed) -> str:
        """Why the held runner ``ref`` should make way for one with a longer context for a
        prompt that needs ``need`` (counted), or ``""``: a request that sets ``num_ctx``,
        a runner with enough, or one whose load already asked for as much, keep theirs."""
        if options.is_set("num_ctx"):
            return ""
        wanted = self.load_settings(ref.spec, options, need).num_ctx
        base = self._context_base(ref.spec, options)
        return context.regrow_reason(ref.config.num_ctx, wanted, ref.context_asked, base)

    def _estimate_runner(self, config: LoadSettings, system: SystemInfo) -> Estimate:
        try:
            return estimate.estimate(
                config, system.gpus, system.cpu, spread=self.settings.sched_spread
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
        """Unload the model's runners (every replica): each now if idle, else as soon as
        its last request ends."""
        group = self._group(model_path)
        if not group:
            return False
        for entry in group:
            if entry.refcount == 0:
                await self._unload(entry, reason="requested")
            else:
                self._unload_when_idle(entry, "requested")
        return True

    def _group(self, path: str) -> list[LoadedModel]:
        """The runners of one model (its replicas) not on their way out, first one first."""
        group = [e for e in self._loaded.values() if e.spec.model_path == path and not e.unloading]
        return sorted(group, key=lambda e: e.replica)

    async def shutdown(self) -> None:
        self._closed = True
        for task in [*self._loading.values(), *self._growing.values()]:
            task.cancel()
        entries = list(self._loaded.values())
        await asyncio.gather(*(self._unload(e, reason="shutdown") for e in entries))

    # ---- acquiring -------------------------------------------------------------------

    async def _get(
        self,
        spec: ModelSpec,
        config: LoadSettings,
        given: frozenset[str],
        keep_alive: float | None,
        need: ContextNeed | None = None,
        floor: int | None = None,
        base: int | None = None,
    ) -> LoadedModel:
        if self._pending >= self.settings.max_queue:
            raise ServerBusyError()
        self._pending += 1
        try:
            while True:
                group = self._group(spec.model_path)
                if group:
                    dead = next((e for e in group if not e.runner.alive), None)
                    if dead is not None:
                        await self._unload(dead, reason=_death(dead))
                        continue
                    # a draining runner makes room for another model: queue behind it
                    open_ = [e for e in group if not e.draining]
                    usable: list[LoadedModel] = []
                    unloaded = False
                    for entry in open_:
                        why = decisions.reload_reason(entry.config, config, given)
                        if not why and need is not None and need.counted and base is not None:
                            why = context.regrow_reason(
                                entry.config.num_ctx, config.num_ctx, entry.context_asked, base
                            )
                        if not why:
                            usable.append(entry)
                        elif entry.refcount == 0:
                            await self._unload(entry, reason=why)
                            unloaded = True
                            break
                        else:
                            self._unload_when_idle(entry, why)  # reload once its requests end
                    if unloaded:
                        continue
                    if not usable:
                        await self._wait_for_change()
                        continue
                    chosen = self._route(spec, usable, keep_alive)
                    if chosen is None:  # every slot busy, another runner coming
                        await self._wait_for_change()
                        continue
                    self._use(chosen, keep_alive)
                    return chosen
                if any(e.spec.model_path == spec.model_path for e in self._loaded.values()):
                    await self._wait_for_change()  # unloading
                    continue
                entry = await self._load_shared(spec, config, keep_alive, floor)
                if entry.unloading or self._loaded.get(spec.model_path) is not entry:
                    self._unclaim(entry)
                    continue
                if self.settings.max_replicas > 1 and entry.refcount >= entry.config.num_parallel:
                    # its slots are taken by others who waited for the load: route (a replica)
                    self._unclaim(entry)
                    continue
                self._claim(entry, keep_alive)
                return entry
        except asyncio.CancelledError:
            raise RequestCanceledError() from None
        finally:
            self._pending -= 1

    def _use(self, entry: LoadedModel, keep_alive: float | None) -> None:
        # No _notify: one more reference lets no waiter go ahead.
        entry.refcount += 1
        entry.keep_alive = decisions.keep_alive_for(
            keep_alive, entry.keep_alive, self.settings.keep_alive_seconds
        )
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.expires_at = None
        entry.idle_since = None
        if keep_alive is not None:  # a request's keep-alive is the model's: every replica's
            for peer in self._group(entry.spec.model_path):
                if peer is not entry and peer.keep_alive != keep_alive:
                    peer.keep_alive = keep_alive
                    self._schedule_expiry(peer)

    def _route(
        self, spec: ModelSpec, usable: list[LoadedModel], keep_alive: float | None
    ) -> LoadedModel | None:
        """The runner of the model that takes a request (``replicas.route``), or None to
        wait: for a slot, or for another runner, whose load this starts."""
        path = spec.model_path
        cap = self.settings.max_replicas
        if cap <= 1:
            return usable[0]
        loading = path in self._loading or any(k.startswith(path + "#") for k in self._growing)
        # a model on its way out, on RPC workers, or unloading when idle gets no replica
        grows = not (
            any(e.unload_when_idle for e in usable)
            or usable[0].config.rpc_servers
            or self.settings.rpc_only
            or decisions.unloads_when_idle(
                decisions.keep_alive_for(keep_alive, usable[0].keep_alive, 0)
            )
        )
        seats = [
            replicas.Seat(e.key, e.replica, e.refcount + e.reserved, e.config.num_parallel)
            for e in usable
        ]
        route = replicas.route(
            seats, cap=cap, loading=loading, refused=path in self._refused or not grows
        )
        if route.grow:
            self._grow(usable[0])
            return None
        if route.key is None:
            return None
        return next(e for e in usable if e.key == route.key)

    def _grow(self, template: LoadedModel) -> None:
        """Start loading another runner of ``template``'s model, with its settings."""
        path = template.spec.model_path
        taken = {e.replica for e in self._loaded.values() if e.spec.model_path == path}
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        key = replicas.replica_key(path, index)
        task = asyncio.create_task(self._load_replica(template, index))
        self._growing[key] = task
        task.add_done_callback(lambda _t: self._grown(key))
        task.add_done_callback(_log_task_error_any)

    async def _load_replica(self, template: LoadedModel, index: int) -> LoadedModel | None:
        """Load replica ``index`` of ``template``'s model where it fits beside everything
        loaded (never evicting, never partly: ``replicas``); None when it does not, and no
        other is tried until a runner unloads."""
        spec = template.spec
        key = replicas.replica_key(spec.model_path, index)
        fresh = await self._refresh_system()
        if self._closed:
            return None
        # From this snapshot to the reservation: no await (see _make_room).
        snapshot = self._snapshot()
        system = decisions.available(fresh, snapshot, key)
        plan = self._estimate(template.config, system)
        fit = decisions.decide_fit(snapshot, key, plan, system, template.config.num_gpu)
        busy = sum(e.refcount for e in self._group(spec.model_path))
        if fit.outcome is not Outcome.LOAD:
            self._refused.add(spec.model_path)
            logger.info(
                "no replica of model %s: needs %s; free %s (%d requests on %d runners)",
                spec.name,
                describe(plan),
                free_text(system),
                busy,
                len(self._group(spec.model_path)),
                extra={"model": spec.name},
            )
            return None
        placed = replace(
            template.config,
            num_gpu_layers=plan.gpu_layers,
            gpu_ids=plan.gpu_ids,
            tensor_split=plan.tensor_split,
        )
        self._reserved[key] = plan
        logger.info(
            "loading replica %d of model %s (every slot busy, %d requests): needs %s; free %s",
            index,
            spec.name,
            busy,
            describe(plan),
            free_text(system),
            extra={"model": spec.name},
        )
        try:
            entry = await self._start(spec, placed, template.keep_alive, plan, replica=index)
            entry.context_asked = template.context_asked
        except Exception:
            self._refused.add(spec.model_path)
            return None
        finally:
            self._reserved.pop(key, None)
            self._notify()
        self._schedule_expiry(entry)
        return entry

    def _unload_when_idle(self, entry: LoadedModel, why: str) -> None:
        """Mark ``entry`` to go once its last request ends; the first reason given stays
        (two waiters giving different ones must not wake each other in turn)."""
        if not entry.unload_when_idle:
            entry.unload_when_idle = why
            self._notify()

    async def _load_shared(
        self,
        spec: ModelSpec,
        config: LoadSettings,
        keep_alive: float | None,
        floor: int | None = None,
    ) -> LoadedModel:
        """Wait for the (shared) load; the entry comes back reserved for this caller, who must
        ``_claim`` it or ``_unclaim`` it."""
        path = spec.model_path
        task = self._loading.get(path)
        if task is None:
            task = asyncio.create_task(self._load(spec, config, keep_alive, floor))
            self._loading[path] = task
            task.add_done_callback(lambda _t: self._load_done(path))
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

    def _grown(self, key: str) -> None:
        self._growing.pop(key, None)
        self._notify()

    def _load_done(self, path: str) -> None:
        self._loading.pop(path, None)
        self._notify()  # its runner (if any) may be evicted now

    def _claim(self, entry: LoadedModel, keep_alive: float | None) -> None:
        entry.reserved = max(entry.reserved - 1, 0)
        self._use(entry, keep_alive)

    def _unclaim(self, entry: LoadedModel) -> None:
        entry.reserved = max(entry.reserved - 1, 0)
        if entry.reserved == 0 and entry.refcount == 0 and entry.timer is None:
            self._schedule_expiry(entry)
        self._notify()

    async def _load(
        self,
        spec: ModelSpec,
        config: LoadSettings,
        keep_alive: float | None,
        floor: int | None = None,
    ) -> LoadedModel:
        cause = self._load_cause(spec.model_path)
        sized, plan, free = await self._make_room(spec, config, floor)
        if sized.num_ctx < config.num_ctx:
            logger.info(
                "context for model %s: %d does not fit in memory, loading with %d",
                spec.name,
                config.num_ctx,
                sized.num_ctx,
                extra={"model": spec.name},
            )
        # From _make_room's decision to this reservation: no await (see _make_room).
        placed = sized  # on RPC workers: placed already (scheduler.placement)
        if not sized.rpc_servers:
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
            describe(plan),
            free_text(free),
            placed.num_ctx,
            placed.num_parallel,
            " (automatic)" if config.num_parallel <= 0 else "",
            extra={"model": spec.name},
        )
        try:
            entry = await self._start(spec, placed, keep_alive, plan)
            entry.context_asked = config.num_ctx
        except BaseException:
            self._release_workers(placed)
            raise
        finally:
            self._reserved.pop(spec.model_path, None)
            self._notify()
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
        self,
        spec: ModelSpec,
        config: LoadSettings,
        keep_alive: float | None,
        plan: Estimate,
        *,
        replica: int = 0,
    ) -> LoadedModel:
        started = self._clock.monotonic()
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
            loaded_at=self._clock.now().timestamp(),
            keep_alive=decisions.keep_alive_for(keep_alive, None, self.settings.keep_alive_seconds),
            load_duration=self._clock.monotonic() - started,
            estimate=plan,
            clock=self._clock,
            replica=replica,
        )
        if self._closed:
            await runner.stop()
            raise RequestCanceledError("server is shutting down")
        self._loaded[entry.key] = entry
        # Reserved for the requests waiting on this load, so that no other load evicts it
        # in the moment before they resume and take it.
        entry.reserved = self._load_waiters.get(entry.key, 0)
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
        else:  # its requests fail now, and the last release drops it
            self._notify()

    # ---- making room -------------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            runners=tuple(e.state(reloading=e.key in self._loading) for e in self._loaded.values()),
            starting=dict(self._reserved),
            claims=dict(self._claims),
            max_loaded=self._max_loaded,
        )

    async def _refresh_system(self) -> SystemInfo:
        system = await asyncio.to_thread(self._system)
        self._last_system = system
        return system

    async def _make_room(
        self, spec: ModelSpec, config: LoadSettings, floor: int | None = None
    ) -> tuple[LoadSettings, Estimate, SystemInfo]:
        """Evict until the model fits (count and memory); return the config with its
        automatic values decided, where it goes, and what was free for it. An automatic
        context (``floor`` not None) first steps down to what fits with every idle runner
        evicted (``context.fit_context``).

        From the snapshot to the reservation in ``_load`` there is no await, so two loads
        never count the same bytes. Loads still waiting here hold nothing, or two would
        wait for each other.
        """
        drained: list[LoadedModel] = []
        path = spec.model_path
        probed = False  # the RPC workers, once per load (see _on_workers)
        try:
            while True:
                fresh = await self._refresh_system()
                snapshot = self._snapshot()
                system = decisions.available(fresh, snapshot, path)
                fitted = config
                if floor is not None and config.num_ctx > floor:
                    roomy = context.reclaimable(fresh, snapshot, path)
                    fitted = context.fit_context(config, floor, roomy, self._estimate)
                sized = decisions.choose_parallel(fitted, system, self._estimate)
                plan = self._estimate(sized, system)
                fit = decisions.decide_fit(snapshot, path, plan, system, config.num_gpu)
                if self.workers is not None and self._on_workers(plan, fresh, path):
                    if not probed:  # an await: decide again on a fresh snapshot after it
                        await self.workers.refresh()
                        probed = True
                        continue
                    remote = self.workers.place(path, self._for_workers(sized))
                    if remote is not None:
                        return remote[0], remote[1], system
                    if fit.outcome is Outcome.FAIL:
                        raise InsufficientMemoryError(f"{fit.why}; {self._workers_text()}")
                if fit.outcome in (Outcome.LOAD, Outcome.PARTIAL):
                    return sized, plan, system
                if fit.outcome is Outcome.FAIL:
                    raise InsufficientMemoryError(fit.why)
                if fit.outcome is Outcome.EVICT:
                    assert fit.victim is not None
                    await self._evict(self._loaded[fit.victim.key], spec, fit.why)
                    self._claims[path] = plan
                    continue
                if fit.drain is not None:  # Outcome.WAIT
                    chosen = self._loaded[fit.drain.key]
                    chosen.draining = True
                    drained.append(chosen)
                    logger.info(
                        "waiting for %s to finish its requests to load %s",
                        chosen.spec.name,
                        spec.name,
                    )
                await self._wait_for_change()
        finally:
            self._claims.pop(path, None)
            for entry in drained:
                entry.draining = False
            self._notify()

    async def _evict(self, victim: LoadedModel, spec: ModelSpec, cause: str) -> None:
        logger.info(
            "evicting %s (%s) to load %s (%s)",
            victim.spec.name,
            describe(victim.estimate),
            spec.name,
            cause,
            extra={"model": victim.spec.name},
        )
        await self._unload(victim, reason=f"evicted for {spec.name}")
        await self._wait_for_gpu_recovery(victim)

    async def _wait_for_gpu_recovery(self, victim: LoadedModel, seconds: float = 5.0) -> None:
        """After unloading a runner that had GPU memory, wait until the GPUs report most of
        it free again (the driver frees a dead process's memory a little later), as Ollama's
        ``waitForVRAMRecovery``; give up after ``seconds``. This polls the hardware, which
        tells nobody when its memory comes back."""
        targets = decisions.recovery_targets(victim.estimate, self._last_system)
        if not targets:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    if decisions.recovered(targets, await self._refresh_system()):
                        return
                    await asyncio.sleep(0.05)
        logger.info("GPU memory of %s did not come back within %.0fs", victim.spec.name, seconds)

    # ---- releasing and expiry ------------------------------------------------------

    async def _release(self, entry: LoadedModel) -> None:
        entry.refcount = max(entry.refcount - 1, 0)
        if entry.refcount == 0 and not entry.unloading:
            if not entry.runner.alive:
                await self._unload(entry, reason=_death(entry))
            else:
                now = self._clock.monotonic()
                idle = decisions.when_idle(entry.keep_alive, now, entry.unload_when_idle)
                if idle.unload:
                    await self._unload(entry, reason=idle.unload)
                else:
                    self._arm(entry, self._idle_deadline(entry, idle.expires_at, now))
        self._notify()

    def _idle_deadline(
        self, entry: LoadedModel, expires_at: float | None, now: float
    ) -> float | None:
        """When a runner that just went idle goes: sooner while its model has another
        runner (``replicas.idle_deadline``)."""
        entry.idle_since = now
        peers = len(self._group(entry.spec.model_path)) > 1
        return replicas.idle_deadline(expires_at, now, peers, self.replica_idle)

    def _schedule_expiry(self, entry: LoadedModel) -> None:
        """Start the keep-alive of an idle runner (after its load, or once the requests
        reserved for it went away); one to go at once goes when its timer fires now."""
        if entry.refcount > 0 or entry.unloading:
            return
        now = self._clock.monotonic()
        idle = decisions.when_idle(entry.keep_alive, now, entry.unload_when_idle)
        self._arm(entry, now if idle.unload else self._idle_deadline(entry, idle.expires_at, now))

    def _arm(self, entry: LoadedModel, expires_at: float | None) -> None:
        """Set the keep-alive timer of an idle runner (None: it never expires)."""
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.expires_at = expires_at
        if expires_at is not None:
            delay = max(expires_at - self._clock.monotonic(), 0.0)
            entry.timer = asyncio.get_running_loop().call_later(delay, self._expire, entry)
        self._notify()  # the soonest to expire is evicted first

    def _expire(self, entry: LoadedModel) -> None:
        """The keep-alive timer fired (or a test says it did)."""
        if entry.timer is not None:
            entry.timer.cancel()  # a no-op for the timer that called this
            entry.timer = None
        if entry.refcount == 0 and not entry.unloading:
            task = asyncio.get_running_loop().create_task(self._unload_if_idle(entry))
            task.add_done_callback(_log_task_error)

    async def _unload_if_idle(self, entry: LoadedModel) -> None:
        # Checked again here: a request may have taken the runner before this task ran.
        if entry.refcount or entry.reserved or entry.unloading:
            return
        now = self._clock.monotonic()
        reason = decisions.expiry_reason(
            entry.keep_alive, entry.expires_at, now, entry.unload_when_idle
        )
        if reason == "expired" and entry.idle_since is not None:
            if len(self._group(entry.spec.model_path)) > 1:
                reason = "idle replica"
            else:  # the model's last runner: its keep-alive counts, not a replica's idle time
                last = replicas.last_deadline(entry.keep_alive, entry.idle_since)
                if last is None or now < last:
                    self._arm(entry, last)
                    return
        if reason:
            await self._unload(entry, reason=reason)
        elif entry.timer is None and entry.expires_at is not None:
            self._arm(entry, entry.expires_at)  # fired early: wait for the rest

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
            describe(entry.estimate),
            reason,
            extra={"model": entry.spec.name, "pid": entry.runner.pid},
        )
        self.stats.unloads += 1
        if reason.startswith("evicted"):
            self.stats.evictions += 1
        self._unloaded_because[entry.spec.model_path] = reason
        self._refused.clear()  # memory or a place frees: another replica may fit now
        self._notify()  # its memory no longer counts as promised
        try:
            await entry.runner.stop()
        finally:
            self._release_workers(entry.config)
            if self._loaded.get(entry.key) is entry:
                del self._loaded[entry.key]
            await self._end_watch(entry)
            self._notify()

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

    # ---- RPC workers -------------------------------------------------------------------

    def _on_workers(self, plan: Estimate, fresh: SystemInfo, path: str) -> bool:
        """Whether a load goes to the RPC workers: always with ``CORRAL_RPC_ONLY``, else
        when the model would not fit this host's memory even with every other model
        unloaded (a GPU host places what its GPUs cannot hold on its CPU, as before)."""
        if self.settings.rpc_only:
            return True
        if fresh.gpus:
            return False
        others = sum(
            e.estimate.ram_bytes for e in self._loaded.values() if e.spec.model_path != path
        )
        return plan.ram_bytes > fresh.memory.free_bytes + others

    def _for_workers(self, config: LoadSettings) -> LoadSettings:
        return replace(config, rpc_stall_seconds=self.settings.runner_stall_seconds)

    def _release_workers(self, config: LoadSettings) -> None:
        if self.workers is not None and config.rpc_servers:
            self.workers.release(config.rpc_servers)

    def _workers_text(self) -> str:
        assert self.workers is not None
        states = ", ".join(
            f"{w['endpoint']} {w['detail'] or w['state']}" for w in self.workers.status()
        )
        return f"and the RPC workers cannot hold it ({states})"

    # ---- waiting ---------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake everyone in ``_wait_for_change``: something they decide on changed."""
        if self._waiting:
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _wait_for_change(self) -> None:
        """Sleep until the next ``_notify``. Callers look at the state and call this with
        no await in between, so no change can slip past unseen."""
        self._waiting += 1
        try:
            await self._changed.wait()
        finally:
            self._waiting -= 1


class _CpuOnly:
    """The machine as a scheduler without GPU discovery sees it: the CPU and its memory."""

    def __init__(self) -> None:
        self._cpu = cpu_info()

    def __call__(self) -> SystemInfo:
        return SystemInfo(gpus=(), cpu=self._cpu, memory=system_memory())


def _death(entry: LoadedModel) -> str:
    """The unload reason of a runner whose process ended by itself."""
    return f"runner died ({entry.died})" if entry.died else "runner died"


def _log_task_error_any(task: asyncio.Task[LoadedModel | None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler task failed", exc_info=task.exception())


def _log_task_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler task failed", exc_info=task.exception())
