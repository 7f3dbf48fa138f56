"""A request (:class:`Task`) and the slot that runs it (:class:`Slot`): the engine's state.

A slot is one llama.cpp sequence of the context. It keeps the tokens that are in its part
of the KV cache (``cached``) after its task ends, so the next task goes to the free slot
sharing the longest prefix with its prompt (:func:`pick_slot`) and only the rest is
evaluated. A prompt longer than the context is cut first (:func:`fit_prompt`): its first
``num_keep`` tokens and its end stay, as Ollama's runner does.

Only the engine thread touches a slot. The decode loop reads and writes these fields
directly; the methods here run once per request, never per token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.runner.events import TokenLogprob
from corral.runner.sampling import free_sampler
from corral.runner.text import StopMatcher, Utf8Assembler

__all__ = ["Emit", "Slot", "Task", "common_prefix", "fit_prompt", "pick_slot", "take_logprobs"]

logger = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
"""Where a task's events go, in their wire form: token chunks and the last event are
``runner/events.py``'s ``CompletionEvent``; a request the engine refuses or cannot finish
ends with ``{"error", "status"?}`` instead. A plain dict: the receiver writes it as JSON."""


@dataclass(slots=True)
class Task:
    """One completion request. ``emit`` is called from the engine thread."""

    tokens: list[int]
    options: dict[str, Any]
    emit: Emit
    grammar: str | None = None
    return_tokens: bool = False
    #: alternatives per token when the request wants logprobs (0: the sampled token only);
    #: -1: none, and the decode loop does no extra work for this task
    logprobs: int = -1
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    #: called (from the engine thread) once the engine will never touch the task again
    on_finished: Callable[[], None] | None = None

    def finished(self) -> None:
        if self.on_finished is not None:
            self.on_finished()


@dataclass(slots=True)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)
    last_used: float = 0.0
    task: Task | None = None
    prompt: list[int] = field(default_factory=list)
    n_past: int = 0
    pending_token: int | None = None
    sampler: Any = None
    generated: list[int] = field(default_factory=list)
    utf8: Utf8Assembler = field(default_factory=Utf8Assembler)
    stops: StopMatcher = field(default_factory=lambda: StopMatcher(()))
    num_predict: int = -1
    num_keep: int = 4
    prompt_eval_count: int = 0
    t_start: float = 0.0
    t_first: float = 0.0
    batch_index: int = -1
    #: logprob entries of sampled tokens whose text is not emitted yet (held by UTF-8 or
    #: stop-string matching): they go out with that text, or are dropped with a stop string
    logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return self.task is not None

    def assign(
        self,
        task: Task,
        prompt: list[int],
        *,
        reuse: int,
        num_keep: int,
        num_predict: int,
        sampler: Any,
    ) -> None:
        """Take ``task``: its first ``reuse`` tokens of ``prompt`` are already in the cache
        (the engine has removed the rest of the sequence), the rest is to be read."""
        self.task = task
        self.cached = self.cached[:reuse]
        self.prompt = prompt
        self.n_past = reuse
        self.pending_token = None
        self.generated = []
        self.logprobs = []
        self.utf8 = Utf8Assembler()
        self.stops = StopMatcher(list(task.options.get("stop") or ()))
        self.num_keep = num_keep
        self.num_predict = num_predict
        self.prompt_eval_count = 0
        self.t_start = time.perf_counter()
        self.t_first = 0.0
        self.free_sampler()
        self.sampler = sampler

    def release(self) -> None:
        """The task is over (done, failed or cancelled): tell it, and free the slot.

        The sampled-but-not-decoded token is not in the cache: ``cached`` stays consistent.
        """
        if self.task is not None:
            self.task.finished()
        self.task = None
        self.pending_token = None
        self.logprobs = []
        self.last_used = time.monotonic()
        self.free_sampler()

    def free_sampler(self) -> None:
        if self.sampler is not None:
            free_sampler(self.sampler)
            self.sampler = None


def take_logprobs(slot: Slot) -> list[TokenLogprob]:
    """The slot's held logprob entries, which go out now with their text."""
    entries = slot.logprobs
    slot.logprobs = []
    return entries


def pick_slot(free: list[Slot], tokens: list[int]) -> Slot:
    """The free slot whose cache shares the longest prefix with ``tokens``, else the least
    recently used one."""
    best: Slot | None = None
    best_len = 0
    for slot in free:
        length = common_prefix(slot.cached, tokens)
        if length > best_len:
            best, best_len = slot, length
    if best is not None:
        return best
    return min(free, key=lambda s: s.last_used)


def common_prefix(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


def fit_prompt(
    tokens: list[int], requested_keep: int, n_ctx: int, add_bos: bool
) -> tuple[list[int], int]:
    """The prompt a slot of ``n_ctx`` tokens reads, and its ``num_keep`` (the request's
    ``num_keep`` option is ``requested_keep``)."""
    keep = _num_keep(requested_keep, len(tokens), n_ctx, add_bos)
    return _truncate_prompt(tokens, n_ctx, keep), keep


def _num_keep(requested: int, prompt_length: int, n_ctx: int, add_bos: bool) -> int:
    """Tokens at the start of a slot that truncation and context shifts never drop, as
    Ollama's runner counts them: -1 keeps the whole prompt, the BOS token comes on top, and
    at least one token must stay discardable."""
    keep = prompt_length if requested < 0 else requested
    if add_bos:
        keep += 1
    return max(min(keep, n_ctx - 1), 0)


def _truncate_prompt(tokens: list[int], n_ctx: int, num_keep: int) -> list[int]:
    """Cut a prompt longer than the context: keep its first ``num_keep`` tokens and its
    end, dropping what lies between (the first generated token then shifts the context)."""
    if len(tokens) <= n_ctx:
        return list(tokens)
    discard = len(tokens) - n_ctx
    kept = tokens[:num_keep] + tokens[num_keep + discard :]
    logger.warning(
        "truncating input prompt: limit %d, prompt %d, keep %d, new %d",
        n_ctx,
        len(tokens),
        num_keep,
        len(kept),
    )
    return kept
