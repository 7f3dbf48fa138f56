"""The inference engine of a runner process: one model, one context, N parallel slots.

One engine thread owns every llama.cpp object; the HTTP side only posts ``Task`` objects
and receives events through each task's callback. Each step builds one ``llama_batch``
holding the next token of every generating slot plus a chunk of the prompt of each slot
still reading its prompt (continuous batching: a new request joins at the next step, and a
long prompt is fed ``n_batch`` tokens at a time so it never stalls the others for long).

A slot keeps the tokens that are in its part of the KV cache. A new task goes to the free
slot whose cached tokens share the longest prefix with its prompt (else an empty or the
least recently used one: ``slots.pick_slot``) and only the rest of the prompt is evaluated:
chat turns re-read only new text. A long prefix held by another slot (the same tools and
system prompt in every chat of a client) is copied from it (``llama_memory_seq_cp``).

Context full: the prompt is cut (first ``num_keep`` tokens kept, whole blocks dropped after
them) and generation shifts the cache (drop half of what follows ``num_keep``), as Ollama;
a request with ``truncate: false`` or ``shift: false`` gets a 400 for a prompt that does not
fit, and ``shift: false`` ends the generation at a full context (``length``).

LoRA adapters (``LoadSettings.adapters``) are loaded with the model and set on the context once; the
decode loop does not see them. Logprobs are computed only for a task that asked
(``Task.logprobs``), from a view of the sampled row's logits (``logprobs.py``).

A request is a ``Task`` and its state while it runs a ``Slot`` (``slots.py``, with the choice
of slot and the prompt's truncation); its sampler chain is built by ``sampling.py``.

Threads: decoding runs with the GIL released, but on a 2-core machine any other busy thread
halves throughput, so the engine blocks on its queue when idle and nothing else spins.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import llama_cpp as llama
import numpy as np

from corral.engine.features import usable_cpus
from corral.runner import rpc
from corral.runner.events import CompletionEvent, TokenLogprob
from corral.runner.logprobs import token_logprobs
from corral.runner.sampling import GRAMMARS, make_sampler
from corral.runner.settings import SLIDING_WINDOW_PATTERNS, LoadSettings
from corral.runner.slots import (
    Slot,
    Task,
    batch_add,
    check_prompt_length,
    common_prefix,
    fit_prompt,
    keep_prefix,
    pick_slot,
    prefix_donor,
    take_logprobs,
)
from corral.runner.speculative import Drafter, DraftLoadError, add_drafts
from corral.runner.vision import Vision, VisionError, image_run_start, text_run

__all__ = ["GRAMMARS", "LLAMA_ERRORS", "Engine", "LoadError", "Task"]

logger = logging.getLogger(__name__)

#: ``logprobs.token_logprobs``, typed as what it builds (logprobs.py types it as a dict)
_token_logprob = cast(
    "Callable[[np.ndarray[Any, Any], int, int, Callable[[int], bytes]], TokenLogprob]",
    token_logprobs,
)


#: the last error lines llama.cpp logged in this process (filled by the log callback in
#: ``__main__``), so a load failure can say why instead of just "failed"
LLAMA_ERRORS: list[str] = []


class LoadError(RuntimeError):
    """The model file could not be loaded or the context could not be created."""

    def __init__(self, message: str) -> None:
        specific = [line for line in LLAMA_ERRORS if "error loading model" in line]
        reason = (specific or [line for line in LLAMA_ERRORS if line.strip()] or [""])[-1]
        super().__init__(f"{message}: {reason.strip()}" if reason else message)


_KV_TYPES = {"f16": llama.GGML_TYPE_F16, "q8_0": llama.GGML_TYPE_Q8_0, "q4_0": llama.GGML_TYPE_Q4_0}


class Engine:
    """Owns the model; ``start()`` loads it in the engine thread, ``submit()`` adds work."""

    def __init__(self, settings: LoadSettings) -> None:
        self.settings = settings
        self._queue: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._memory: Any = None
        self._batch: Any = None
        self._tensor_split: Any = None
        self._adapters: list[Any] = []
        self._drafter: Drafter | None = None  # a draft model: speculative decoding
        self.vision: Vision | None = None  # the projector of a vision model (vision.py)
        self._slots: list[Slot] = []
        self._waiting: list[Task] = []
        self._can_shift = False
        self._n_swa = 0  # the sliding window of the model's windowed layers (0: none)
        self._swa_shift = False  # a window-sized cache that _shift may still shift
        self._cpu_turn: contextlib.AbstractContextManager[object] = (
            _FileTurn(settings.cpu_lock_path)
            if settings.cpu_lock_path
            else contextlib.nullcontext()
        )
        self.n_ctx_train = 0
        self.n_vocab = 0
        self.add_bos = False
        self._rpc: rpc.RpcAttachment | None = None
        #: when the decode step under way began (None between steps): the RPC stall guard
        self.step_started: float | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def load(self) -> None:
        """Load model and context in the calling thread; raises ``LoadError``."""
        cfg = self.settings
        llama.llama_backend_init()
        model_params = llama.llama_model_default_params()
        model_params.n_gpu_layers = cfg.num_gpu_layers
        model_params.main_gpu = cfg.main_gpu
        if cfg.tensor_split:
            # llama.cpp reads one float per device it may use; the array must outlive the load
            self._tensor_split = _tensor_split(cfg.tensor_split)
            model_params.tensor_split = self._tensor_split
        if not cfg.use_mmap:
            model_params.load_mode = llama.LLAMA_LOAD_MODE_NONE
        if cfg.rpc_servers:  # the layers go to leased workers (see corral.runner.rpc)
            self._rpc = rpc.attach(model_params, cfg.rpc_servers, keep_output=cfg.rpc_keep_output)
        model = llama.llama_model_load_from_file(cfg.model_path.encode(), model_params)
        if not model:
            raise LoadError(f"failed to load model '{cfg.model_path}'")
        self._model = model
        self._load_adapters()
        self._vocab = llama.llama_model_get_vocab(model)
        self.n_ctx_train = llama.llama_model_n_ctx_train(model)
        self.n_vocab = llama.llama_vocab_n_tokens(self._vocab)
        self.add_bos = bool(llama.llama_vocab_get_add_bos(self._vocab))

        ctx_params = llama.llama_context_default_params()
        ctx_params.n_ctx = cfg.num_ctx * cfg.num_parallel
        ctx_params.n_batch = cfg.batch_size  # a token per slot at least, the context at most
        ctx_params.n_ubatch = cfg.batch_size
        ctx_params.n_seq_max = cfg.num_parallel
        threads = cfg.num_thread or usable_cpus()
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        # Flash attention (auto by default, as llama-server and Ollama) sums attention in
        # the order of the slot's KV cells, so a seeded sampled answer is reproducible for
        # the same request in the same cache state (the same request again, whatever else
        # runs), not across cache states: with part of its prompt cached in other cells, a
        # sampled answer may differ (OLLAMA_FLASH_ATTENTION=0 for that too, 15-25% slower).
        ctx_params.flash_attn_type = {
            True: llama.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            False: llama.LLAMA_FLASH_ATTN_TYPE_DISABLED,
            None: llama.LLAMA_FLASH_ATTN_TYPE_AUTO,  # on where the backend supports it
        }[cfg.flash_attention]
        kv_type = _KV_TYPES.get(cfg.kv_cache_type, llama.GGML_TYPE_F16)
        ctx_params.type_k = kv_type
        ctx_params.type_v = kv_type
        # A KV buffer per slot. A unified buffer made 4 streams faster without flash
        # attention (152 vs 110 tok/s aggregate on 2 cores, SmolLM2-135M), not with it (a
        # 4-token step 21-24 ms either way; the weights' dot products are 58% of it), loses
        # at many slots (16: 145 vs 177), and makes a slot's output depend on its neighbours
        # (attention over other slots' masked cells changes the float sums): the same seed
        # and prompt must give the same answer whatever else is running.
        ctx_params.kv_unified = False
        # Sliding-window layers keep a window-sized cache (n_swa + a batch, per slot), as
        # llama-server does, not a full-context one: Gemma 3 270M at 4096 context holds 3x
        # less KV, and a long prompt's window layers attend to 512 positions, not all.
        ctx_params.swa_full = False
        ctx_params.no_perf = True
        ctx_params.embeddings = cfg.embedding
        ctx = llama.llama_init_from_model(model, ctx_params)
        if not ctx:
            self._free_model()
            raise LoadError("failed to create context (out of memory?)")
        self._ctx = ctx
        self.apply_adapters(ctx)
        self._memory = llama.llama_get_memory(ctx)
        self._can_shift = bool(llama.llama_memory_can_shift(self._memory))
        self._n_swa = int(llama.llama_model_n_swa(model))
        self._swa_shift = (
            not self._can_shift
            and self._n_swa > 0
            and _architecture(model) in SLIDING_WINDOW_PATTERNS
            and llama.llama_model_rope_type(model) in _ONE_POSITION_ROPES
        )
        self._batch = llama.llama_batch_init(cfg.batch_size, 0, 1)
        self._slots = [Slot(seq_id=i) for i in range(cfg.num_parallel)]
        if cfg.projector and not cfg.embedding:
            self._load_vision(cfg.projector, threads)
        if cfg.draft_path and not cfg.embedding:
            if cfg.projector:  # image placeholders are no tokens a draft could read
                logger.warning("speculative decoding is off for a vision model")
            else:
                self._load_drafter(ctx_params)

    def _load_drafter(self, ctx_params: Any) -> None:
        """The draft model, in its own context shaped as the target's (``speculative.py``)."""
        if llama.llama_model_is_recurrent(self._model) or llama.llama_model_is_hybrid(self._model):
            logger.warning("speculative decoding is off: a recurrent model keeps no guesses apart")
            return
        drafter = Drafter(self.settings, n_vocab=self.n_vocab, cpu_turn=self._cpu_turn)
        try:
            drafter.load(ctx_params)
        except DraftLoadError as exc:
            self.close()
            raise LoadError(str(exc)) from None
        self._drafter = drafter

    def _load_vision(self, path: str, threads: int) -> None:
        """The projector, on the GPU where the model's layers are (``vision.py``)."""
        try:
            self.vision = Vision.load(
                path, self._model, threads=threads, use_gpu=self.settings.num_gpu_layers > 0
            )
        except VisionError as exc:
            self.close()
            raise LoadError(str(exc)) from None

    def _eval_image(self) -> None:
        """Encode and decode the next image of one slot whose prompt has reached an image:
        one per step, so text streams wait at most one image between two tokens."""
        assert self.vision is not None
        for slot in self._slots:
            task = slot.task
            if task is None or task.images is None or task.cancelled:
                continue
            start = slot.n_past
            if slot.pending_token is not None or start not in task.images.images:
                continue
            self.step_started = None
            try:
                size = self.vision.evaluate(
                    task.images.images[start],
                    self._ctx,
                    n_past=start,
                    seq_id=slot.seq_id,
                    n_batch=self.settings.batch_size,
                    guard=lambda: self._cpu_turn,
                )
            except RuntimeError as exc:
                logger.error("%s", exc)
                task.emit({"error": str(exc)})
                llama.llama_memory_seq_rm(self._memory, slot.seq_id, 0, -1)
                slot.cached = []
                slot.release()
                return
            slot.cached.extend(slot.prompt[start : start + size])
            slot.n_past += size
            slot.prompt_read += size
            return

    def _load_adapters(self) -> None:
        """Load every LoRA of ``adapters``; a file llama.cpp refuses fails the load, named.

        llama.cpp checks the adapter against the model (architecture, tensor names and
        shapes) and logs why it refused; ``LoadError`` adds that line to the message.
        """
        for path in self.settings.adapters:
            adapter = llama.llama_adapter_lora_init(self._model, path.encode())
            if not adapter:
                self._free_model()
                raise LoadError(f"failed to load LoRA adapter '{path}'")
            self._adapters.append(adapter)

    def apply_adapters(self, ctx: Any) -> None:
        """Put the loaded LoRAs on a context (the chat one, and the embedder's), scale 1.0."""
        if not self._adapters:
            return
        count = len(self._adapters)
        adapters = (llama.llama_adapter_lora_p_ctypes * count)(*self._adapters)
        scales = (ctypes.c_float * count)(*([1.0] * count))
        if llama.llama_set_adapters_lora(ctx, adapters, count, scales) != 0:
            raise LoadError("failed to apply the LoRA adapters to the context")

    def _free_model(self) -> None:
        # adapters first: freeing one unregisters it from its model
        for adapter in self._adapters:
            llama.llama_adapter_lora_free(adapter)
        self._adapters = []
        if self._model is not None:
            llama.llama_model_free(self._model)
            self._model = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()
        if self.settings.rpc_servers:
            rpc.watch_steps(self, self.settings.rpc_stall_seconds, self.settings.rpc_servers)

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def close(self) -> None:
        """Free llama.cpp objects; only after ``stop`` (or before ``start``)."""
        for slot in self._slots:
            slot.free_sampler()
        if self._drafter is not None:
            self._drafter.close()
            self._drafter = None
        if self._batch is not None:
            llama.llama_batch_free(self._batch)
            self._batch = None
        if self.vision is not None:
            self.vision.close()
            self.vision = None
        if self._ctx is not None:
            llama.llama_free(self._ctx)
            self._ctx = None
        self._free_model()

    def submit(self, task: Task) -> None:
        self._queue.put(task)

    @property
    def slots_busy(self) -> int:
        return sum(1 for s in self._slots if s.busy)

    # ---- tokens (read-only on the vocabulary: safe from any thread) ----------------

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buffer = (llama.llama_token * capacity)()
        count = llama.llama_tokenize(
            self._vocab, data, len(data), buffer, capacity, add_special, parse_special
        )
        if count < 0:
            capacity = -count
            buffer = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, parse_special
            )
        return list(buffer[:count])

    def token_bytes(self, token: int, *, special: bool = False) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        length = llama.llama_token_to_piece(self._vocab, token, buffer, 64, 0, special)
        if length < 0:
            buffer = ctypes.create_string_buffer(-length)
            length = llama.llama_token_to_piece(self._vocab, token, buffer, -length, 0, special)
        return buffer.raw[:length]

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        """Text of ``tokens``; ``special`` renders control tokens (``<|im_start|>``) as text,
        as Ollama's runner does when a generate ``context`` is turned back into a prompt."""
        data = b"".join(self.token_bytes(t, special=special) for t in tokens)
        return data.decode("utf-8", errors="replace")

    # ---- the loop ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if not self._has_work():
                    self.step_started = None
                    item = self._queue.get()
                    if item is None:
                        return
                    self._waiting.append(item)
                if not self._drain_queue():
                    return
                self._assign_waiting()
                if any(s.busy for s in self._slots):
                    self._step()
        except Exception:  # a bug here must not leave clients hanging forever
            logger.exception("engine loop failed")
            for slot in self._slots:
                if slot.task is not None:
                    slot.task.emit({"error": "runner engine failed"})
            for task in self._waiting:
                task.emit({"error": "runner engine failed"})
            os._exit(3)

    def _has_work(self) -> bool:
        return bool(self._waiting) or any(s.busy for s in self._slots)

    def _drain_queue(self) -> bool:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return True
            if item is None:
                return False
            self._waiting.append(item)

    def _assign_waiting(self) -> None:
        for task in self._waiting:
            if task.cancelled:
                task.finished()
        self._waiting = [t for t in self._waiting if not t.cancelled]
        while self._waiting:
            free = [s for s in self._slots if not s.busy]
            if not free:
                return
            task = self._waiting.pop(0)
            slot = pick_slot(free, task.tokens)
            try:
                self._begin(slot, task)
            except Exception as exc:  # this request's options, not the engine: fail it alone
                logger.warning("request refused: %s", exc)
                slot.task = None
                task.emit(
                    {"error": str(exc), "status": 400 if isinstance(exc, ValueError) else 500}
                )
                task.finished()

    def _begin(self, slot: Slot, task: Task) -> None:
        opts = task.options
        n_ctx = self.settings.num_ctx
        num_predict = int(opts.get("num_predict", -1))
        if num_predict == -1:
            num_predict = 10 * n_ctx
        requested_keep = int(opts.get("num_keep", 4))
        if task.images is not None and len(task.tokens) > n_ctx:  # images are never cut
            raise ValueError(
                f"the prompt with its images is {len(task.tokens)} tokens, more than the"
                f" context ({n_ctx}): raise num_ctx or send fewer images"
            )
        check_prompt_length(len(task.tokens), n_ctx, truncate=task.truncate, shift=task.shift)
        prompt, num_keep = fit_prompt(task.tokens, requested_keep, n_ctx, self.add_bos)
        if not prompt:
            prompt = [llama.llama_vocab_bos(self._vocab)]
        if task.deferred is not None:  # a bad grammar is refused now, not after thinking
            task.deferred.check(self._vocab)
        sampler = make_sampler(  # may refuse the options
            opts, task.grammar, prompt, vocab=self._vocab, n_vocab=self.n_vocab, num_ctx=n_ctx
        )
        donor = prefix_donor(self._slots, slot, prompt)
        if donor is not None:  # copy its cells; what the prompt does not share goes below
            llama.llama_memory_seq_cp(self._memory, donor.seq_id, slot.seq_id, -1, -1)
            slot.cached = list(donor.cached)
        reuse = common_prefix(slot.cached, prompt)
        if reuse >= len(prompt):
            reuse = len(prompt) - 1  # the last prompt token must be evaluated for its logits
        if task.images is not None:
            reuse = image_run_start(task.images, reuse)
        reuse = keep_prefix(self._memory, slot.seq_id, reuse, self._n_swa)
        slot.assign(
            task,
            prompt,
            reuse=reuse,
            num_keep=num_keep,
            num_predict=num_predict,
            sampler=sampler,
        )

    def _step(self) -> None:
        if self.vision is not None:
            self._eval_image()
        batch = self._batch
        capacity = self.settings.batch_size
        n = 0
        active: list[Slot] = []  # slots whose logits this step samples
        rows: list[Slot] = []  # every slot with a token in the batch
        drafts = self._propose_drafts()
        for slot in self._slots:
            task = slot.task
            if task is None:
                continue
            if task.cancelled:
                slot.release()
                continue
            if slot.pending_token is not None:
                if slot.n_past >= self.settings.num_ctx and not self._shift(slot):
                    self._finish(slot, "length")
                    continue
                batch_add(batch, n, slot.pending_token, slot.n_past, slot.seq_id, True)
                slot.cached.append(slot.pending_token)
                slot.n_past += 1
                slot.batch_index = n
                n += 1
                if slot.seq_id in drafts:
                    n = add_drafts(batch, n, slot, drafts[slot.seq_id])
                active.append(slot)
                rows.append(slot)
        for slot in self._slots:
            if slot.task is None or slot.pending_token is not None or n >= capacity:
                continue
            remaining = slot.prompt[slot.n_past :]
            run = len(remaining) if slot.task.images is None else text_run(remaining)
            if run == 0:
                continue  # an image is next: _eval_image
            # The last prompt token is decoded apart from the rest of its prompt, as it is
            # when the rest comes from the cache: its logits then do not depend on how much
            # of the prompt was cached (how many of its sequence's tokens share a batch
            # changes llama.cpp's numerics slightly, enough to flip a greedy choice; other
            # sequences' tokens do not). It follows at once: _decode_last_tokens.
            limit = len(remaining) - 1 if len(remaining) > 1 else 1
            take = remaining[: min(limit, run, capacity - n)]
            for offset, token in enumerate(take):
                last = offset == len(remaining) - 1
                batch_add(batch, n, token, slot.n_past, slot.seq_id, last)
                slot.cached.append(token)
                slot.n_past += 1
                if last:
                    slot.batch_index = n
                n += 1
            slot.prompt_read += len(take)
            if take:
                rows.append(slot)
            if take and len(take) == len(remaining):
                active.append(slot)
        if n == 0:
            return
        if not self._decode(n, rows):
            return
        for slot in active:
            if slot.seq_id in drafts and self._drafter is not None:
                self._drafter.verify(slot, drafts[slot.seq_id], self._memory, self._sample)
            else:
                self._sample(slot)
        self._decode_last_tokens()

    def _decode_last_tokens(self) -> None:
        """Decode, in a batch of their own, the last token of each prompt whose other tokens
        this step read, and sample its first answer token: a new request's first token then
        waits for one small decode rather than for the next whole step of every stream (a
        4-stream step costs about 3 single-token ones on 2 cores)."""
        batch = self._batch
        n = 0
        ready: list[Slot] = []
        for slot in self._slots:
            task = slot.task
            if task is None or task.cancelled or slot.pending_token is not None:
                continue
            remaining = slot.prompt[slot.n_past :]
            if len(remaining) != 1 or (task.images is not None and text_run(remaining) != 1):
                continue
            batch_add(batch, n, remaining[0], slot.n_past, slot.seq_id, True)
            slot.cached.append(remaining[0])
            slot.n_past += 1
            slot.prompt_read += 1
            slot.batch_index = n
            n += 1
            ready.append(slot)
        if n == 0 or not self._decode(n, ready):
            return
        for slot in ready:
            self._sample(slot)

    def _decode(self, n: int, rows: list[Slot]) -> bool:
        """``llama_decode`` the first ``n`` rows of the batch (the tokens of ``rows``) in
        this process's CPU turn; False, and those slots' requests failed, when llama.cpp
        refuses it."""
        self._batch.n_tokens = n
        self.step_started = None  # waiting for the CPU turn is not a stall
        with self._cpu_turn:
            self.step_started = time.monotonic()
            status = llama.llama_decode(self._ctx, self._batch)
        if status != 0:
            self._fail_batch(status, rows)
            return False
        return True

    def _propose_drafts(self) -> dict[int, list[int]]:
        """The draft model's guesses per slot for this step (none without a draft)."""
        if self._drafter is None:
            return {}
        generating = [  # not a slot with images: the draft model cannot read them
            s
            for s in self._slots
            if s.task is not None and s.pending_token is not None and s.task.images is None
        ]
        # a row for every generating slot's pending token, images or not; the rest is room
        room = self.settings.batch_size - sum(1 for s in self._slots if s.pending_token is not None)
        self.step_started = None  # the draft runs here, waiting for its CPU turn: no stall
        return self._drafter.propose(generating, num_ctx=self.settings.num_ctx, room=room)

    def _sample(self, slot: Slot) -> None:
        task = slot.task
        assert task is not None
        now = time.perf_counter()
        if slot.pending_token is None:
            slot.t_first = now
        assert slot.sampler is not None
        token = slot.sampler.sample(self._ctx, slot.batch_index)
        if llama.llama_vocab_is_eog(self._vocab, token):
            self._finish(slot, "stop")
            return
        slot.generated.append(token)
        slot.pending_token = token
        if task.logprobs >= 0:
            slot.logprobs.append(self._logprob_entry(slot.batch_index, token, task.logprobs))
        # Control tokens render as text (special=True) so stop strings such as
        # "<|im_start|>" can match them; llama.cpp would otherwise print them as "".
        piece = self.token_bytes(token, special=True)
        if task.deferred is not None and task.deferred.feed(piece):  # thinking is over
            slot.free_sampler()
            slot.sampler = make_sampler(
                task.options,
                task.deferred.grammar,
                slot.prompt + slot.generated,
                vocab=self._vocab,
                n_vocab=self.n_vocab,
                num_ctx=self.settings.num_ctx,
            )
        text = slot.utf8.feed(piece)
        if text and slot.stuck_repeating(text):  # a loop: Ollama's token repeat limit
            self._finish(slot, "stop")
            return
        if text:
            visible, stopped = slot.stops.feed(text)
            if visible:
                if slot.logprobs:
                    task.emit({"content": visible, "logprobs": take_logprobs(slot)})
                else:
                    task.emit({"content": visible})
            if stopped:
                self._finish(slot, "stop", flush=False)
                return
        if len(slot.generated) >= slot.num_predict >= 0:
            self._finish(slot, "length")

    def _logprob_entry(self, index: int, token: int, top_n: int) -> TokenLogprob:
        """Logprobs of the token sampled at batch row ``index``, from a view of its logits
        (llama.cpp's buffer, valid until the next decode; nothing is copied)."""
        pointer = llama.llama_get_logits_ith(self._ctx, index)
        row = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        return _token_logprob(row, token, top_n, self._special_piece)

    def _special_piece(self, token: int) -> bytes:
        return self.token_bytes(token, special=True)

    def _shift(self, slot: Slot) -> bool:
        """Make room in a full slot: drop half of what follows ``num_keep``."""
        assert slot.task is not None
        if not (self._can_shift or self._swa_shift) or not slot.task.shift:
            return False  # shift false: stop at a full context
        if int(slot.task.options.get("num_predict", -1)) == -2:
            return False
        keep = min(slot.num_keep, slot.n_past)
        discard = (slot.n_past - keep) // 2
        if discard <= 0:
            return False
        # llama.cpp will not shift a window-sized cache (its size differs from the full
        # one's), but each of its two caches shifts; what the window cache lost is exactly
        # what the next token no longer sees, unless the window would reach back into the
        # kept start: then stop as llama.cpp would.
        if not self._can_shift and slot.n_past - discard - self._n_swa < keep:
            return False
        llama.llama_memory_seq_rm(self._memory, slot.seq_id, keep, keep + discard)
        llama.llama_memory_seq_add(self._memory, slot.seq_id, keep + discard, slot.n_past, -discard)
        del slot.cached[keep : keep + discard]
        slot.n_past -= discard
        return True

    def _finish(self, slot: Slot, reason: str, *, flush: bool = True) -> None:
        task = slot.task
        assert task is not None
        if flush:
            tail = slot.utf8.flush()
            visible, stopped = slot.stops.feed(tail) if tail else ("", False)
            rest = "" if stopped else slot.stops.flush()
            if visible or rest or slot.logprobs:
                event: CompletionEvent = {"content": visible + rest}
                if slot.logprobs:
                    event["logprobs"] = take_logprobs(slot)
                task.emit(cast("dict[str, Any]", event))
        now = time.perf_counter()
        first = slot.t_first or now
        final: CompletionEvent = {
            "done": True,
            "done_reason": reason,
            # the whole prompt, as newest Ollama counts it (cache hits and tokens read);
            # what the cache held is told apart for the metrics
            "prompt_eval_count": len(slot.prompt),
            "prompt_cached": max(0, len(slot.prompt) - slot.prompt_read),
            "prompt_eval_duration": int((first - slot.t_start) * 1e9),
            "eval_count": len(slot.generated),
            "eval_duration": int((now - first) * 1e9),
        }
        if reason == "stop" and slot.stops.matched is not None:
            final["stop_sequence"] = slot.stops.matched
        if task.return_tokens:
            final["tokens"] = [t for t in task.tokens if t >= 0] + slot.generated
        task.emit(cast("dict[str, Any]", final))
        slot.release()

    def _fail_batch(self, status: int, rows: list[Slot]) -> None:
        """A refused decode fails the requests with tokens in it (their cache is dropped:
        llama.cpp may have kept part of the batch); the other slots go on."""
        message = f"llama_decode failed with status {status}"
        logger.error(message)
        for slot in rows:
            if slot.task is not None:
                slot.task.emit({"error": message})
            llama.llama_memory_seq_rm(self._memory, slot.seq_id, 0, -1)
            slot.cached = []
            slot.n_past = 0
            slot.release()


#: rope types whose positions are one number a token (K-shift works on them)
_ONE_POSITION_ROPES = frozenset(
    {llama.LLAMA_ROPE_TYPE_NONE, llama.LLAMA_ROPE_TYPE_NORM, llama.LLAMA_ROPE_TYPE_NEOX}
)


def _architecture(model: Any) -> str:
    buffer = ctypes.create_string_buffer(64)
    size = llama.llama_model_meta_val_str(model, b"general.architecture", buffer, len(buffer))
    return buffer.value.decode("utf-8", "replace") if size > 0 else ""


class _FileTurn:
    """One decode step at a time across processes, through ``flock`` on a shared file.

    Two CPU runners decoding at once oversubscribe the cores: llama.cpp's OpenMP threads
    then wait on each other's barriers while preempted, and two SmolLM2 runners on 2 cores
    made 25 tok/s each instead of sharing the 120 one makes alone. Taking turns per step
    keeps the total, and an uncontended ``flock`` costs a system call.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)

    def __enter__(self) -> object:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _tensor_split(split: tuple[float, ...]) -> Any:
    count = max(int(llama.llama_max_devices()), len(split))
    return (ctypes.c_float * count)(*split)
