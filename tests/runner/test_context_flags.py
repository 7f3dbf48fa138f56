"""A request's ``truncate`` and ``shift``, and the stop string that ended an answer: the pure
parts, then the engine on SmolLM2 with a small context."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral.runner.slots import INPUT_TOO_LONG, PROMPT_TOO_LONG, StopWatch, check_prompt_length
from corral.runner.text import StopMatcher
from tests.runner.engine_harness import Result, started_engine

# ---- which stop string matched -------------------------------------------------------------


def feed_all(watch: StopWatch, pieces: list[str]) -> tuple[str, bool]:
    shown = ""
    for piece in pieces:
        visible, stopped = watch.feed(piece)
        shown += visible
        if stopped:
            return shown, True
    return shown + watch.flush(), False


@pytest.mark.parametrize(
    ("stops", "pieces", "shown", "matched"),
    [
        (["END"], ["Hello E", "N", "D more"], "Hello ", "END"),
        (["7, 8"], ["1, 2, ", "7", ", ", "8, 9"], "1, 2, ", "7, 8"),
        (["b", "abc"], ["xab", "c"], "xa", "b"),  # the earliest position wins
        (["abc", "ab"], ["xabc"], "x", "abc"),  # same place: the first listed
        (["abc", "ab"], ["xab", "c"], "x", "ab"),  # "ab" is whole before "c" comes
        (["ab", "abc"], ["xab", "c"], "x", "ab"),
        (["STOP"], ["no stop ", "here"], "no stop here", None),
        ([], ["plain"], "plain", None),
        (["", "Z"], ["aZ"], "a", "Z"),  # an empty stop string is no stop
    ],
)
def test_the_stop_string_that_matched_is_known(
    stops: list[str], pieces: list[str], shown: str, matched: str | None
) -> None:
    watch = StopWatch(stops)
    text, stopped = feed_all(watch, pieces)
    assert (text, stopped, watch.matched) == (shown, matched is not None, matched)
    # and what it shows is exactly what the matcher alone shows
    plain = StopMatcher(stops)
    assert feed_all_plain(plain, pieces) == (shown, matched is not None)


def feed_all_plain(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    shown = ""
    for piece in pieces:
        visible, stopped = matcher.feed(piece)
        shown += visible
        if stopped:
            return shown, True
    return shown + matcher.flush(), False


def test_a_prompt_over_the_context_is_refused_only_when_asked() -> None:
    check_prompt_length(100, 100, truncate=False, shift=False)  # fits: fine
    check_prompt_length(101, 100, truncate=True, shift=True)  # cut, as ever
    with pytest.raises(ValueError, match=r"^the input length exceeds the context length$"):
        check_prompt_length(101, 100, truncate=False, shift=True)
    with pytest.raises(ValueError) as caught:
        check_prompt_length(101, 100, truncate=True, shift=False)
    assert str(caught.value) == PROMPT_TOO_LONG
    assert INPUT_TOO_LONG == "the input length exceeds the context length"


# ---- the engine ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with started_engine(num_ctx=128, num_parallel=1) as started:
        yield started


def run(engine: Any, prompt: str, *, truncate: bool = True, shift: bool = True, **opts: Any) -> Any:
    from corral.runner.engine import Task

    result = Result()
    task = Task(
        tokens=engine.tokenize(prompt),
        options={"temperature": 0, **opts},
        emit=result.emit,
        truncate=truncate,
        shift=shift,
    )
    engine.submit(task)
    return result.wait()


LONG = "one two three four five six seven eight nine ten " * 20  # about 200 tokens


@pytest.mark.model
def test_truncate_false_refuses_a_prompt_over_the_context(engine: Any) -> None:
    refused = run(engine, LONG, truncate=False, num_predict=4)
    assert refused.final == {"error": INPUT_TOO_LONG, "status": 400}
    cut = run(engine, LONG, num_predict=4)  # the default cuts it and answers
    assert cut.final["done"] and cut.final["prompt_eval_count"] <= 128


@pytest.mark.model
def test_shift_false_refuses_a_long_prompt_and_stops_at_a_full_context(engine: Any) -> None:
    refused = run(engine, LONG, shift=False, num_predict=4)
    assert refused.final == {"error": PROMPT_TOO_LONG, "status": 400}
    prompt = "1, 2, 3, 4, 5,"
    stopped = run(engine, prompt, shift=False, num_predict=300)
    assert stopped.final["done_reason"] == "length"
    assert stopped.final["eval_count"] < 128  # the context, not num_predict, ended it
    shifted = run(engine, prompt, num_predict=300)
    assert shifted.final["eval_count"] > stopped.final["eval_count"]


@pytest.mark.model
def test_the_done_event_names_the_stop_string(engine: Any) -> None:
    stopped = run(engine, "1, 2, 3, 4, 5,", num_predict=20, stop=["nope", "7, 8"])
    assert stopped.final["done_reason"] == "stop"
    assert stopped.final["stop_sequence"] == "7, 8"
    plain = run(engine, "1, 2, 3, 4, 5,", num_predict=5)
    assert "stop_sequence" not in plain.final
