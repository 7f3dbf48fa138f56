"""Scheduling with real runners: swaps, keep-alive, a bounded queue, metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model


def _pull(server: ServerProcess, *names: str) -> None:
    for name in names:
        response = httpx.post(
            server.url + "/api/pull", json={"model": name, "stream": False}, timeout=300
        )
        assert response.status_code == 200, response.text


def _generate(server: ServerProcess, model: str, **extra: object) -> httpx.Response:
    body = {
        "model": model,
        "prompt": "Say one word.",
        "stream": False,
        "options": {"num_predict": 3, "temperature": 0},
        **extra,
    }
    return httpx.post(server.url + "/api/generate", json=body, timeout=300)


def _loaded(server: ServerProcess) -> list[str]:
    return [m["name"] for m in httpx.get(server.url + "/api/ps").json()["models"]]


def test_one_model_at_a_time_alternating(tmp_path: Path) -> None:
    with started(tmp_path, OLLAMA_MAX_LOADED_MODELS="1") as server:
        _pull(server, "smollm2:135m", "gemma3:270m")
        for model in ["smollm2:135m", "gemma3:270m", "smollm2:135m", "gemma3:270m"]:
            response = _generate(server, model)
            assert response.status_code == 200, response.text
            assert _loaded(server) == [model]
            assert len(server.runner_pids()) == 1
        metrics = httpx.get(server.url + "/metrics").text
        assert "corral_evictions_total 3.0" in metrics
        assert 'corral_tokens_generated_total{model="gemma3:270m"}' in metrics


def test_keep_alive_expiry_shows_in_ps(tmp_path: Path) -> None:
    with started(tmp_path) as server:
        _pull(server, "smollm2:135m")
        assert _generate(server, "smollm2:135m", keep_alive="1s").status_code == 200
        assert _loaded(server) == ["smollm2:135m"]
        deadline = time.monotonic() + 15
        while _loaded(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _loaded(server) == []
        assert server.runner_pids() == []
        forever = _generate(server, "smollm2:135m", keep_alive=-1)
        assert forever.status_code == 200
        expires = httpx.get(server.url + "/api/ps").json()["models"][0]["expires_at"]
        assert int(expires[:4]) > 2200


async def _burst(url: str, count: int) -> list[int]:
    body = {"model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    async with httpx.AsyncClient(timeout=300) as client:
        responses = await asyncio.gather(
            *(client.post(url + "/api/generate", json=body) for _ in range(count))
        )
    return [r.status_code for r in responses]


def test_bounded_queue_answers_503_and_stays_healthy(tmp_path: Path) -> None:
    with started(tmp_path, OLLAMA_MAX_QUEUE="4") as server:
        _pull(server, "smollm2:135m")
        statuses = asyncio.run(_burst(server.url, 20))
        assert 503 in statuses
        assert 200 in statuses
        assert set(statuses) <= {200, 503}
        busy = httpx.post(
            server.url + "/api/generate",
            json={
                "model": "smollm2:135m",
                "prompt": "Hi",
                "stream": False,
                "options": {"num_predict": 1},
            },
        )
        assert busy.status_code == 200
        assert httpx.get(server.url + "/api/version").status_code == 200
