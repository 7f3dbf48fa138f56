"""Scheduling with real runners: swaps, keep-alive, a bounded queue, metrics."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
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


def _runner_args(server: ServerProcess) -> list[str]:
    """The command line of the server's one runner (what it was really started with)."""
    (pid,) = server.runner_pids()
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


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


async def _burst(url: str, count: int) -> list[httpx.Response]:
    body = {"model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}}
    async with httpx.AsyncClient(timeout=300) as client:
        return await asyncio.gather(
            *(client.post(url + "/api/generate", json=body) for _ in range(count))
        )


BUSY = "server busy, please try again.  maximum pending requests exceeded"


def test_bounded_queue_answers_503_and_stays_healthy(tmp_path: Path) -> None:
    """Why there are 503s: the burst arrives while the model is not loaded, so every request
    waits in the scheduler's queue for that one load; the queue holds 4 (OLLAMA_MAX_QUEUE),
    and the others are refused at once. Requests for a loaded model never wait there (they
    take the runner at once and wait in its queue for a slot), so a second burst once the
    model is loaded gets no 503 at all (as newer Ollama)."""
    with started(tmp_path, OLLAMA_MAX_QUEUE="4") as server:
        _pull(server, "smollm2:135m")
        assert _loaded(server) == []
        responses = asyncio.run(_burst(server.url, 20))
        statuses = [r.status_code for r in responses]
        assert 503 in statuses
        assert 200 in statuses
        assert set(statuses) <= {200, 503}
        refused = [r for r in responses if r.status_code == 503]
        assert all(r.json() == {"error": BUSY} for r in refused)
        busy_count = server.metric("corral_requests_total", route="/api/generate", outcome="busy")
        assert busy_count == len(refused)
        assert _loaded(server) == ["smollm2:135m"]
        again = [r.status_code for r in asyncio.run(_burst(server.url, 20))]
        assert again == [200] * 20, "requests for a loaded model waited in the scheduler"
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


def test_num_parallel_per_request_and_per_model(tmp_path: Path) -> None:
    with started(tmp_path, OLLAMA_MAX_LOADED_MODELS="1") as server:
        _pull(server, "smollm2:135m")
        created = httpx.post(
            server.url + "/api/create",
            json={
                "model": "three-slots",
                "from": "smollm2:135m",
                "parameters": {"num_parallel": 3},
                "stream": False,
            },
            timeout=120,
        )
        assert created.status_code == 200, created.text
        assert _generate(server, "smollm2:135m", options={"num_parallel": 2}).status_code == 200
        assert _arg(_runner_args(server), "--parallel") == "2"
        assert _generate(server, "three-slots").status_code == 200
        assert _arg(_runner_args(server), "--parallel") == "3"
        # unset: any loaded runner will do, whatever its slots
        pid = server.runner_pids()
        assert _generate(server, "three-slots", options={"num_predict": 1}).status_code == 200
        assert server.runner_pids() == pid


def test_unset_context_uses_the_loaded_runner(tmp_path: Path) -> None:
    with started(tmp_path) as server:
        _pull(server, "smollm2:135m")
        assert _generate(server, "smollm2:135m", options={"num_ctx": 2048}).status_code == 200
        pid = server.runner_pids()
        assert _generate(server, "smollm2:135m").status_code == 200  # default 4096, unset
        assert server.runner_pids() == pid
        (loaded,) = httpx.get(server.url + "/api/ps").json()["models"]
        assert loaded["context_length"] == 2048
        bigger = _generate(server, "smollm2:135m", options={"num_ctx": 4096})
        assert bigger.status_code == 200
        assert server.runner_pids() != pid
        log = server.log_path.read_text()
        assert "reload because options changed: num_ctx changed from 2048 to 4096" in log
        assert server.metric("corral_model_loads_total") == 2


#: keep_alive as a request gives it → seconds until /api/ps says it expires (None: never)
KEEP_ALIVE_FORMS: list[tuple[object, float | None]] = [
    ("10m", 600),
    ("1h30m", 5400),
    (10, 10),  # a JSON number is seconds
    (2.5, 2.5),
    ("-1m", None),  # negative: forever
    (-1, None),
]


def test_keep_alive_forms(tmp_path: Path) -> None:
    with started(tmp_path) as server:
        _pull(server, "smollm2:135m")
        for keep_alive, seconds in KEEP_ALIVE_FORMS:
            body = {"model": "smollm2:135m", "keep_alive": keep_alive}
            loaded = httpx.post(server.url + "/api/generate", json=body, timeout=120)
            assert loaded.json()["done_reason"] == "load", loaded.text
            (entry,) = httpx.get(server.url + "/api/ps").json()["models"]
            left = datetime.fromisoformat(entry["expires_at"]) - datetime.now(UTC)
            if seconds is None:
                assert left.days > 365 * 100, keep_alive  # forever
            else:
                assert seconds - 5 < left.total_seconds() <= seconds, keep_alive
        assert server.metric("corral_model_loads_total") == 1  # each one only re-timed it
        for keep_alive in ("0", 0, "300ms"):  # unload right after, or soon after
            answer = _generate(server, "smollm2:135m", keep_alive=keep_alive)
            assert answer.status_code == 200, answer.text
            deadline = time.monotonic() + 10
            while _loaded(server):
                assert time.monotonic() < deadline, f"still loaded after keep_alive {keep_alive!r}"
                time.sleep(0.05)
            assert server.runner_pids() == []
