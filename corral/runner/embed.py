"""Embeddings in the runner process: a second llama.cpp context on the engine's model.

Why a second context: the chat engine's context is built for generation (logits, one KV
buffer per slot); embeddings want pooled hidden states instead. The model's weights are
shared, so the extra cost is this context's buffers, created on the first request only.

Pooling: the model's own (``bert.pooling_type`` in a converted sentence-transformers model);
a causal chat model has none, so it gets mean pooling over the last hidden states, as
Ollama gives. Vectors come back as llama.cpp pools them, not normalised: the server decides
(``/api/embed`` normalises, ``/api/embeddings`` does not).

Batching: inputs are packed into as few ``llama_decode`` calls as fit, one sequence id per
input, up to ``batch_tokens`` tokens and ``max_sequences`` inputs per call (an encoder sees
every sequence of a call at once, masked per sequence). A single input may be as long as
the context. Each call takes the same per-step CPU turn as the chat engine's decode steps,
so an embedding batch and a chat stream on two runners do not oversubscribe the cores.
Threads: ``num_thread`` where the model or request sets it; otherwise the CPUs of the
affinity mask, less those other processes kept busy during the recent decode calls
(``_FreeCores``), since llama.cpp's spinning barriers stall when a thread loses its core.

Rerankers (RANK pooling: a converted cross-encoder) score pairs instead: ``rerank`` builds
one (query, document) pair per sequence (``rerank.py`` says how) and reads each pooled row's
first value; ``embed`` on a reranker, or ``rerank`` on any other model, is a
``NotSupportedError`` (the server answers 400).

Thread safety: ``embed`` and ``rerank`` are blocking and serialised by a lock; the server
calls them from a worker thread while the engine thread keeps decoding its own context.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as llama
import numpy as np

from corral.engine.features import usable_cpus
from corral.runner.engine import Engine, LoadError, _FileTurn
from corral.runner.rerank import (
    Pair,
    PairBuilder,
    PairFormat,
    QueryTooLongError,
    SegmentEmbeddings,
    TruncationRefusedError,
    model_is_reranker,
)

__all__ = [
    "EmbedOutput",
    "Embedder",
    "InputTooLongError",
    "NotSupportedError",
    "RerankOutput",
]

logger = logging.getLogger(__name__)

#: tokens per decode call (256-512 measured best for MiniLM on 2 cores with flash attention,
#: 1024 and 2048 slower): larger calls make larger matrix products, but an encoder's
#: attention spans the whole call (masked), so its cost grows with the square of this
DEFAULT_BATCH_TOKENS = 512
DEFAULT_MAX_SEQUENCES = 64


class InputTooLongError(ValueError):
    """An input is longer than the context and truncation was not allowed."""

    def __init__(self, message: str = "the input length exceeds the context length") -> None:
        super().__init__(message)


class NotSupportedError(ValueError):
    """The model cannot do what was asked: embeddings from a reranker, or the reverse."""


@dataclass(frozen=True, slots=True)
class RerankOutput:
    scores: list[float]  # one per document, in order: the first value of each pooled row
    prompt_eval_count: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class EmbedOutput:
    vectors: np.ndarray[Any, Any]  # float32, one row per input, as pooled (not normalised)
    prompt_eval_count: int
    duration_s: float


class _FreeCores:
    """How many of this process's CPUs the rest of the machine leaves free, measured over
    the embedding context's own decode calls (``/proc/stat`` for the CPUs in the affinity
    mask, less this process's CPU time).

    Why: llama.cpp's threads meet at a spinning barrier after every graph node, so a thread
    that another busy process has pushed off its core stalls the others. With one other
    process keeping a core of two busy, all-MiniLM at batch 256 measured 46 embeddings/s on
    two threads and 114 on one; with the machine free, two threads give ~200."""

    #: seconds of decode calls a reading spans (``/proc/stat`` counts 10 ms ticks)
    WINDOW_S = 0.1

    def __init__(self, cpus: list[int], ticks_per_s: float = 100.0) -> None:
        self.cpus = cpus
        self.ticks_per_s = ticks_per_s
        self.others = 0.0  # cores the rest of the machine keeps busy (smoothed)
        self._busy = self._wall = self._own = 0.0
        self._start: tuple[float, float, float] | None = None

    @classmethod
    def of_this_process(cls) -> _FreeCores | None:
        """``None`` where the machine does not say (not Linux, no ``/proc``), or for one CPU."""
        try:
            cpus = sorted(os.sched_getaffinity(0))
            probe = cls(cpus, float(os.sysconf("SC_CLK_TCK")))
            if len(cpus) < 2 or probe._busy_s() is None:
                return None
        except (AttributeError, OSError, ValueError):
            return None
        return probe

    def _busy_s(self) -> float | None:
        """CPU-seconds the affinity CPUs have spent busy since boot."""
        wanted = {f"cpu{n}" for n in self.cpus}
        total, seen = 0, 0
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                fields = line.split()
                if fields and fields[0].decode() in wanted:
                    # user nice system idle iowait irq softirq steal: all but idle and iowait
                    values = [int(v) for v in fields[1:9]]
                    total += sum(values) - values[3] - values[4]
                    seen += 1
        return total / self.ticks_per_s if seen == len(wanted) else None

    def begin(self) -> None:
        busy = self._busy_s()
        if busy is not None:
            self._start = (busy, time.perf_counter(), time.process_time())

    def end(self) -> None:
        if self._start is None:
            return
        busy = self._busy_s()
        if busy is None:
            return
        busy0, wall0, own0 = self._start
        self._start = None
        self._busy += busy - busy0
        self._wall += time.perf_counter() - wall0
        self._own += time.process_time() - own0
        if self._wall >= self.WINDOW_S:
            others = max(0.0, (self._busy - self._own) / self._wall)
            self.others = 0.5 * self.others + 0.5 * others
            self._busy = self._wall = self._own = 0.0

    def threads(self, most: int) -> int:
        """Threads for the next call: the CPUs left free, rounded, at least one."""
        return max(1, min(most, int(most - self.others + 0.5)))


class Embedder:
    """Owns the embedding context of one runner; created lazily by the first ``embed``."""

    def __init__(
        self,
        engine: Engine,
        *,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        max_sequences: int = DEFAULT_MAX_SEQUENCES,
    ) -> None:
        self.engine = engine
        self.batch_tokens = batch_tokens
        self.max_sequences = max(1, min(max_sequences, int(llama.llama_max_parallel_sequences())))
        self._lock = threading.Lock()
        self._ctx: Any = None
        self._batch: Any = None
        self._capacity = 0
        self.n_embd = 0
        self.n_out = 0  # values per pooled row: n_embd, or a reranker's label count
        self._reranker: bool | None = None
        self._pairs: PairBuilder | None = None
        self._segments: SegmentEmbeddings | None = None
        self._embd_batch: Any = None
        # threads per call: the configured count, or fewer while other processes keep this
        # process's CPUs busy (only when num_thread was left to the default)
        self._threads_most = engine.settings.num_thread or usable_cpus()
        self._threads = self._threads_most
        self._free = None if engine.settings.num_thread else _FreeCores.of_this_process()
        cpu_lock = engine.settings.cpu_lock_path
        self._cpu_turn: contextlib.AbstractContextManager[object] = (
            _FileTurn(cpu_lock) if cpu_lock else contextlib.nullcontext()
        )

    @property
    def max_input_tokens(self) -> int:
        """The longest input, in tokens: the runner's context per slot (which the scheduler
        capped at the model's training length when it built the load settings)."""
        return self.engine.settings.num_ctx

    @property
    def is_reranker(self) -> bool:
        """Whether the model scores pairs (RANK pooling) rather than embeds."""
        if self._reranker is None:
            self._reranker = model_is_reranker(self.engine._model)
        return self._reranker

    # ---- public ----------------------------------------------------------------------

    def tokenize(self, text: str, *, truncate: bool, max_tokens: int | None = None) -> list[int]:
        """The tokens of one input, cut to the context (keeping the closing SEP/EOS)."""
        tokens = self.engine.tokenize(text, add_special=True, parse_special=False)
        return self._fit(tokens, truncate=truncate, max_tokens=max_tokens)

    def _fit(self, tokens: list[int], *, truncate: bool, max_tokens: int | None) -> list[int]:
        """``tokens`` cut to the longest input allowed, or ``InputTooLongError``.

        Token-id inputs (OpenAI's token arrays) come here as given: no BOS/CLS is added,
        since the client chose every token, as llama.cpp's server does with them."""
        if not tokens:
            tokens = [self._filler_token()]
        limit = self.max_input_tokens
        if max_tokens is not None and max_tokens > 0:
            limit = min(limit, max_tokens)
        if len(tokens) <= limit:
            return tokens
        if not truncate:
            raise InputTooLongError()
        closing = tokens[-1] if tokens[-1] in self._closing_tokens() else None
        cut = tokens[:limit]
        if closing is not None:
            cut[-1] = closing
        return cut

    def embed(
        self,
        inputs: Sequence[str | list[int]],
        *,
        truncate: bool = True,
        max_tokens: int | None = None,
    ) -> EmbedOutput:
        """Pooled vectors of ``inputs`` (texts or token-id lists, ids already checked against
        the vocabulary), in order. ``InputTooLongError``, ``NotSupportedError``,
        ``RuntimeError``."""
        if self.is_reranker:
            raise NotSupportedError(
                "this model is a reranker: it scores query and document pairs and has no"
                " embeddings; use /api/rerank"
            )
        started = time.perf_counter()
        sequences = [
            self.tokenize(item, truncate=truncate, max_tokens=max_tokens)
            if isinstance(item, str)
            else self._fit(list(item), truncate=truncate, max_tokens=max_tokens)
            for item in inputs
        ]
        with self._lock:
            self._ensure_context()
            vectors = np.zeros((len(sequences), self.n_embd), dtype=np.float32)
            for group in self._groups(sequences):
                self._decode_group(group, sequences, vectors)
        return EmbedOutput(
            vectors=vectors,
            prompt_eval_count=sum(len(s) for s in sequences),
            duration_s=time.perf_counter() - started,
        )

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        max_tokens: int | None = None,
    ) -> RerankOutput:
        """The relevance score of each document for ``query``, in order (higher: more
        relevant; a raw score, as the model's head gives it). ``NotSupportedError`` for a
        model that is not a reranker, ``InputTooLongError``, ``RuntimeError``."""
        if not self.is_reranker:
            raise NotSupportedError(
                "this model does not support reranking: it needs a cross-encoder (a"
                " reranker with a classification head)"
            )
        started = time.perf_counter()
        limit = self.max_input_tokens
        if max_tokens is not None and max_tokens > 0:
            limit = min(limit, max_tokens)
        with self._lock:
            self._ensure_context()
            builder = self._pair_builder()
            head = [] if builder.template is not None else builder.query_part(query)
            try:
                pairs = [
                    builder.build(query, head, doc, limit=limit, truncate=truncate)
                    for doc in documents
                ]
            except TruncationRefusedError as exc:
                raise InputTooLongError() from exc
            except QueryTooLongError as exc:
                raise InputTooLongError(str(exc)) from exc
            sequences = [pair.tokens for pair in pairs]
            scores = np.zeros((len(pairs), self.n_out), dtype=np.float32)
            for group in self._groups(sequences):
                self._decode_group(group, sequences, scores, pairs=pairs)
        return RerankOutput(
            scores=[float(row[0]) for row in scores],
            prompt_eval_count=sum(len(s) for s in sequences),
            duration_s=time.perf_counter() - started,
        )

    def close(self) -> None:
        with self._lock:
            if self._batch is not None:
                llama.llama_batch_free(self._batch)
                self._batch = None
            if self._embd_batch is not None:
                llama.llama_batch_free(self._embd_batch)
                self._embd_batch = None
            if self._ctx is not None:
                llama.llama_free(self._ctx)
                self._ctx = None

    # ---- internals ---------------------------------------------------------------------

    def _vocab(self) -> Any:
        return self.engine._vocab

    def _filler_token(self) -> int:
        vocab = self._vocab()
        for token in (llama.llama_vocab_bos(vocab), llama.llama_vocab_eos(vocab)):
            if token >= 0:
                return int(token)
        return 0

    def _closing_tokens(self) -> set[int]:
        vocab = self._vocab()
        closing = set()
        if llama.llama_vocab_get_add_sep(vocab):
            closing.add(int(llama.llama_vocab_sep(vocab)))
        if llama.llama_vocab_get_add_eos(vocab):
            closing.add(int(llama.llama_vocab_eos(vocab)))
        return {t for t in closing if t >= 0}

    def _ensure_context(self) -> None:
        if self._ctx is not None:
            return
        model = self.engine._model
        self._capacity = max(self.batch_tokens, self.max_input_tokens)
        if self.is_reranker:  # RANK even where the GGUF names only the labels
            ctx = self._new_context(model, llama.LLAMA_POOLING_TYPE_RANK)
        else:
            ctx = self._new_context(model, llama.LLAMA_POOLING_TYPE_UNSPECIFIED)
        if llama.llama_pooling_type(ctx) == llama.LLAMA_POOLING_TYPE_NONE:
            # a causal model has no pooling of its own: mean over the last hidden states
            llama.llama_free(ctx)
            ctx = self._new_context(model, llama.LLAMA_POOLING_TYPE_MEAN)
        self._ctx = ctx
        self._threads = self._threads_most
        self.n_embd = int(llama.llama_model_n_embd(model))
        self.n_out = int(llama.llama_model_n_cls_out(model)) if self.is_reranker else self.n_embd
        self._batch = llama.llama_batch_init(self._capacity, 0, 1)
        logger.info(
            "embedding context: %d tokens, %d sequences, pooling %d",
            self._capacity,
            self.max_sequences,
            llama.llama_pooling_type(ctx),
        )

    def _new_context(self, model: Any, pooling: int) -> Any:
        cfg = self.engine.settings
        params = llama.llama_context_default_params()
        params.n_ctx = self._capacity
        params.n_batch = self._capacity
        params.n_ubatch = self._capacity  # an encoder needs each input whole in one ubatch
        params.n_seq_max = self.max_sequences
        threads = cfg.num_thread or usable_cpus()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = pooling
        params.kv_unified = True  # any one sequence may use the whole context
        # Flash attention never materialises the call's (tokens x tokens) masked scores,
        # which dominate when many short inputs share a call: all-MiniLM, 256 inputs of
        # ~20 tokens on 2 cores, 70 -> 200 embeddings/s, the same vectors (cosine 0.9999996).
        params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.no_perf = True
        ctx = llama.llama_init_from_model(model, params)
        if not ctx:  # a backend without flash attention for this model: the plain kernels
            params.flash_attn_type = llama.LLAMA_FLASH_ATTN_TYPE_DISABLED
            ctx = llama.llama_init_from_model(model, params)
        if not ctx:
            raise LoadError("failed to create the embedding context (out of memory?)")
        try:
            self.engine.apply_adapters(ctx)  # a LoRA model embeds as it generates
        except LoadError:
            llama.llama_free(ctx)
            raise
        return ctx

    def _groups(self, sequences: list[list[int]]) -> list[list[int]]:
        """Indices of ``sequences`` packed into decode calls, in order."""
        groups: list[list[int]] = []
        current: list[int] = []
        used = 0
        for index, tokens in enumerate(sequences):
            full = used + len(tokens) > self._capacity or len(current) >= self.max_sequences
            if current and full:
                groups.append(current)
                current, used = [], 0
            current.append(index)
            used += len(tokens)
        if current:
            groups.append(current)
        return groups

    def _pair_builder(self) -> PairBuilder:
        """The pair format, and the token-type rows where the model has them (first use)."""
        if self._pairs is None:
            engine = self.engine
            self._pairs = PairBuilder(
                PairFormat.of(engine._model, self._vocab()),
                lambda text, special, parse: engine.tokenize(
                    text, add_special=special, parse_special=parse
                ),
            )
            n_embd = int(llama.llama_model_n_embd(engine._model))
            if self._pairs.wordpiece and self._pairs.template is None and not engine._adapters:
                self._segments = SegmentEmbeddings.load(engine.settings.model_path, n_embd)
            logger.info(
                "reranking: %s pairs, %s",
                "templated" if self._pairs.template else "tokenizer",
                "document as token type 1" if self._segments else "token type 0",
            )
        return self._pairs

    def _decode_group(
        self,
        group: list[int],
        sequences: list[list[int]],
        vectors: np.ndarray[Any, Any],
        *,
        pairs: list[Pair] | None = None,
    ) -> None:
        """Decode ``group``'s sequences in one call; their pooled rows into ``vectors``.
        Reranking pairs go in as input rows where the model has token types."""
        segments = self._segments if pairs is not None else None
        if segments is not None and self._embd_batch is None:
            self._embd_batch = llama.llama_batch_init(self._capacity, segments.n_embd, 1)
        batch = self._embd_batch if segments is not None else self._batch
        rows = None
        if segments is not None and pairs is not None:
            rows = np.ctypeslib.as_array(batch.embd, shape=(self._capacity, self.n_embd))
        n = 0
        for seq_id, index in enumerate(group):
            if rows is not None and segments is not None and pairs is not None:
                tokens = sequences[index]
                rows[n : n + len(tokens)] = segments.rows(pairs[index])
            for pos, token in enumerate(sequences[index]):
                if rows is None:
                    batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq_id
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        memory = llama.llama_get_memory(self._ctx)
        free = self._free
        with self._cpu_turn:
            if free is not None:
                threads = free.threads(self._threads_most)
                if threads != self._threads:
                    llama.llama_set_n_threads(self._ctx, threads, threads)
                    self._threads = threads
                free.begin()
            status = llama.llama_decode(self._ctx, batch)
            if free is not None:
                free.end()
        try:
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status} while embedding")
            for seq_id, index in enumerate(group):
                pointer = llama.llama_get_embeddings_seq(self._ctx, seq_id)
                if not pointer:
                    raise RuntimeError("the model returned no pooled embedding")
                vectors[index] = np.ctypeslib.as_array(pointer, shape=(self.n_out,))
        finally:
            if memory:
                llama.llama_memory_clear(memory, True)
