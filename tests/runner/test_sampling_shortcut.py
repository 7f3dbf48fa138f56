"""The sampler's shortcut (``sampling.Sampler``): greedy as the argmax, and a chain that begins
with top-k run on the top-k candidates only, must pick exactly what llama.cpp's full pass
over every logit picks, draw after draw with the same seed; chains with a grammar or
penalties keep the full pass."""

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
    {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "seed": 3},
    {"temperature": 1.5, "top_k": 200, "top_p": 1.0, "min_p": 0.01, "seed": 11},
    {"temperature": 0.7, "top_k": 5, "typical_p": 0.8, "seed": 5},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_the_shortcut_picks_what_the_full_pass_picks(
    logits_ctx: tuple[Any, Any, int], options: dict[str, Any]
) -> None:
    from corral.runner.sampling import Sampler, make_sampler

    ctx, vocab, n_vocab = logits_ctx
    fast = make_sampler(options, None, [], vocab=vocab, n_vocab=n_vocab, num_ctx=256)
    full = make_sampler(options, None, [], vocab=vocab, n_vocab=n_vocab, num_ctx=256)
    assert fast.top_k == (0 if options["temperature"] == 0 else options["top_k"])
    slow = Sampler(full.chain, n_vocab=n_vocab, top_k=None)  # the same chain, full pass
    try:
        picks = [(fast.sample(ctx, -1), slow.sample(ctx, -1)) for _ in range(200)]
    finally:
        fast.free()
        slow.free()
    assert all(a == b for a, b in picks), picks
    assert len({a for a, _ in picks}) > (1 if options["temperature"] else 0)


@pytest.mark.parametrize(
    "options, grammar",
    [
        ({"temperature": 0, "repeat_penalty": 1.1}, None),
        ({"temperature": 0.8, "top_k": 40, "frequency_penalty": 0.5}, None),
        ({"temperature": 0.8, "top_k": 40}, 'root ::= "yes" | "no"'),
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
        assert sampler.top_k is None
    finally:
        sampler.free()
