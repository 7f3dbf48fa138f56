"""Replicas with real runners (``CORRAL_MAX_REPLICAS``): a queue of requests for one model
loads a second runner, ``ps`` and ``/metrics`` show both, and idle replicas go away; with
the default of 1 the same queue stays on one runner."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"


async def _burst(url: str, count: int) -> list[httpx.Response]:
    body = {
        "model": MODEL,
        "prompt": "Count from one to twenty.",
        "stream": False,
        "keep_alive": "10s",
        "options": {"num_predict": 24, "temperature": 0},
    }
    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(
            *(client.post(url + "/api/generate", json=body) for _ in range(count))
        )


def _ps(server: ServerProcess) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = httpx.get(server.url + "/api/ps").json()["models"]
    return models


def _pull(server: ServerProcess) -> None:
    response = httpx.post(
        server.url + "/api/pull", json={"model": MODEL, "stream": False}, timeout=300
    )
    assert response.status_code == 200, response.text


def test_a_queue_loads_a_second_runner_and_idle_replicas_go(tmp_path: Path) -> None:
    with started(tmp_path, CORRAL_MAX_REPLICAS="2", OLLAMA_NUM_PARALLEL="1") as server:
        _pull(server)
        responses = asyncio.run(_burst(server.url, 4))
        assert [r.status_code for r in responses] == [200] * 4, server.log_tail()
        assert all(r.json()["response"] for r in responses)
        models = _ps(server)
        assert sorted(m["replica"] for m in models) == [0, 1], server.log_tail()
        assert all(m["name"] == MODEL and MODEL in m["names"] for m in models)
        assert len(server.runner_pids()) == 2
        assert server.metric("corral_model_runners", model=MODEL) == 2.0
        table = subprocess.run(
            [sys.executable, "-m", "corral", "ps"],
            env=server.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        assert "REPLICA" in table[0] and len(table) == 3
        assert sorted(line.split()[-1] for line in table[1:]) == ["0", "1"]
        assert "loading replica 1 of model smollm2:135m" in server.log_tail(200)
        deadline = time.monotonic() + 60
        while _ps(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ps(server) == [], server.log_tail()
        assert "idle replica" in server.log_tail(200)


def test_the_default_keeps_one_runner(tmp_path: Path) -> None:
    with started(tmp_path, OLLAMA_NUM_PARALLEL="1") as server:
        _pull(server)
        responses = asyncio.run(_burst(server.url, 4))
        assert [r.status_code for r in responses] == [200] * 4, server.log_tail()
        models = _ps(server)
        assert len(models) == 1 and "replica" not in models[0]
        assert len(server.runner_pids()) == 1
