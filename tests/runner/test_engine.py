"""The engine on a real model, in-process: slots, batching, cache, shift, cancellation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.runner.engine_harness import Result, chat, started_engine, submit

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 40}


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with started_engine(num_ctx=512, num_parallel=4) as started:
        yield started


QUESTIONS = ["Tell me about cats.", "What is Python?", "Describe the sea.", "Why is grass green?"]


def test_concurrent_streams_match_each_alone(engine: Any) -> None:
    alone = [submit(engine, chat(q), **GREEDY).wait().text for q in QUESTIONS]
    together = [submit(engine, chat(q), **GREEDY) for q in QUESTIONS]
    assert [r.wait().text for r in together] == alone


def test_request_joins_mid_stream(engine: Any) -> None:
    alone = submit(engine, chat("Name a fruit."), **GREEDY).wait().text
    long = submit(engine, chat("Write a long poem about autumn."), temperature=0, num_predict=120)
    assert long.first.wait(60)
    joined = submit(engine, chat("Name a fruit."), **GREEDY)
    assert joined.wait().text == alone
    assert not long.done.is_set() or long.final["eval_count"] == 120
    long.wait()


def test_cancel_frees_the_slot(engine: Any) -> None:
    from corral.runner.engine import Task

    result = Result()
    task = Task(
        tokens=engine.tokenize(chat("Count to one thousand.")),
        options={"temperature": 0, "num_predict": 5000},
        emit=result.emit,
    )
    engine.submit(task)
    assert result.first.wait(60)
    task.cancelled = True
    follow = [submit(engine, chat(q), temperature=0, num_predict=8) for q in QUESTIONS]
    for item in follow:
        assert item.wait().final["done"] is True
    assert not result.done.is_set()
    assert engine.slots_busy == 0


def test_prompt_cache_reuses_prefix(engine: Any) -> None:
    history = chat("What is the capital of France?")
    first = submit(engine, history, **GREEDY).wait()
    turn2 = history + first.text + "<|im_end|>\n" + chat("And Germany?")
    second = submit(engine, turn2, **GREEDY).wait()
    # the whole prompt is counted, most of it held by the cache
    assert second.final["prompt_eval_count"] == len(engine.tokenize(turn2))
    assert second.final["prompt_cached"] > len(engine.tokenize(turn2)) // 2
    again = submit(engine, turn2, **GREEDY).wait()
    assert again.final["prompt_eval_count"] - again.final["prompt_cached"] == 1
    assert again.text == second.text


COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy counting never ends by itself


def test_context_shift_generates_past_num_ctx(engine: Any) -> None:
    result = submit(engine, COUNTING, temperature=0, num_predict=700).wait()
    assert result.final["done_reason"] == "length"
    assert result.final["eval_count"] == 700  # beyond the 512-token slot


def test_num_predict_minus_two_fills_the_context(engine: Any) -> None:
    result = submit(engine, COUNTING, temperature=0, num_predict=-2).wait()
    assert result.final["done_reason"] == "length"
    total = result.final["prompt_eval_count"] + result.final["eval_count"]
    # the context holds 512; the token sampled when it is full is still emitted (it needs no
    # room), as Ollama's runner and llama-server do
    assert total == 513


def test_long_prompt_is_truncated_not_failed(engine: Any) -> None:
    words = " ".join(f"word{i}" for i in range(1500))
    result = submit(engine, chat(words + " Summarise."), temperature=0, num_predict=4).wait()
    assert result.final["done"] is True
    assert result.final["prompt_eval_count"] <= 512  # cut to the context


def test_stop_sequence_spanning_tokens(engine: Any) -> None:
    plain = submit(engine, "1, 2, 3, 4, 5,", temperature=0, num_predict=20).wait().text
    assert " 8," in plain
    stopped = submit(engine, "1, 2, 3, 4, 5,", temperature=0, num_predict=20, stop=["7, 8"]).wait()
    assert stopped.final["done_reason"] == "stop"
    assert stopped.text == plain[: plain.index("7, 8")]


def test_utf8_never_broken(engine: Any) -> None:
    result = submit(
        engine,
        chat("Reply with five emoji and the word 你好."),
        temperature=0.8,
        seed=11,
        num_predict=60,
    ).wait()
    for chunk in result.chunks:
        assert "\ufffd" not in chunk
        chunk.encode("utf-8")


def test_json_format(engine: Any) -> None:
    import json

    from corral.runner.engine import GRAMMARS, Task

    result = Result()
    engine.submit(
        Task(
            tokens=engine.tokenize(chat("Give me a JSON object about a cat.")),
            options={"temperature": 0, "num_predict": 120},
            emit=result.emit,
            grammar=GRAMMARS["json"],
        )
    )
    result.wait()
    if result.final["done_reason"] == "stop":
        assert isinstance(json.loads(result.text), dict)


def test_penalties_apply_and_a_bad_request_fails_alone(engine: Any) -> None:
    from corral.runner.engine import Task

    prompt = chat("List the days of the week, twice.")
    plain = submit(engine, prompt, temperature=0, num_predict=48).wait()
    penalised = submit(
        engine,
        prompt,
        temperature=0,
        num_predict=48,
        repeat_penalty=1.5,
        frequency_penalty=1.0,
        presence_penalty=1.0,
    ).wait()
    assert "error" not in penalised.final and penalised.final["done"]
    assert penalised.text != plain.text
    # an invalid grammar fails its own request with a 400, and the engine keeps serving
    bad = Result()
    engine.submit(
        Task(
            tokens=engine.tokenize(prompt),
            options={"num_predict": 4},
            emit=bad.emit,
            grammar="root ::= (",
        )
    )
    bad.wait()
    assert bad.final.get("status") == 400
    again = submit(engine, prompt, temperature=0, num_predict=48).wait()
    assert again.text == plain.text
