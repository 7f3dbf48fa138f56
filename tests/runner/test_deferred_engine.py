"""A deferred grammar on a real model: free text up to the marker, then the grammar.

The marker is taken from the model's own unconstrained greedy answer (its first words), so
the test knows the model will write it; after it, the output must follow the grammar.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral.runner.grammar.deferred import DeferredGrammar
from tests.runner.engine_harness import Result, chat, started_engine, submit

pytestmark = pytest.mark.model

PROMPT = chat("Tell me about cats.")
DIGITS = 'root ::= "#" [0-9] [0-9] [0-9] "#"'


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    with started_engine(num_ctx=512, num_parallel=2) as started:
        yield started


def _run(engine: Any, grammar: str | None, deferred: DeferredGrammar | None) -> Result:
    from corral.runner.engine import Task

    result = Result()
    engine.submit(
        Task(
            tokens=engine.tokenize(PROMPT),
            options={"temperature": 0, "num_predict": 40},
            emit=result.emit,
            grammar=grammar,
            deferred=deferred,
        )
    )
    return result.wait()


def test_grammar_starts_after_the_marker(engine: Any) -> None:
    free = submit(engine, PROMPT, temperature=0, num_predict=40).wait().text
    words = free.split()
    assert len(words) >= 3, free
    marker = " ".join(words[:2])  # the model's own opening: it will write it again
    deferred = DeferredGrammar.of(DIGITS, marker)
    result = _run(engine, None, deferred)
    assert "error" not in result.final, result.final
    head, found, answer = result.text.partition(marker)
    assert found, result.text
    assert free.startswith(head + marker)  # unconstrained (greedy, same) up to the marker
    assert answer[:1] == "#" and answer[4:5] == "#" and answer[1:4].isdigit(), answer
    assert result.final["done_reason"] == "stop"


def test_marker_never_written_leaves_the_answer_free(engine: Any) -> None:
    free = submit(engine, PROMPT, temperature=0, num_predict=40).wait().text
    result = _run(engine, None, DeferredGrammar.of(DIGITS, "\x00never\x00"))
    assert result.text == free


def test_bad_deferred_grammar_is_refused_at_once(engine: Any) -> None:
    result = _run(engine, None, DeferredGrammar.of("root ::= (", "</think>"))
    assert result.final.get("status") == 400
    assert result.text == ""
