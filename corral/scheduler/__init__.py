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
  unloads at once, ``FOREVER`` never), and a request overwrites the runner's keep-alive
  (an unset one keeps it; a new runner starts with ``OLLAMA_KEEP_ALIVE``). A runner that
  must go once its requests end (a stop request, a reload for other options) is marked so
  explicitly, whatever its keep-alive;
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
  and what is free, and its cause (first use, which option changed, expiry, a death, ...);
- replicas (``CORRAL_MAX_REPLICAS``, default 1): while every slot of a model's runners is
  busy and requests wait, another runner of it loads with the same settings where it fits
  beside everything loaded (it evicts nothing); each request goes to a runner with a free
  slot, the least busy; an extra goes after a shorter idle time, the last keeps the
  keep-alive (``replicas``);
- the context of a request that leaves ``num_ctx`` unset: the default (by the GPUs' memory
  where ``OLLAMA_CONTEXT_LENGTH`` is 0), grown to hold a long prompt (``acquire``'s
  ``need``), within the model's training length and memory (``context``).

The factory that starts runners (``runner_factory``), the machine (``system``), the
estimator and the clock are injected, so tests can use fakes.

The package: ``decisions`` holds every decision above as a pure function over a snapshot
(no asyncio, no I/O, the time passed in), ``context`` those about the context's length;
``replicas`` those about a model's several runners; ``core`` is the asynchronous
``Scheduler`` that asks them and acts (queue, references, timers, loads, watchers), waking
its waiters on every change instead of polling;
``entries`` the records it keeps; ``protocol`` what it needs of a runner
(``RunnerProcess``) and what handlers may call on one (``RunnerLike``); ``clock`` the clock.
"""

from corral.scheduler.clock import Clock, SystemClock
from corral.scheduler.context import ContextNeed, answer_room
from corral.scheduler.core import Scheduler
from corral.scheduler.decisions import unloads_when_idle
from corral.scheduler.entries import LoadedModel, ModelSpec, SchedulerStats
from corral.scheduler.protocol import RunnerFactory, RunnerLike, RunnerProcess

__all__ = [
    "Clock",
    "ContextNeed",
    "LoadedModel",
    "ModelSpec",
    "RunnerFactory",
    "RunnerLike",
    "RunnerProcess",
    "Scheduler",
    "SchedulerStats",
    "SystemClock",
    "answer_room",
    "unloads_when_idle",
]
