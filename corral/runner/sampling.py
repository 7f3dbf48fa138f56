"""A request's sampler: its options as one llama.cpp sampler chain, built once per request.

The chain is penalties (primed with the end of the prompt), then the grammar, then either
greedy (``temperature`` 0), temperature and mirostat 1 or 2, or top-k, typical, top-p,
min-p, temperature and the seeded draw. It is built once per request; the decode loop calls
``llama_sampler_sample`` on it and nothing of this module.

What can go wrong: a grammar llama.cpp cannot compile is a ``ValueError`` (the engine turns
it into a 400 for that request alone), and the half-built chain is freed.
"""

from __future__ import annotations

from typing import Any

import llama_cpp as llama

from corral.runner.grammar import JSON_GRAMMAR

__all__ = ["GRAMMARS", "free_sampler", "make_sampler"]

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
) -> Any:
    """The sampler chain for request options ``opts`` (Ollama's names and defaults).

    ``prompt`` primes the repeat penalties; ``repeat_last_n`` -1 means ``num_ctx``. The
    caller owns the chain and frees it with :func:`free_sampler`.
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
    if last_n and (repeat_penalty != 1.0 or presence != 0.0 or frequency != 0.0):
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
    if temperature <= 0:
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_greedy())
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
    return chain


def free_sampler(chain: Any) -> None:
    """Free a chain :func:`make_sampler` built (and every sampler in it)."""
    llama.llama_sampler_free(chain)
