"""Gemma 3's sliding-window layers in a window-sized cache (n_swa + a batch per slot, as
llama-server keeps them): a cached prompt is reused only where the window cache still holds
what the next token looks back on, and a full context still shifts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from corral.runner.engine import Engine, Task
from tests.runner.engine_harness import Result, gemma_file, started_engine

pytestmark = pytest.mark.model


def _turn(text: str, answer: str = "") -> str:
    return f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n{answer}"


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gemma_file(tmp_path_factory.mktemp("gemma"))


def _run(engine: Engine, tokens: list[int], **options: Any) -> Result:
    result = Result()
    task = Task(tokens=tokens, options={"temperature": 0, **options}, emit=result.emit)
    engine.submit(task)
    return result.wait()


def _long_prompt(engine: Engine, words: int) -> list[int]:
    facts = " ".join(f"Item {i} is {'red' if i % 3 else 'blue'}." for i in range(words))
    return engine.tokenize(_turn(f"{facts} What colour is item 7? One word."))


def test_the_runner_keeps_a_window_sized_cache_and_may_shift_it(gemma: Path) -> None:
    with started_engine(gemma, num_ctx=4096) as engine:
        assert engine._n_swa == 512
        assert engine._swa_shift  # llama.cpp itself refuses: the two caches differ in size


def test_a_long_prompt_asked_again_comes_from_the_cache_with_the_same_answer(
    gemma: Path,
) -> None:
    with started_engine(gemma, num_ctx=4096) as engine:
        prompt = _long_prompt(engine, 300)
        assert len(prompt) > 1500  # longer than the window cache (512 + 512 cells)
        first = _run(engine, prompt, num_predict=8)
        again = _run(engine, prompt, num_predict=8)
    assert first.final["prompt_cached"] == 0
    assert again.final["prompt_cached"] == len(prompt) - 1  # all but the last token
    assert again.text == first.text


def test_a_short_shared_start_is_read_again_when_the_window_cache_has_moved_on(
    gemma: Path,
) -> None:
    with started_engine(gemma, num_ctx=4096) as engine:
        long = _long_prompt(engine, 300)
        start = long[:300]  # the window cache no longer holds what position 300 looks back on
        question = " What colour is item 1? One word.<end_of_turn>\n<start_of_turn>model\n"
        other = start + engine.tokenize(question, add_special=False)
        fresh = _run(engine, other, num_predict=12)  # before anything shares its start
        _run(engine, long, num_predict=1)
        again = _run(engine, other, num_predict=12)
    assert again.final["prompt_cached"] == 0  # read again, not the stale window
    assert again.text == fresh.text


def test_a_full_context_shifts_and_the_answer_goes_on(gemma: Path) -> None:
    with started_engine(gemma, num_ctx=1152) as engine:
        tokens = engine.tokenize(
            _turn("Count from 1 to 3000, separated by commas.", "1, 2, 3, 4, 5,")
        )
        result = _run(engine, tokens, num_predict=1300)  # past the 1152-token context
    assert result.final["done_reason"] == "length", result.final
    assert result.final["eval_count"] == 1300
    numbers = [int(n) for n in result.text.replace(",", " ").split() if n.isdigit()]
    tail = numbers[-51:-1]  # the last one may be cut short
    assert tail == list(range(tail[0], tail[0] + len(tail)))  # still counting, in order


def test_a_window_too_short_for_a_shift_ends_the_answer_at_the_context(gemma: Path) -> None:
    # 1000 cells (1024 with padding) and a window cache of 512 + 64 (768): after dropping
    # half, the window would reach back into the kept start
    with started_engine(gemma, num_ctx=1000, num_batch=64) as engine:
        assert not engine._can_shift
        tokens = engine.tokenize(_turn("Count from 1 to 3000, separated by commas.", "1, 2,"))
        result = _run(engine, tokens, num_predict=1100)
    assert result.final["done_reason"] == "length"
    assert result.final["eval_count"] < 1100
    assert len(tokens) + result.final["eval_count"] <= 1000 + 1  # the last one never read


def test_concurrent_slots_share_nothing_through_the_window_cache(gemma: Path) -> None:
    with started_engine(gemma, num_ctx=2048, num_parallel=2) as engine:
        prompt = _long_prompt(engine, 200)
        alone = _run(engine, prompt, num_predict=8)
        results: list[Result] = []
        threads = [
            threading.Thread(target=lambda p=p: results.append(_run(engine, p, num_predict=8)))
            for p in (prompt, _long_prompt(engine, 150))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert alone.text in [r.text for r in results]
