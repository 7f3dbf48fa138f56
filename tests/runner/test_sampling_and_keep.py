"""num_keep through truncation and context shifts, and the sampler options, on a real model.

The engine is driven in-process (as tests/runner/test_engine.py does); the slot's cached
tokens are read after a request ends to see what the shift kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral.runner.slots import _num_keep, _truncate_prompt
from tests.runner.engine_harness import chat, started_engine, submit

# ---- pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "length", "n_ctx", "bos", "expected"),
    [
        (4, 100, 512, False, 4),
        (4, 100, 512, True, 5),  # the BOS token comes on top, as Ollama counts
        (-1, 100, 512, False, 100),  # -1: the whole prompt
        (-1, 100, 512, True, 101),
        (-1, 900, 512, False, 511),  # at least one token stays discardable
        (1000, 10, 64, False, 63),
        (0, 10, 64, False, 0),
    ],
)
def test_num_keep_rules(requested: int, length: int, n_ctx: int, bos: bool, expected: int) -> None:
    assert _num_keep(requested, length, n_ctx, bos) == expected


def test_truncation_keeps_the_head_and_the_tail() -> None:
    tokens = list(range(100))
    assert _truncate_prompt(tokens, 100, 5) == tokens
    cut = _truncate_prompt(tokens, 60, 5)
    assert len(cut) == 60
    assert cut[:5] == [0, 1, 2, 3, 4]
    assert cut[5:] == list(range(45, 100)), "the newest tokens (the user's last words) stay"


# ---- on the real model -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with started_engine(num_ctx=128, num_parallel=4) as started:
        yield started


def slot_holding(engine: Any, head: list[int]) -> Any:
    slots = [s for s in engine._slots if s.cached[: len(head)] == head]
    assert slots, "no slot kept the prompt's head"
    return slots[0]


@pytest.mark.model
@pytest.mark.parametrize("num_keep", [4, 24, -1])
def test_num_keep_survives_context_shifts(engine: Any, num_keep: int) -> None:
    # greedy counting never ends by itself; the head is what num_keep must protect
    prompt = f"Numbers written by a careful student, in order ({num_keep}): " + ", ".join(
        str(i) for i in range(1, 11)
    )
    tokens = engine.tokenize(prompt)
    assert len(tokens) > 24
    result = submit(engine, prompt, temperature=0, num_predict=300, num_keep=num_keep).wait()
    assert result.final.get("done_reason") == "length", result.final
    assert result.final["eval_count"] == 300, "generation ran past the 128-token context"
    kept = _num_keep(num_keep, len(tokens), 128, engine.add_bos)
    slot = slot_holding(engine, tokens[:kept])
    assert len(slot.cached) <= 128
    assert slot.cached[:kept] == tokens[:kept]


@pytest.mark.model
def test_a_prompt_longer_than_the_context_keeps_its_end(engine: Any) -> None:
    words = " ".join(f"w{i}" for i in range(300))
    prompt = chat(f"{words} Now say OK.")
    result = submit(engine, prompt, temperature=0, num_predict=8).wait()
    assert result.final.get("done"), result.final
    assert result.final["prompt_eval_count"] <= 128


SAMPLERS = [
    {"mirostat": 1, "mirostat_tau": 5.0, "mirostat_eta": 0.1},
    {"mirostat": 2, "mirostat_tau": 4.0, "mirostat_eta": 0.2},
    {"typical_p": 0.5},
    {"min_p": 0.2},
    {"top_k": 1},
    {"top_p": 0.1},
]


@pytest.mark.model
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: ",".join(s))
def test_every_sampler_runs_and_is_reproducible_with_a_seed(
    engine: Any, sampler: dict[str, Any]
) -> None:
    options = {"temperature": 0.9, "seed": 1234, "num_predict": 24, **sampler}
    first = submit(engine, chat("Name three colours."), **options).wait()
    second = submit(engine, chat("Name three colours."), **options).wait()
    assert first.final.get("done"), first.final
    assert first.text and first.text == second.text


@pytest.mark.model
def test_narrow_samplers_agree_with_greedy(engine: Any) -> None:
    greedy = submit(engine, chat("What is two plus two?"), temperature=0, num_predict=16).wait()
    top_k_one = submit(
        engine, chat("What is two plus two?"), temperature=0.9, top_k=1, seed=7, num_predict=16
    ).wait()
    assert top_k_one.text == greedy.text


@pytest.mark.model
def test_seeded_sampling_is_the_same_while_other_slots_are_busy(engine: Any) -> None:
    options = {"temperature": 0.9, "seed": 99, "num_predict": 32}
    alone = submit(engine, chat("Write a line about the sea."), **options).wait()
    busy = [
        submit(engine, chat(f"Tell me about topic number {i}."), temperature=0.7, num_predict=48)
        for i in range(3)
    ]
    together = submit(engine, chat("Write a line about the sea."), **options)
    for other in busy:
        other.wait()
    assert together.wait().text == alone.text
