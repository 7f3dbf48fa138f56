"""A request's sampler: its options as one llama.cpp sampler chain, built once per request.

The chain is penalties (primed with the end of the prompt), then the grammar, then either
greedy (``temperature`` 0), temperature and mirostat 1 or 2, or top-k, typical, top-p,
min-p, temperature and the seeded draw. It is built once per request; the decode loop calls
``Sampler.sample`` on it.

The shortcut: ``llama_sampler_sample`` copies every logit into a candidate list before the
first sampler runs (262k of them for Gemma 3: a sixth of a single stream's time on 2 cores).
Where the chain is greedy, or begins with top-k, and has no grammar or penalties (which may
look at any token), the same token comes from the logits directly: their argmax, or the
chain applied to the top-k candidates numpy finds. The draw sees the same candidates in the
same order (sorted by logit, as top-k leaves them), so a seeded answer does not change.

What can go wrong: a grammar llama.cpp cannot compile is a ``ValueError`` (the engine turns
it into a 400 for that request alone), and the half-built chain is freed.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp as llama
import numpy as np

from corral.runner.grammar import JSON_GRAMMAR

__all__ = ["GRAMMARS", "Sampler", "make_sampler"]

#: the grammars a request may name by its ``format``
GRAMMARS = {"json": JSON_GRAMMAR}


def make_sampler(
    opts: dict[str, Any],
    grammar: str | None,
    prompt: list[int],
    *,
    vocab: Any,
    n_vocab: int,
    num_ctx: int,
) -> Sampler:
    """The sampler chain for request options ``opts`` (Ollama's names and defaults).

    ``prompt`` primes the repeat penalties; ``repeat_last_n`` -1 means ``num_ctx``. The
    caller owns the sampler and frees it (``Sampler.free``).
    """
    params = llama.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = llama.llama_sampler_chain_init(params)
    repeat_penalty = float(opts.get("repeat_penalty", 1.0))
    presence = float(opts.get("presence_penalty", 0.0))
    frequency = float(opts.get("frequency_penalty", 0.0))
    last_n = int(opts.get("repeat_last_n", 64))
    if last_n == -1:
        last_n = num_ctx
    penalized = bool(last_n and (repeat_penalty != 1.0 or presence != 0.0 or frequency != 0.0))
    if penalized:
        penalties = llama.llama_sampler_init_penalties(
            n_vocab, last_n, repeat_penalty, frequency, presence
        )
        for token in prompt[-last_n:]:
            llama.llama_sampler_accept(penalties, token)
        llama.llama_sampler_chain_add(chain, penalties)
    if grammar:
        compiled = llama.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not compiled:
            llama.llama_sampler_free(chain)
            raise ValueError("invalid grammar")
        llama.llama_sampler_chain_add(chain, compiled)
    temperature = float(opts.get("temperature", 0.8))
    seed_value = int(opts.get("seed", -1))
    seed = llama.LLAMA_DEFAULT_SEED if seed_value < 0 else seed_value & 0xFFFFFFFF
    mirostat = int(opts.get("mirostat", 0))
    # the shortcut applies where no sampler before the first cut may look at any token
    shortcut = not penalized and not grammar
    if temperature <= 0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        return Sampler(chain, n_vocab=n_vocab, top_k=0 if shortcut else None)
    elif mirostat == 1:
        tau = float(opts.get("mirostat_tau", 5.0))
        eta = float(opts.get("mirostat_eta", 0.1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(temperature))
        llama.llama_sampler_chain_add(
            chain, llama.llama_sampler_init_mirostat(n_vocab, seed, tau, eta, 100)
        )
    elif mirostat == 2:
        tau = float(opts.get("mirostat_tau", 5.0))
        eta = float(opts.get("mirostat_eta", 0.1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_mirostat_v2(seed, tau, eta))
    else:
        top_k = int(opts.get("top_k", 40))
        if top_k > 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_k(top_k))
        typical = float(opts.get("typical_p", 1.0))
        if 0 < typical < 1:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_typical(typical, 1))
        top_p = float(opts.get("top_p", 0.9))
        if 0 < top_p < 1:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(top_p, 1))
        min_p = float(opts.get("min_p", 0.0))
        if min_p > 0:
            llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_min_p(min_p, 1))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed))
        if shortcut and 0 < top_k < n_vocab:
            return Sampler(chain, n_vocab=n_vocab, top_k=top_k)
    return Sampler(chain, n_vocab=n_vocab, top_k=None)


class Sampler:
    """One request's chain, and how its tokens are picked (see the shortcut above)."""

    def __init__(self, chain: Any, *, n_vocab: int, top_k: int | None) -> None:
        self.chain = chain
        self.n_vocab = n_vocab
        #: the shortcut: None (the whole chain on every logit), 0 (greedy: the argmax), or
        #: k (the chain on the k largest logits)
        self.top_k = top_k
        self._data: Any = None
        self._rows: Any = None
        self._array: Any = None
        if top_k:
            self._data = (llama.llama_token_data * top_k)()
            self._rows = np.ctypeslib.as_array(self._data)  # id, logit, p: a view
            self._array = llama.llama_token_data_array(
                data=self._data, size=top_k, selected=-1, sorted=False
            )

    def sample(self, ctx: Any, index: int) -> int:
        """The token for the logits of batch row ``index``, accepted into the chain."""
        if self.top_k is None:
            return int(llama.llama_sampler_sample(self.chain, ctx, index))
        pointer = llama.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        if self.top_k == 0:
            token = int(logits.argmax())
        else:
            ids = np.argpartition(logits, -self.top_k)[-self.top_k :]
            rows = self._rows
            rows["id"] = ids
            rows["logit"] = logits[ids]
            rows["p"] = 0.0
            array = self._array
            array.size, array.selected, array.sorted = self.top_k, -1, False
            llama.llama_sampler_apply(self.chain, ctypes.byref(array))
            token = int(self._data[array.selected].id)
        llama.llama_sampler_accept(self.chain, token)
        return token

    def free(self) -> None:
        """Free the chain (and every sampler in it)."""
        llama.llama_sampler_free(self.chain)
