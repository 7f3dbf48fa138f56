"""A request (:class:`Task`) and the slot that runs it (:class:`Slot`): the engine's state.

A slot is one llama.cpp sequence of the context. It keeps the tokens that are in its part
of the KV cache (``cached``) after its task ends, so the next task goes to the free slot
sharing the longest prefix with its prompt (:func:`pick_slot`) and only the rest is
evaluated. A prompt longer than the context is cut first (:func:`fit_prompt`): its first
``num_keep`` tokens and its end stay, as Ollama's runner does; a request with ``truncate`` or
``shift`` false is refused instead (:func:`check_prompt_length`).

Only the engine thread touches a slot. The decode loop reads and writes these fields
directly; the methods here run once per request, never per token.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as llama

from corral.runner.events import TokenLogprob
from corral.runner.sampling import Sampler
from corral.runner.text import StopMatcher, Utf8Assembler

__all__ = [
    "INPUT_TOO_LONG",
    "MAX_TOKEN_REPEATS",
    "PROMPT_TOO_LONG",
    "Emit",
    "Slot",
    "StopWatch",
    "Task",
    "batch_add",
    "check_prompt_length",
    "common_prefix",
    "fit_prompt",
    "pick_slot",
    "prefix_donor",
    "take_logprobs",
]

logger = logging.getLogger(__name__)

#: a prompt shares at least this many more tokens with another slot's cache than with its
#: own: the engine copies that slot's KV cells instead of evaluating them again (a copy
#: between KV streams moves a whole stream's buffer: worth it for a long shared prefix such
#: as the same tool definitions in every chat, not for a few tokens)
MIN_PREFIX_COPY = 128

#: a generation whose last pieces of text (one per token, or per whole character) read the
#: same (spaces aside) more than this many times in a row is stuck in a loop and ends
#: (``stop``), as Ollama's "token repeat limit": a small model at a low temperature can
#: otherwise repeat one word or emoji until ``num_predict`` (10 contexts) runs out
MAX_TOKEN_REPEATS = 30

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
    #: a grammar to start after the thinking end marker (``grammar/deferred.py``)
    deferred: Any = None
    return_tokens: bool = False
    #: alternatives per token when the request wants logprobs (0: the sampled token only);
    #: -1: none, and the decode loop does no extra work for this task
    logprobs: int = -1
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)
    #: called (from the engine thread) once the engine will never touch the task again
    on_finished: Callable[[], None] | None = None
    #: false: a prompt longer than the context is refused (400), not cut
    truncate: bool = True
    #: false: a full context ends the generation (``length``) instead of shifting it
    shift: bool = True
    #: the prompt's images (``vision.VisionPrompt``): ``tokens`` then holds placeholders
    images: Any = None

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
    sampler: Sampler | None = None
    generated: list[int] = field(default_factory=list)
    utf8: Utf8Assembler = field(default_factory=Utf8Assembler)
    stops: StopWatch = field(default_factory=lambda: StopWatch(()))
    num_predict: int = -1
    num_keep: int = 4
    prompt_read: int = 0  # prompt tokens read into the cache (not held by it already)
    t_start: float = 0.0
    t_first: float = 0.0
    batch_index: int = -1
    #: logprob entries of sampled tokens whose text is not emitted yet (held by UTF-8 or
    #: stop-string matching): they go out with that text, or are dropped with a stop string
    logprobs: list[TokenLogprob] = field(default_factory=list)
    #: the last piece of text generated (stripped) and how many pieces in a row repeated it
    last_piece: str = ""
    piece_repeats: int = 0

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
        sampler: Sampler,
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
        self.stops = StopWatch(list(task.options.get("stop") or ()))
        self.num_keep = num_keep
        self.num_predict = num_predict
        self.prompt_read = 0
        self.last_piece = ""
        self.piece_repeats = 0
        self.t_start = time.perf_counter()
        self.t_first = 0.0
        self.free_sampler()
        self.sampler = sampler

    def stuck_repeating(self, piece: str) -> bool:
        """Note the text a generated token completed (a character of several tokens, such
        as an emoji, counts once, when whole); true once it is the same as the previous
        ``MAX_TOKEN_REPEATS`` + 1 pieces' (compared without surrounding spaces)."""
        piece = piece.strip()
        if piece == self.last_piece:
            self.piece_repeats += 1
        else:
            self.last_piece = piece
            self.piece_repeats = 0
        return self.piece_repeats > MAX_TOKEN_REPEATS

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
            self.sampler.free()
            self.sampler = None


def take_logprobs(slot: Slot) -> list[TokenLogprob]:
    """The slot's held logprob entries, which go out now with their text."""
    entries = slot.logprobs
    slot.logprobs = []
    return entries


def pick_slot(free: list[Slot], tokens: list[int]) -> Slot:
    """The free slot whose cache shares the longest prefix with ``tokens`` when that prefix
    is at least half of the slot's last prompt (the same request again, or the next turn of
    its conversation); else an empty slot, else the least recently used one.

    A short shared start (a system prompt's first words, a template's header) does not
    make a slot take a different conversation and lose the one it holds: a client's side
    requests (titles, tags) would otherwise evict a long chat, tools and all.
    """
    best: Slot | None = None
    best_len = 0
    for slot in free:
        length = common_prefix(slot.cached, tokens)
        if length > best_len:
            best, best_len = slot, length
    if best is not None and 2 * best_len >= min(len(best.prompt), len(best.cached)):
        return best
    empty = [slot for slot in free if not slot.cached]
    if empty:
        return empty[0]
    return min(free, key=lambda s: s.last_used)


def prefix_donor(slots: list[Slot], target: Slot, tokens: list[int]) -> Slot | None:
    """Another slot (busy or not) whose cache shares with ``tokens`` a prefix at least
    ``MIN_PREFIX_COPY`` tokens longer than ``target``'s does: its cells are worth copying
    into ``target`` (the same tools and system prompt, in a chat that landed elsewhere)."""
    own = common_prefix(target.cached, tokens)
    donor: Slot | None = None
    longest = own + MIN_PREFIX_COPY - 1
    for slot in slots:
        if slot is target or len(slot.cached) <= longest:
            continue
        length = common_prefix(slot.cached, tokens)
        if length > longest:
            donor, longest = slot, length
    return donor


def keep_prefix(memory: Any, seq_id: int, keep: int, n_swa: int) -> int:
    """Remove a sequence's cells from position ``keep`` on; how many leading cells are still
    usable: ``keep``, or 0 (the sequence cleared) when llama.cpp cannot cut there or when a
    sliding-window cache (``n_swa`` > 0, window-sized, its oldest cells overwritten as the
    window moves) no longer holds the window the next token at ``keep`` looks back on."""
    if keep > 0 and llama.llama_memory_seq_rm(memory, seq_id, keep, -1):
        if n_swa <= 0:
            return keep
        oldest = llama.llama_memory_seq_pos_min(memory, seq_id)
        if 0 <= oldest <= max(0, keep - n_swa):
            return keep
    llama.llama_memory_seq_rm(memory, seq_id, 0, -1)
    return 0


def batch_add(batch: Any, index: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    """Write row ``index`` of a llama.cpp batch: ``token`` at ``pos`` of sequence ``seq_id``."""
    batch.token[index] = token
    batch.pos[index] = pos
    batch.n_seq_id[index] = 1
    batch.seq_id[index][0] = seq_id
    batch.logits[index] = logits


def common_prefix(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    index = 0
    while index < limit and a[index] == b[index]:
        index += 1
    return index


class StopWatch:
    """``StopMatcher`` (text held while it could still become a stop string) that also
    says which stop string ended the text (``matched``): Anthropic's ``stop_sequence``.

    It keeps its own copy of the held text, so the matcher's internals stay its own: the
    text a feed shows is always a prefix of what was held plus what came in, and the stop
    string that matched starts right after it (the first one listed, where two start at
    the same place, as the matcher picks the earliest position in list order).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._matcher = StopMatcher(self._stops)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        buffer = self._held + text
        visible, stopped = self._matcher.feed(text)
        if stopped:
            self._held = ""
            at = len(visible)
            self.matched = next((s for s in self._stops if buffer.startswith(s, at)), None)
        else:
            self._held = buffer[len(visible) :]
        return visible, stopped

    def flush(self) -> str:
        self._held = ""
        return self._matcher.flush()


#: a prompt longer than the context with ``truncate: false`` (Ollama's runner's words)
INPUT_TOO_LONG = "the input length exceeds the context length"
#: a prompt longer than the context with ``shift: false`` (newest Ollama's words)
PROMPT_TOO_LONG = (
    "the prompt is longer than the context length currently available to the model; shorten"
    " the prompt, adjust the context length in settings, or use a model with a longer context"
    " length"
)


def check_prompt_length(length: int, n_ctx: int, *, truncate: bool, shift: bool) -> None:
    """Refuse (``ValueError``, a 400) a prompt of ``length`` tokens that a slot of ``n_ctx``
    cannot hold when the request forbade cutting it (``truncate: false``) or forbade the
    context shift that a cut prompt soon needs (``shift: false``), as Ollama does."""
    if length <= n_ctx:
        return
    if not truncate:
        raise ValueError(INPUT_TOO_LONG)
    if not shift:
        raise ValueError(PROMPT_TOO_LONG)


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
