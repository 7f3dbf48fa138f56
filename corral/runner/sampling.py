"""A request's sampler: its options as one llama.cpp sampler chain, built once per request.

The chain is penalties (primed with the end of the prompt), then the grammar, then either
greedy (``temperature`` 0), temperature and mirostat 1 or 2, or top-k, typical, top-p,
min-p, temperature and the seeded draw. It is built once per request; the decode loop calls
``Sampler.sample`` on it.

The greedy shortcut: ``llama_sampler_sample`` copies every logit into a candidate list
before the first sampler runs (262k of them for Gemma 3). Where the chain is greedy and has
no grammar (which may look at any token), the token is the argmax of the logits, read in
place. Repeat, frequency and presence penalties change only the logits of the last
``repeat_last_n`` tokens: there the shortcut applies them itself (:class:`_Penalties`,
llama.cpp's arithmetic in float32) to a copy of the logits, which costs a tenth of
llama.cpp's penalties pass over every candidate. Not where frequency and presence penalties
are both set: llama.cpp's ``count * freq + present`` may then be one fused multiply-add, one
rounding instead of two.

A chain that draws (top-k first) takes llama.cpp's full pass: its top-k is a bucket sort,
several times faster than numpy's partition of the logits (41 against 370 us a token for
SmolLM2's 49k logits, 204 against 2165 for Gemma's 262k).

What can go wrong: a grammar llama.cpp cannot compile is a ``ValueError`` (the engine turns
it into a 400 for that request alone), and the half-built chain is freed.
"""

from __future__ import annotations

from collections import Counter, deque
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
    shortcut: bool = True,
) -> Sampler:
    """The sampler chain for request options ``opts`` (Ollama's names and defaults).

    ``prompt`` primes the repeat penalties; ``repeat_last_n`` -1 means ``num_ctx``. The
    caller owns the sampler and frees it (``Sampler.free``). ``shortcut`` False keeps
    llama.cpp's full pass (what the shortcut is tested against).
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
    last_n = max(last_n, 0)  # llama.cpp reads a negative window as none
    penalized = bool(last_n and (repeat_penalty != 1.0 or presence != 0.0 or frequency != 0.0))
    temperature = float(opts.get("temperature", 0.8))
    # the greedy shortcut: no grammar, and penalties it can apply itself
    shortcut = (
        shortcut and temperature <= 0 and not grammar and not (presence != 0.0 and frequency != 0.0)
    )
    own_penalties: _Penalties | None = None
    if penalized and shortcut:
        own_penalties = _Penalties(prompt, last_n, repeat_penalty, frequency, presence)
    elif penalized:
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
    seed_value = int(opts.get("seed", -1))
    seed = llama.LLAMA_DEFAULT_SEED if seed_value < 0 else seed_value & 0xFFFFFFFF
    mirostat = int(opts.get("mirostat", 0))
    if temperature <= 0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
        return Sampler(chain, n_vocab=n_vocab, argmax=shortcut, penalties=own_penalties)
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
    return Sampler(chain, n_vocab=n_vocab, argmax=False)


class _Penalties:
    """llama.cpp's penalties sampler, for the shortcut: the counts of the last ``last_n``
    accepted tokens (the prompt's end first), applied to those tokens' logits with the same
    float32 arithmetic (``<= 0`` multiplied by the repeat penalty, else divided; then the
    count times the frequency penalty and the presence penalty subtracted)."""

    def __init__(
        self, prompt: list[int], last_n: int, repeat: float, frequency: float, presence: float
    ) -> None:
        self.recent: deque[int] = deque(maxlen=last_n)
        self.counts: Counter[int] = Counter()
        self.repeat = np.float32(repeat)
        self.frequency = np.float32(frequency)
        self.presence = np.float32(presence)
        for token in prompt[-last_n:]:
            self.accept(token)

    def accept(self, token: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            old = self.recent[0]
            self.counts[old] -= 1
            if not self.counts[old]:
                del self.counts[old]
        self.recent.append(token)
        self.counts[token] += 1

    def apply(self, logits: Any) -> Any:
        """A copy of ``logits`` (float32) with the penalties applied."""
        out = logits.copy()
        if not self.counts:
            return out
        ids = np.fromiter(self.counts.keys(), dtype=np.intp, count=len(self.counts))
        counts = np.fromiter(self.counts.values(), dtype=np.float32, count=len(self.counts))
        values = out[ids]
        values = np.where(values <= 0, values * self.repeat, values / self.repeat)
        values -= counts * self.frequency + self.presence
        out[ids] = values
        return out


class Sampler:
    """One request's chain, and how its tokens are picked (see the shortcut above)."""

    def __init__(
        self,
        chain: Any,
        *,
        n_vocab: int,
        argmax: bool,
        penalties: _Penalties | None = None,
    ) -> None:
        self.chain = chain
        self.n_vocab = n_vocab
        #: the greedy shortcut: the argmax of the logits, not the chain's full pass
        self.argmax = argmax
        #: penalties the shortcut applies itself (not in ``chain``)
        self.penalties = penalties

    def sample(self, ctx: Any, index: int) -> int:
        """The token for the logits of batch row ``index``, accepted into the chain."""
        if not self.argmax:
            return int(llama.llama_sampler_sample(self.chain, ctx, index))
        pointer = llama.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        if self.penalties is not None:
            logits = self.penalties.apply(logits)
        token = int(logits.argmax())
        llama.llama_sampler_accept(self.chain, token)
        if self.penalties is not None:
            self.penalties.accept(token)
        return token

    def free(self) -> None:
        """Free the chain (and every sampler in it)."""
        llama.llama_sampler_free(self.chain)
