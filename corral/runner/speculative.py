"""Speculative decoding: a small draft model guesses tokens, the target checks them in one batch.

A model may carry a draft model of the same vocabulary (Modelfile ``DRAFT``). The runner
loads it beside the target (:class:`Drafter`: its own llama.cpp context, one sequence per
slot) and, at each decode step, for every slot that is generating:

1. brings the draft's cache of that slot up to the slot's tokens (the longest common prefix
   stays; the rest is read, in chunks that fill the draft's batch);
2. lets the draft guess up to ``draft_num_predict`` tokens greedily (default 4, as Ollama;
   0 turns drafting off for a request), stopping early at a guess whose probability is
   under ``DRAFT_P_MIN`` (llama-server's ``--draft-p-min``): a doubtful guess costs a
   target row and is likely rejected. The slots draft together: one draft batch per
   guessed position, a token for each slot still guessing;
3. the engine puts the slot's pending token and the guesses in the same target batch, each
   with logits (:func:`add_drafts`);
4. :func:`verify` samples the target at each row with the request's own sampler chain, in
   order, and keeps a guess only while the target's sampler picks that very token; the
   first disagreement (or the row after the last guess) gives the target's own token, as a
   step without a draft would have. The rejected guesses' cells leave the cache
   (``llama_memory_seq_rm``).

Why the output does not change: every emitted token is drawn by the target's sampler chain
from the target's logits at its position, with the chain (penalties, grammar, the seeded
draw) advanced by exactly the tokens before it, as without a draft. Greedy output is the
same; sampled output follows the target's distribution and, for a seed, the same draws.
The one difference is numeric: the target reads several positions in one batch, and
llama.cpp's CPU kernels may round a batch differently from a single row (repacked Q4_0/Q4_K
weights go through 4-row kernels in a batch of 4 rows or more), so a near tie between two
tokens could fall the other way, as it can when other slots share a step. The tests compare
greedy output with and without a draft token for token (SmolLM2 Q4_1, Gemma 3 Q4_K_M).

What it costs: each step runs the draft once per guessed position and the target once on a
wider batch. It pays when the target is much slower per token than the draft and the draft
agrees often; a model drafting for itself on a CPU keeps (nearly) every guess and is still
slower (``bench/bench_draft.py``).

Where it is off: a vision model (image chunks are no tokens a draft could read) and a
recurrent or hybrid target (its state cannot drop a rejected guess); the engine logs why.
A recurrent draft is refused at load.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as llama
import numpy as np

from corral.runner.settings import LoadSettings
from corral.runner.slots import Slot, batch_add, common_prefix, keep_prefix

__all__ = [
    "DRAFT_NUM_PREDICT_DEFAULT",
    "DRAFT_NUM_PREDICT_MAX",
    "DRAFT_P_MIN",
    "Drafter",
    "add_drafts",
    "verify",
]

logger = logging.getLogger(__name__)

#: tokens drafted per step when the request does not say (Ollama's ``draft_num_predict``)
DRAFT_NUM_PREDICT_DEFAULT = 4
#: the most a request may ask for (llama-server's default ``--draft-max``)
DRAFT_NUM_PREDICT_MAX = 16
#: a draft guess less likely than this (under the draft's own softmax) ends the draft
DRAFT_P_MIN = 0.75


class DraftLoadError(RuntimeError):
    """The draft model could not be loaded, or does not share the target's vocabulary."""


@dataclass(slots=True)
class _Job:
    """One slot's draft this step."""

    seq_id: int
    tokens: list[int]  # the slot's tokens: its cache, then its pending token
    limit: int  # guesses wanted
    row: int = -1  # the draft batch row holding the logits of the last token read
    guesses: list[int] = field(default_factory=list)


class Drafter:
    """The draft model of one runner, its context, and what each slot's sequence holds."""

    def __init__(
        self,
        settings: LoadSettings,
        *,
        n_vocab: int,
        cpu_turn: contextlib.AbstractContextManager[object],
    ) -> None:
        self._settings = settings
        self._n_vocab = n_vocab
        self._cpu_turn = cpu_turn
        self._model: Any = None
        self._ctx: Any = None
        self._memory: Any = None
        self._batch: Any = None
        self._n_swa = 0  # the draft's sliding window (its cache is window-sized)
        self._capacity = settings.batch_size
        #: the tokens in the draft's cache, per sequence (slot)
        self._cached: list[list[int]] = [[] for _ in range(max(settings.num_parallel, 1))]
        #: guesses made and guesses the target kept, since load (for tests and benches)
        self.guessed = 0
        self.accepted = 0

    def load(self, ctx_params: Any) -> None:
        """Load the draft with the target's context parameters; ``DraftLoadError`` if it
        cannot be, or if its vocabulary differs from the target's."""
        path = self._settings.draft_path
        assert path
        params = llama.llama_model_default_params()
        # all of a small draft on the GPU when the target uses one, else none
        params.n_gpu_layers = 999 if self._settings.num_gpu_layers > 0 else 0
        params.main_gpu = self._settings.main_gpu
        model = llama.llama_model_load_from_file(path.encode(), params)
        if not model:
            raise DraftLoadError(f"failed to load draft model '{path}'")
        self._model = model
        if llama.llama_model_is_recurrent(model) or llama.llama_model_is_hybrid(model):
            self.close()  # its state cannot drop a rejected guess: every step would re-read
            raise DraftLoadError(
                f"draft model '{path}' is recurrent: a draft must be a transformer"
            )
        vocab = llama.llama_model_get_vocab(model)
        n_vocab = llama.llama_vocab_n_tokens(vocab)
        if n_vocab != self._n_vocab:
            self.close()
            raise DraftLoadError(
                f"draft model '{path}' has {n_vocab} tokens, the model {self._n_vocab}:"
                " a draft must share the model's vocabulary"
            )
        ctx = llama.llama_init_from_model(model, ctx_params)
        if not ctx:
            self.close()
            raise DraftLoadError("failed to create the draft model's context (out of memory?)")
        self._ctx = ctx
        self._memory = llama.llama_get_memory(ctx)
        self._n_swa = int(llama.llama_model_n_swa(model))
        self._batch = llama.llama_batch_init(self._capacity, 0, 1)

    def close(self) -> None:
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama.llama_model_free(self._model)
            self._model = None

    # ---- drafting ----------------------------------------------------------------------

    def propose(self, slots: Iterable[Slot], *, num_ctx: int, room: int) -> dict[int, list[int]]:
        """Guesses per slot (by ``seq_id``) for this step; slots without guesses are absent.

        ``room`` is how many rows the target batch has left for guesses after one token per
        generating slot. A slot drafts only where the guesses fit its context and what it
        may still generate (``num_predict``).
        """
        jobs: list[_Job] = []
        for slot in slots:
            task = slot.task
            if task is None or task.cancelled or slot.pending_token is None:
                continue
            limit = _draft_limit(task.options, slot, num_ctx, room)
            if limit <= 0:
                continue
            room -= limit
            jobs.append(_Job(slot.seq_id, [*slot.cached, slot.pending_token], limit))
        if not jobs:
            return {}
        if not self._catch_up(jobs):
            return {}
        self._guess(jobs)
        self.guessed += sum(len(job.guesses) for job in jobs)
        return {job.seq_id: job.guesses for job in jobs if job.guesses}

    def verify(
        self, slot: Slot, guesses: list[int], memory: Any, sample: Callable[[Slot], None]
    ) -> None:
        """:func:`verify`, counted."""
        self.accepted += verify(slot, guesses, memory, sample)

    def _catch_up(self, jobs: list[_Job]) -> bool:
        """Read each job's tokens the draft's cache lacks; the last one with logits."""
        body: list[tuple[int, int, int, bool]] = []  # (seq_id, position, token, logits)
        lasts: list[tuple[int, int, int, bool]] = []
        for job in jobs:
            cached = self._cached[job.seq_id]
            keep = min(common_prefix(cached, job.tokens), len(job.tokens) - 1)
            keep = keep_prefix(self._memory, job.seq_id, keep, self._n_swa)
            del cached[keep:]
            for position in range(keep, len(job.tokens) - 1):
                body.append((job.seq_id, position, job.tokens[position], False))
            position = len(job.tokens) - 1
            lasts.append((job.seq_id, position, job.tokens[position], True))
        items = body + lasts
        # the chunks are cut so that the last one is full and holds every row with logits:
        # a later decode would overwrite an earlier one's logits
        first = len(items) % self._capacity or self._capacity
        chunks = [items[:first]] + [
            items[i : i + self._capacity] for i in range(first, len(items), self._capacity)
        ]
        for chunk in chunks:
            if not self._decode(chunk):
                return False
        last_chunk = chunks[-1]
        offset = len(last_chunk) - len(lasts)
        for row, job in enumerate(jobs):
            job.row = offset + row
        return True

    def _guess(self, jobs: list[_Job]) -> None:
        """Greedy guesses, position by position, the slots still guessing in one batch."""
        guessing = list(jobs)
        while guessing:
            batch: list[tuple[int, int, int, bool]] = []
            still: list[_Job] = []
            for job in guessing:
                token, probability = self._best(job.row)
                if probability < DRAFT_P_MIN:
                    continue
                job.guesses.append(token)
                if len(job.guesses) >= job.limit:
                    continue  # the last guess is read with the next step's catch-up
                job.row = len(batch)
                batch.append((job.seq_id, len(job.tokens) + len(job.guesses) - 1, token, True))
                still.append(job)
            if batch and not self._decode(batch):
                return
            guessing = still

    def _best(self, row: int) -> tuple[int, float]:
        """The draft's most likely next token at ``row`` and its probability."""
        pointer = llama.llama_get_logits_ith(self._ctx, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        best = int(logits.argmax())
        total = float(np.exp(logits - logits[best]).sum())
        return best, 1.0 / total

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> bool:
        batch = self._batch
        for index, (seq_id, position, token, logits) in enumerate(items):
            batch_add(batch, index, token, position, seq_id, logits)
        batch.n_tokens = len(items)
        with self._cpu_turn:
            status = llama.llama_decode(self._ctx, batch)
        if status != 0:
            # the draft is only a guess: forget its cache and go on without guesses
            logger.warning("draft decode failed with status %d; dropping its cache", status)
            for seq_id, cached in enumerate(self._cached):
                llama.llama_memory_seq_rm(self._memory, seq_id, 0, -1)
                cached.clear()
            return False
        for seq_id, position, token, _ in items:
            cached = self._cached[seq_id]
            if len(cached) == position:
                cached.append(token)
        return True


def _draft_limit(options: dict[str, Any], slot: Slot, num_ctx: int, room: int) -> int:
    """Guesses for a slot: the request's ``draft_num_predict``, within its context (the
    pending token and the guesses must fit without a shift), what it may still generate
    (the step emits up to one token more than the guesses) and the batch's room."""
    try:
        wanted = int(options.get("draft_num_predict", DRAFT_NUM_PREDICT_DEFAULT))
    except (TypeError, ValueError):
        wanted = DRAFT_NUM_PREDICT_DEFAULT
    limit = min(wanted, DRAFT_NUM_PREDICT_MAX, room, num_ctx - 1 - slot.n_past)
    if slot.num_predict >= 0:
        limit = min(limit, slot.num_predict - len(slot.generated) - 1)
    return limit


def add_drafts(batch: Any, index: int, slot: Slot, guesses: list[int]) -> int:
    """Put ``guesses`` in the target batch after the slot's pending token (which is at
    ``index - 1``, position ``slot.n_past - 1``), each with logits; the next free index."""
    for offset, token in enumerate(guesses):
        batch_add(batch, index + offset, token, slot.n_past + offset, slot.seq_id, True)
    return index + len(guesses)


def verify(slot: Slot, guesses: list[int], memory: Any, sample: Callable[[Slot], None]) -> int:
    """Sample the target at the pending token's row and each guess's, in order, keeping the
    guesses the target's sampler picks too; the cells of the rest leave the cache.

    ``slot.batch_index`` is the pending token's row; ``sample`` is the engine's own step
    (sample, emit, stop or finish). Returns how many guesses were accepted.
    """
    first_row = slot.batch_index
    accepted = 0
    for offset, guess in enumerate(guesses):
        slot.batch_index = first_row + offset
        sample(slot)
        if slot.task is None or slot.pending_token != guess:
            break
        # the target agrees: the guess's cell (already decoded) joins the slot's cache
        slot.cached.append(guess)
        slot.n_past += 1
        accepted += 1
    else:
        slot.batch_index = first_row + len(guesses)
        sample(slot)
    llama.llama_memory_seq_rm(memory, slot.seq_id, slot.n_past, -1)
    return accepted
