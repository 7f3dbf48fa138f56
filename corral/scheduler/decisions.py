"""The scheduler's decisions, as pure functions over a snapshot.

Everything here is synchronous and deterministic: no asyncio, no I/O, no clock. The
scheduler (``core``) takes a ``Snapshot`` of what it holds, asks the machine what is free,
passes the time in where a decision needs it, and acts on the answer. The estimator is
passed in as a function (in production it reads the GGUF header once and caches it).

- the keep-alive rule: which keep-alive a runner has after a request (``keep_alive_for``),
  which one unloads it once idle (``unloads_when_idle``) and what happens when its last
  request ends (``when_idle``, ``expiry_reason``);
- whether a loaded runner serves a request or must be replaced (``reload_reason``);
- the automatic ``num_parallel`` (``choose_parallel``);
- memory left after what other loads hold (``held``, ``available``);
- which idle runner goes first (``pick_victim``), which busy one drains (``pick_drain``);
- whether a load fits, must evict, waits, loads partly or fails (``decide_fit``);
- whether a GPU has its memory back after an eviction (``recovery_targets``, ``recovered``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from corral import estimate
from corral.config import FOREVER
from corral.estimate import Estimate
from corral.hardware import SystemInfo
from corral.runner.settings import LoadSettings

__all__ = [
    "Estimator",
    "Fit",
    "Idle",
    "Outcome",
    "RunnerState",
    "Snapshot",
    "available",
    "choose_parallel",
    "decide_fit",
    "describe",
    "expiry_reason",
    "free_text",
    "gib",
    "held",
    "keep_alive_for",
    "pick_drain",
    "pick_victim",
    "recovered",
    "recovery_targets",
    "reload_reason",
    "unloads_when_idle",
    "wall_expiry",
    "when_idle",
]

#: where a model goes with given settings on a given machine (``estimate.estimate`` or a fake)
Estimator = Callable[[LoadSettings, SystemInfo], Estimate]


# ---- the snapshot --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunnerState:
    """One loaded runner as the decisions see it."""

    key: str  # the model file: one runner per model
    estimate: Estimate
    keep_alive: float
    refcount: int = 0  # requests holding it
    reserved: int = 0  # requests that waited for its load and have not taken it yet
    expires_at: float | None = None  # monotonic seconds; None while in use or forever
    unloading: bool = False
    draining: bool = False  # takes no new requests: another model waits for its place
    reloading: bool = False  # a load for the same model is in flight

    @property
    def idle(self) -> bool:
        """Evictable: nobody holds it or waits to take it, and it is not already going."""
        return (
            self.refcount == 0 and self.reserved == 0 and not self.unloading and not self.reloading
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the scheduler holds at one moment."""

    runners: tuple[RunnerState, ...] = ()  # every loaded runner, unloading ones included
    # loads past the fit decision that have not joined ``runners`` yet, with their plans
    starting: Mapping[str, Estimate] = field(default_factory=dict)
    # loads that evicted a runner and have yet to take its place: the freed room is theirs
    claims: Mapping[str, Estimate] = field(default_factory=dict)
    max_loaded: int = 3


# ---- keep-alive: the one rule -------------------------------------------------------


def keep_alive_for(requested: float | None, current: float | None, default: float) -> float:
    """The keep-alive a runner has once a request takes it.

    A request's own value replaces the runner's, whatever it was (``0``: unload when idle,
    ``FOREVER``: never). Unset (``None``) keeps the runner's; a runner just loaded has none
    yet and gets ``default`` (``OLLAMA_KEEP_ALIVE``).
    """
    if requested is not None:
        return requested
    if current is not None:
        return current
    return default


@dataclass(frozen=True, slots=True)
class Idle:
    """What becomes of a runner whose last request ended."""

    unload: str = ""  # unload it now, for this reason; "" to keep it
    expires_at: float | None = None  # kept: unload at this monotonic time (None: never)


def unloads_when_idle(keep_alive: float | None) -> bool:
    """Whether a keep-alive means "unload as soon as no request holds the runner": ``0``
    (or less). ``None`` (unset) keeps the runner's own and never does. A load-only
    request with such a keep-alive unloads the model instead of loading it."""
    return keep_alive is not None and keep_alive <= 0


def when_idle(keep_alive: float, now: float, unload_when_idle: str = "") -> Idle:
    """What happens when a runner's last request ends (``now``, monotonic seconds).

    A runner marked to go once idle (``unload_when_idle``: a stop request, a reload for
    other options) goes now, as does one whose keep-alive is ``0`` (or less); ``FOREVER``
    keeps it for good; any other keep-alive keeps it until ``now + keep_alive``.
    """
    if unload_when_idle:
        return Idle(unload=unload_when_idle)
    if unloads_when_idle(keep_alive):
        return Idle(unload="keep_alive 0")
    if keep_alive == FOREVER:
        return Idle()
    return Idle(expires_at=now + keep_alive)


def expiry_reason(
    keep_alive: float, expires_at: float | None, now: float, unload_when_idle: str = ""
) -> str:
    """Why an idle runner whose keep-alive timer fired goes now, or ``""`` when it stays
    (the timer fired early, or its keep-alive was made longer since)."""
    idle = when_idle(keep_alive, now, unload_when_idle)
    if idle.unload:
        return idle.unload
    if expires_at is not None and now >= expires_at:
        return "expired"
    return ""


def wall_expiry(
    keep_alive: float, expires_at: float | None, now: float, now_wall: datetime
) -> datetime:
    """When a runner expires on the wall clock (``/api/ps``): a runner in use expires its
    keep-alive after now; ``FOREVER`` is about 292 years away (Ollama's figure)."""
    if keep_alive == FOREVER:
        return now_wall + timedelta(days=365 * 292)
    if expires_at is None:
        return now_wall + timedelta(seconds=keep_alive)
    return now_wall + timedelta(seconds=max(expires_at - now, 0))


# ---- reuse or reload ---------------------------------------------------------------------

#: load-time options compared only when the request or the model set them
_GIVEN_EQUAL = ("num_batch", "num_thread", "use_mmap", "main_gpu")


def reload_reason(loaded: LoadSettings, wanted: LoadSettings, given: frozenset[str]) -> str:
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
    if loaded.projector != wanted.projector:  # Ollama reloads when projectors differ
        return "the projector changed"
    if loaded.draft_path != wanted.draft_path:
        return "the draft model changed"
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


# ---- num_parallel ------------------------------------------------------------------------


def choose_parallel(config: LoadSettings, system: SystemInfo, plan: Estimator) -> LoadSettings:
    """``config`` with an automatic ``num_parallel`` (0) decided for ``system`` (what is
    free for this load): 4 where the model with 4 slots fits with a fifth of the system
    memory to spare, else 1 (Ollama's rule). A set ``num_parallel`` stays as it is.

    Decided once, when a load places the model, never per request: that would make a
    loaded runner look incompatible whenever free memory changed.
    """
    if config.num_parallel > 0:
        return config
    four = replace(config, num_parallel=4)
    memory = system.memory
    roomy = replace(system, memory=replace(memory, free_bytes=int(memory.free_bytes * 0.8)))
    if estimate.fits(plan(four, roomy), roomy, wanted_gpu_layers=config.num_gpu):
        return four
    return replace(config, num_parallel=1)


# ---- memory ---------------------------------------------------------------------------


def held(snapshot: Snapshot, path: str) -> list[Estimate]:
    """Room held by loads other than ``path``'s: started, or promised after an eviction."""
    plans = [plan for key, plan in snapshot.starting.items() if key != path]
    plans += [plan for key, plan in snapshot.claims.items() if key != path]
    return plans


def available(system: SystemInfo, snapshot: Snapshot, path: str) -> SystemInfo:
    """``system`` less what loaded runners were promised but have not taken yet.

    System memory: a runner's weights are mapped and its compute buffers touched as it
    works, so the OS's free figure lags behind; the estimates of loaded runners (not those
    unloading) and of other loads under way are taken off the total instead, whichever is
    smaller. GPU memory is allocated whole at load, so only loads still starting are taken
    off each GPU's free figure.
    """
    others = held(snapshot, path)
    promised = sum(r.estimate.ram_bytes for r in snapshot.runners if not r.unloading)
    promised += sum(p.ram_bytes for p in others)
    memory = system.memory
    free = max(min(memory.free_bytes, memory.total_bytes - promised), 0)
    starting: dict[str, int] = {}
    for plan in others:
        for gpu_id, size in zip(plan.gpu_ids, plan.gpu_bytes, strict=True):
            starting[gpu_id] = starting.get(gpu_id, 0) + size
    gpus = tuple(
        replace(g, free_bytes=max(g.free_bytes - starting.get(g.id, 0), 0)) for g in system.gpus
    )
    return replace(system, gpus=gpus, memory=replace(memory, free_bytes=free))


def recovery_targets(victim: Estimate, before: SystemInfo) -> dict[str, int]:
    """Free memory each GPU should report once an evicted runner's memory is back: what it
    had before plus most (3/4) of what the runner held there (Ollama's
    ``waitForVRAMRecovery``). Empty for a runner that had no GPU memory."""
    free = {g.id: g.free_bytes for g in before.gpus}
    return {
        gpu_id: free.get(gpu_id, 0) + int(size * 0.75)
        for gpu_id, size in zip(victim.gpu_ids, victim.gpu_bytes, strict=True)
    }


def recovered(targets: Mapping[str, int], system: SystemInfo) -> bool:
    free = {g.id: g.free_bytes for g in system.gpus}
    return all(free.get(gpu_id, 0) >= need for gpu_id, need in targets.items())


# ---- eviction ----------------------------------------------------------------------------


def pick_victim(runners: Iterable[RunnerState]) -> RunnerState | None:
    """The idle runner to evict first: the one expiring soonest, ``FOREVER`` last (ties:
    the shorter keep-alive, then the model path). A runner still reserved for the requests
    that waited on its load is not idle, nor one whose model is loading again."""
    idle = [r for r in runners if r.idle]
    if not idle:
        return None
    return min(idle, key=lambda r: (_never(r.expires_at), r.keep_alive, r.key))


def _never(expires_at: float | None) -> float:
    return float("inf") if expires_at is None else expires_at


def pick_drain(runners: Sequence[RunnerState]) -> RunnerState | None:
    """With nothing idle to evict, the busy runner to drain for a waiting load: it takes no
    new requests, so a burst for a loaded model cannot starve a request for another model
    (Ollama's loop can). One at a time: none while another drains; the shortest keep-alive
    first."""
    if any(r.draining for r in runners):
        return None
    busy = [r for r in runners if not r.unloading]
    if not busy:
        return None
    return min(busy, key=lambda r: (r.keep_alive, r.key))


class Outcome(enum.Enum):
    LOAD = "load"  # it fits: load now
    PARTIAL = "partial"  # nothing left to evict: load as well as it can (layers on the CPU)
    EVICT = "evict"  # unload ``victim``, then decide again
    WAIT = "wait"  # nothing idle: wait for a change (draining ``drain`` first, if any)
    FAIL = "fail"  # it can never fit: InsufficientMemoryError(``why``)


@dataclass(frozen=True, slots=True)
class Fit:
    outcome: Outcome
    victim: RunnerState | None = None  # EVICT: the idle runner to unload
    drain: RunnerState | None = None  # WAIT: the busy runner to mark draining
    why: str = ""  # EVICT: the cause for the log line; FAIL: the error message


def decide_fit(
    snapshot: Snapshot, path: str, plan: Estimate, system: SystemInfo, wanted_gpu_layers: int
) -> Fit:
    """Whether the load of ``path`` with ``plan`` goes ahead on ``system`` (what is
    ``available`` to it), given what ``snapshot`` holds.

    It fits when there is room for one more runner (``max_loaded``) and the model fits
    whole (``estimate.fits``: every layer on a GPU where there are GPUs, its system memory
    free). Else an idle runner is evicted (the one ``pick_victim`` names). With nothing
    loaded and no other load under way, a model whose system memory is free loads as well
    as it can; one whose system memory is not fails. Otherwise it waits for a runner to
    be released, draining the one ``pick_drain`` names.
    """
    others = held(snapshot, path)
    count_ok = len(snapshot.runners) + len(others) < snapshot.max_loaded
    if count_ok and estimate.fits(plan, system, wanted_gpu_layers=wanted_gpu_layers):
        return Fit(Outcome.LOAD)
    alone = not snapshot.runners and not others
    if alone and plan.ram_bytes <= system.memory.free_bytes:
        return Fit(Outcome.PARTIAL)
    victim = pick_victim(snapshot.runners)
    if victim is not None:
        cause = (
            f"max loaded models {snapshot.max_loaded}"
            if not count_ok
            else f"needs {describe(plan)}; free {free_text(system)}"
        )
        return Fit(Outcome.EVICT, victim=victim, why=cause)
    if alone:
        return Fit(
            Outcome.FAIL,
            why=f"model requires more system memory ({gib(plan.ram_bytes)}) than is available"
            f" ({gib(system.memory.free_bytes)})",
        )
    return Fit(Outcome.WAIT, drain=pick_drain(snapshot.runners))


# ---- log text ----------------------------------------------------------------------------


def gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def describe(plan: Estimate) -> str:
    """One line of where a model goes: layers on GPUs, bytes on each device."""
    parts = [f"{gib(plan.ram_bytes)} system memory"]
    if plan.layers:
        parts.insert(0, f"{plan.gpu_layers}/{plan.layers} layers on GPU")
    parts += [
        f"{gpu_id} {gib(size)} ({layers} layers)"
        for gpu_id, size, layers in zip(
            plan.gpu_ids, plan.gpu_bytes, plan.tensor_split, strict=True
        )
    ]
    return ", ".join(parts)


def free_text(system: SystemInfo) -> str:
    """What a load could use: free system memory and each GPU's usable memory."""
    text = f"{gib(system.memory.free_bytes)} system memory"
    return text + "".join(f", {g.id} {gib(g.usable_bytes)} usable" for g in system.gpus)
