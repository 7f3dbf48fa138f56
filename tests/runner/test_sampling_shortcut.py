"""The sampler's greedy shortcut (``sampling.Sampler``): the argmax of the logits, with
repeat, frequency or presence penalties applied by corral, must pick exactly what llama.cpp's
full pass over every logit picks, token after token as the penalties' window moves; a chain
that draws, has a grammar, or sets both frequency and presence penalties keeps the full pass
(where the draw sees llama.cpp's own candidates, so a seeded answer is llama.cpp's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.runner.engine_harness import chat, started_engine

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def logits_ctx() -> Iterator[tuple[Any, Any, int]]:
    """SmolLM2's context with the logits of a chat prompt's last token in batch row 0."""
    import llama_cpp as llama

    with started_engine(num_ctx=256, num_parallel=1) as engine:
        engine.stop()  # the decode thread must not touch the context while we do
        tokens = engine.tokenize(chat("Name a colour and a fruit."))
        ids = (llama.llama_token * len(tokens))(*tokens)  # alive while the batch points at it
        assert llama.llama_decode(engine._ctx, llama.llama_batch_get_one(ids, len(tokens))) == 0
        yield engine._ctx, engine._vocab, engine.n_vocab


OPTIONS = [
    {"temperature": 0},
    # penalties over a window that the picks themselves keep changing
    {"temperature": 0, "repeat_penalty": 1.5, "repeat_last_n": 8},
    {"temperature": 0, "repeat_penalty": 1.1},
    {"temperature": 0, "repeat_penalty": 1.05, "repeat_last_n": 3},
    {"temperature": 0, "repeat_penalty": 1.1, "frequency_penalty": 0.7, "repeat_last_n": 16},
    {"temperature": 0, "presence_penalty": 1.3, "repeat_last_n": 4},
    {"temperature": 0, "repeat_penalty": 1.3, "presence_penalty": 0.4, "repeat_last_n": -1},
    {"temperature": 0, "frequency_penalty": 0.25, "repeat_last_n": 32},
]


def _top_tokens(ctx: Any, n_vocab: int, n: int) -> list[int]:
    import llama_cpp as llama
    import numpy as np

    logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
    return [int(t) for t in np.argsort(logits)[::-1][:n]]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_shortcut_picks_what_the_full_pass_picks(
    logits_ctx: tuple[Any, Any, int], options: dict[str, Any]
) -> None:
    from corral.runner.sampling import make_sampler

    ctx, vocab, n_vocab = logits_ctx
    # the prompt's end holds the likeliest tokens, some twice: the penalties move the ranking
    top = _top_tokens(ctx, n_vocab, 12)
    prompt = [5, 6, *top[:6], *top[2:4], *top[8:12]]
    fast = make_sampler(options, None, prompt, vocab=vocab, n_vocab=n_vocab, num_ctx=256)
    slow = make_sampler(
        options, None, prompt, vocab=vocab, n_vocab=n_vocab, num_ctx=256, shortcut=False
    )
    assert fast.argmax and not slow.argmax
    penalized = any("penalty" in key for key in options)
    assert (fast.penalties is not None) == penalized
    try:
        picks = [(fast.sample(ctx, -1), slow.sample(ctx, -1)) for _ in range(200)]
    finally:
        fast.free()
        slow.free()
    assert all(a == b for a, b in picks), picks
    if penalized:  # the penalties did change the picks
        assert len({a for a, _ in picks}) > 1, picks


@pytest.mark.parametrize(
    "options, grammar",
    [
        ({"temperature": 0, "frequency_penalty": 0.5, "presence_penalty": 0.5}, None),
        ({"temperature": 0, "repeat_penalty": 1.1}, 'root ::= "yes" | "no"'),
        ({"temperature": 0.8, "top_k": 40, "repeat_penalty": 1.1}, None),
        ({"temperature": 0.8, "top_k": 40}, None),
        ({"temperature": 0.8, "top_k": 0}, None),
        ({"temperature": 0.8, "mirostat": 2}, None),
    ],
)
def test_no_shortcut_where_a_sampler_looks_at_every_token(
    logits_ctx: tuple[Any, Any, int], options: dict[str, Any], grammar: str | None
) -> None:
    from corral.runner.sampling import make_sampler

    _, vocab, n_vocab = logits_ctx
    sampler = make_sampler(options, grammar, [1, 2], vocab=vocab, n_vocab=n_vocab, num_ctx=256)
    try:
        assert not sampler.argmax
    finally:
        sampler.free()
