"""A new request's first token comes from the step that read the rest of its prompt: the
prompt's last token is decoded alone right after that step, not in the next step of every
stream (what a request arriving while others stream waits for)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.runner.engine_harness import Result, chat, started_engine


def _count_steps(engine: Any) -> list[int]:
    """Wrap the engine's step; the list holds how many steps have begun."""
    steps = [0]
    step = engine._step

    def counted() -> None:
        steps[0] += 1
        step()

    engine._step = counted
    return steps


def _steps_to_first_token(engine: Any, steps: list[int], prompt: str) -> int:
    """How many steps began from the request's submission to its first event."""
    from corral.runner.engine import Task

    result = Result()
    at: list[int] = []

    def emit(event: dict[str, Any]) -> None:
        at.append(steps[0])
        result.emit(event)

    before = steps[0]
    options = {"temperature": 0, "num_predict": 1}
    engine.submit(Task(tokens=engine.tokenize(prompt), options=options, emit=emit))
    result.wait()
    return at[0] - before


@pytest.mark.model
def test_a_short_prompt_answers_in_the_step_that_reads_it() -> None:
    with started_engine(num_ctx=512, num_parallel=2) as engine:
        steps = _count_steps(engine)
        prompt = chat("What is the capital of France?")
        assert len(engine.tokenize(prompt)) > 2
        assert _steps_to_first_token(engine, steps, prompt) == 1


@pytest.mark.model
def test_a_prompt_longer_than_a_batch_answers_in_the_step_that_reads_its_end() -> None:
    with started_engine(num_ctx=512, num_parallel=2, num_batch=16) as engine:
        steps = _count_steps(engine)
        prompt = chat("Tell me, in a few words, what a lighthouse keeper does all day long.")
        n = len(engine.tokenize(prompt))
        assert 16 < n <= 32, n  # the prompt but its last token fits in two batches
        assert _steps_to_first_token(engine, steps, prompt) == 2
