"""How long a runner's context is when the request does not say: pure decisions.

A request that sets ``num_ctx`` (in its options or through the model's Modelfile) gets that,
capped at the model's training length, as before. Otherwise the context is automatic:

- the default (``default_context``): ``OLLAMA_CONTEXT_LENGTH``, or where that is 0 or unset
  newest Ollama's tier by the GPUs' total memory (``tiered_context``: 4096 under 23 GiB,
  32768 from 23 GiB, 262144 from 47 GiB), always capped at the model's training length;
- grown for a prompt that needs more (``grown_context``): an agent sends a system prompt and
  tools of 10-30k tokens. What the prompt needs (``ContextNeed``: its tokens and room for the
  answer) is rounded up to a power of two, so a conversation that grows turn by turn reloads
  its runner a few times at most (8k, 16k, 32k), never at every turn, and capped at the
  training length. A runner with more context than a request needs serves it: a small
  request never reloads a large runner;
- stepped down to fit memory (``fit_context``): halved (by powers of two) down to a floor
  (the default, or 4096 under a tiered default, as newest Ollama lowers its automatic
  context when a load runs out of memory) until the estimate fits the machine with its idle
  runners counted as free (``reclaimable``: they would be evicted for it). Below the floor
  nothing changes: the load is decided as any other.

Only a need *counted* by the model's tokenizer reloads a loaded runner (``regrow_reason``),
and only for a prompt that needs more than the default (a smaller one is served by whatever
runner is loaded, as before); an estimate from the text's length (before any runner is held)
only sizes a new load. And a runner whose load already asked for that much, and got less
because memory was short, is not reloaded to ask again (``LoadedModel.context_asked``): a
prompt it cannot hold is cut, the newest turn kept, as ever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from corral import estimate
from corral.hardware import GpuInfo, SystemInfo
from corral.runner.settings import MIN_NUM_CTX, LoadSettings
from corral.scheduler.decisions import Estimator, Snapshot, held

__all__ = [
    "DEFAULT_CONTEXT",
    "ContextNeed",
    "answer_room",
    "default_context",
    "fit_context",
    "grown_context",
    "reclaimable",
    "regrow_reason",
    "tiered_context",
]

GiB = 1 << 30
#: the default context on small machines, and the floor of an automatic one
DEFAULT_CONTEXT = 4096
#: newest Ollama's tiers: total GPU memory from which a default context applies (its
#: thresholds are a little under 24 and 48 GiB, for cards that report slightly less)
_TIERS = ((47 * GiB, 262144), (23 * GiB, 32768))
#: room for the answer when the request sets no ``num_predict``, and at most
_ANSWER_ROOM = 2048
_MAX_ANSWER_ROOM = 4096


@dataclass(frozen=True, slots=True)
class ContextNeed:
    """What a request's prompt needs of a context: its tokens and room for the answer."""

    prompt_tokens: int
    answer_tokens: int = _ANSWER_ROOM
    #: counted by the model's tokenizer (a held runner's); else estimated from the text
    counted: bool = False

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.answer_tokens


def answer_room(num_predict: int) -> int:
    """Room kept for the answer: what ``num_predict`` asks for, but no more than 4096 (an
    agent's ``max_tokens`` of 32000 is a ceiling, not what it expects to get), and 2048
    when it is unset (-1) or "until the context is full" (-2)."""
    if num_predict > 0:
        return min(num_predict, _MAX_ANSWER_ROOM)
    return _ANSWER_ROOM


def tiered_context(gpus: Sequence[GpuInfo]) -> int:
    """Newest Ollama's default context by the GPUs' total memory (less the reserve each has,
    ``OLLAMA_GPU_OVERHEAD``): none or under 23 GiB 4096, from 23 GiB 32768, from 47 GiB
    262144."""
    total = sum(max(gpu.total_bytes - gpu.overhead_bytes, 0) for gpu in gpus)
    for floor, context in _TIERS:
        if total >= floor:
            return context
    return DEFAULT_CONTEXT


def default_context(configured: int, gpus: Sequence[GpuInfo]) -> int:
    """The context a request that sets none gets: ``OLLAMA_CONTEXT_LENGTH``, or the tier
    where that is 0."""
    return configured if configured > 0 else tiered_context(gpus)


def _power_of_two_at_least(value: int) -> int:
    return 1 << max(value - 1, 1).bit_length()


def grown_context(base: int, need: ContextNeed | None, limit: int) -> int:
    """The automatic context for a prompt: ``base``, or the power of two that holds what
    ``need`` asks for where that is more; at most ``limit`` (the training length), at least
    ``MIN_NUM_CTX``."""
    wanted = base
    if need is not None and need.total > base:
        wanted = _power_of_two_at_least(need.total)
    return max(min(wanted, limit), MIN_NUM_CTX)


def regrow_reason(loaded: int, wanted: int, asked: int, base: int) -> str:
    """Why a loaded runner of ``loaded`` tokens of context must make way for one of
    ``wanted`` for a counted prompt, or ``""``: only for a prompt that needs more than the
    default (``base``; a smaller prompt is served by whatever runner is loaded, as before),
    not when the runner has enough, nor when its own load asked for as much (``asked``)
    and memory gave it less."""
    if wanted <= base or wanted <= loaded or wanted <= asked:
        return ""
    return f"the prompt needs a context of {wanted} (num_ctx {loaded})"


def _step_down(num_ctx: int, floor: int) -> int:
    """The next smaller context to try: the power of two below ``num_ctx``, not under
    ``floor``."""
    below = 1 << ((num_ctx - 1).bit_length() - 1)
    return max(below, floor)


def fit_context(
    config: LoadSettings, floor: int, system: SystemInfo, plan: Estimator
) -> LoadSettings:
    """``config`` with the largest automatic context, from its own down to ``floor``, whose
    estimate (with one slot where ``num_parallel`` is automatic) fits ``system``; ``floor``
    when none does (the usual fit decision takes it from there)."""
    num_ctx = config.num_ctx
    if num_ctx <= floor:
        return config
    slots = max(config.num_parallel, 1)
    while num_ctx > floor:
        trial = replace(config, num_ctx=num_ctx, num_parallel=slots)
        if estimate.fits(plan(trial, system), system, wanted_gpu_layers=config.num_gpu):
            return replace(config, num_ctx=num_ctx)
        num_ctx = _step_down(num_ctx, floor)
    return replace(config, num_ctx=floor)


def reclaimable(system: SystemInfo, snapshot: Snapshot, path: str) -> SystemInfo:
    """``system`` as a load of ``path`` could have it by evicting every idle runner: their
    memory counts as free, that of busy runners and of other loads under way does not
    (``decisions.available`` with the idle runners gone)."""
    idle = [r for r in snapshot.runners if r.idle]
    busy = [r for r in snapshot.runners if not r.idle and not r.unloading]
    others = held(snapshot, path)
    promised = sum(r.estimate.ram_bytes for r in busy) + sum(p.ram_bytes for p in others)
    memory = system.memory
    back = sum(r.estimate.ram_bytes for r in idle)
    free = max(min(memory.free_bytes + back, memory.total_bytes - promised), 0)
    delta: dict[str, int] = {}

    def count(plan: estimate.Estimate, sign: int) -> None:
        for gpu_id, size in zip(plan.gpu_ids, plan.gpu_bytes, strict=True):
            delta[gpu_id] = delta.get(gpu_id, 0) + sign * size

    for runner in idle:
        count(runner.estimate, 1)
    for other in others:
        count(other, -1)
    gpus = tuple(
        replace(g, free_bytes=min(max(g.free_bytes + delta.get(g.id, 0), 0), g.total_bytes))
        for g in system.gpus
    )
    return replace(system, gpus=gpus, memory=replace(memory, free_bytes=free))
