"""A frozen runner is found and killed; a busy one is left alone.

Before: ``kill -STOP`` on a runner while it decoded hung its chat until the client gave up
(50 s), and an embed on a *different* model waited as long (the stopped runner held the
CPU turn). Now the watchdog (``CORRAL_RUNNER_STALL_TIMEOUT``) asks a silent runner for its
health and kills one that does not answer.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("watchdog")
    with started(tmp, CORRAL_RUNNER_STALL_TIMEOUT="1s") as server:
        for model in ("smollm2:135m", "all-minilm"):
            pulled = httpx.post(
                server.url + "/api/pull", json={"model": model, "stream": False}, timeout=300
            )
            assert pulled.status_code == 200, pulled.text
        yield server


def test_a_stopped_runner_is_killed_and_the_others_go_on(watched: ServerProcess) -> None:
    body = {
        "model": "smollm2:135m",
        "prompt": "Write a very long story about dragons.",
        "options": {"num_predict": 4000, "temperature": 0},
    }
    with httpx.stream("POST", watched.url + "/api/generate", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        (pid,) = watched.runner_pids()
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        rest = [json.loads(line) for line in lines if line]
    waited = time.monotonic() - stopped_at
    error = rest[-1]["error"]
    assert "model runner stopped responding: stopped by corral: no output for 1 s" in error
    assert waited < 15, waited  # 1 s of silence, a health check of at most 5 s, the kill
    assert "stopped by corral: no output for 1 s" in watched.log_path.read_text()
    embed = httpx.post(
        watched.url + "/api/embed", json={"model": "all-minilm", "input": "hi"}, timeout=60
    )
    assert embed.status_code == 200, embed.text
    again = httpx.post(
        watched.url + "/api/generate",
        json={**body, "stream": False, "options": {"num_predict": 3}},
        timeout=120,
    )
    assert again.status_code == 200, again.text
    assert pid not in watched.runner_pids()


def test_a_busy_silent_runner_is_not_killed(watched: ServerProcess) -> None:
    """A long prompt keeps a runner silent for longer than the stall timeout (1 s here); it
    still answers health checks, so it is left to finish."""
    words = " ".join(f"item{i} is a fact about otters." for i in range(300))
    response = httpx.post(
        watched.url + "/api/generate",
        json={
            "model": "smollm2:135m",
            "prompt": words + " Summarise.",
            "stream": False,
            "options": {"num_predict": 2, "num_ctx": 4096},
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    final = response.json()
    assert final["prompt_eval_count"] > 1500
    assert final["prompt_eval_duration"] > 1e9, "the prompt took under the stall timeout"
