"""Server lifecycle: clean shutdown, no orphan runners, the second bundled model."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import ollama
import pytest

from tests.conftest import ServerProcess, processes, start_server, started, stop_server

pytestmark = pytest.mark.model


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[1].split()[0] == "Z")


def _wait_gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _load(url: str) -> None:
    httpx.post(url + "/api/pull", json={"model": "smollm2:135m", "stream": False}, timeout=120)
    response = httpx.post(url + "/api/generate", json={"model": "smollm2:135m"}, timeout=120)
    assert response.json()["done_reason"] == "load"


def test_sigterm_stops_runners(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        _load(server.url)
        runners = server.runner_pids()
        assert len(runners) == 1
    finally:
        stop_server(server)
    assert server.process.returncode == 0
    assert _wait_gone(runners[0])
    assert "Listening on 127.0.0.1" in server.log_path.read_text()


def test_killed_server_leaves_no_orphan_runner(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        _load(server.url)
        runners = server.runner_pids()
        assert len(runners) == 1
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        assert _wait_gone(runners[0]), "runner outlived its server"
    finally:
        stop_server(server)


def test_gemma3_answers(tmp_path: Path) -> None:
    with started(tmp_path) as server:
        client = ollama.Client(host=server.url)
        try:
            statuses = [p.status for p in client.pull("gemma3:270m", stream=True)]
            assert statuses[-1] == "success"
            shown = client.show("gemma3:270m")
            assert "<start_of_turn>" in (shown.template or "")
            assert shown.details.family == "gemma3"
            # The package ships the pretrained (not instruction-tuned) Gemma 3 270M: check
            # the chat path end to end, and knowledge through plain completion.
            reply = client.chat(
                model="gemma3:270m",
                messages=[
                    {"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": "What is the capital of France?"},
                ],
                options={"temperature": 0, "num_predict": 16},
            )
            assert reply.message.content.strip()
            assert reply.done_reason in {"stop", "length"}
            assert reply.eval_count and reply.eval_count <= 16
            completion = client.generate(
                model="gemma3:270m",
                prompt="The Eiffel Tower is in the city of",
                raw=True,
                options={"temperature": 0, "num_predict": 4},
            )
            assert "Paris" in completion.response
        finally:
            client._client.close()


def _refused(server: ServerProcess, seconds: float = 5) -> bool:
    """Whether new connections are refused within ``seconds`` (the listener is closed)."""
    host, port = server.host.rsplit(":", 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_stream_lets_it_finish(tmp_path: Path, sig: signal.Signals) -> None:
    # within the shutdown timeout, a stream may finish (test_hardened: past it, it is ended)
    server = start_server(tmp_path, CORRAL_SHUTDOWN_TIMEOUT="60s")
    try:
        _load(server.url)
        (runner,) = server.runner_pids()
        body = {
            "model": "smollm2:135m",
            "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
            "raw": True,
            "options": {"num_predict": 120, "temperature": 0},
        }
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["done"] is False
            server.process.send_signal(sig)
            assert _refused(server), "still accepting connections after the signal"
            rest = [json.loads(line) for line in lines if line]
        assert rest[-1]["done"] is True, rest[-1]  # finished within the grace period
        assert rest[-1]["eval_count"] > 1
        assert server.process.wait(timeout=30) == 0
        assert _wait_gone(runner), "runner outlived its server"
    finally:
        stop_server(server)


def test_load_timeout_kills_the_runner_and_says_why(tmp_path: Path) -> None:
    with started(tmp_path, OLLAMA_LOAD_TIMEOUT="50ms") as server:
        httpx.post(
            server.url + "/api/pull", json={"model": "smollm2:135m", "stream": False}, timeout=120
        )
        response = httpx.post(
            server.url + "/api/generate",
            json={"model": "smollm2:135m", "prompt": "hi", "stream": False},
            timeout=60,
        )
        assert response.status_code == 500, response.text
        assert response.json() == {"error": "timed out waiting for llama runner to start"}
        assert server.runner_pids() == []
        models = str(server.models_dir).encode()
        assert not [pid for pid, _, cmdline in processes() if models in cmdline], "orphan runner"
        assert httpx.get(server.url + "/api/ps").json() == {"models": []}
        assert "loading model smollm2:135m failed" in server.log_path.read_text()


def test_runner_killed_while_idle_leaves_ps_at_once(tmp_path: Path) -> None:
    with started(tmp_path) as server:
        _load(server.url)
        (runner,) = server.runner_pids()
        os.kill(runner, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while httpx.get(server.url + "/api/ps").json()["models"]:
            assert time.monotonic() < deadline, "a dead runner is still listed"
            time.sleep(0.05)
        log = server.log_path.read_text()
        assert "runner for model smollm2:135m" in log
        assert "stopped unexpectedly: killed by signal 9 (SIGKILL)" in log
        again = httpx.post(
            server.url + "/api/generate",
            json={
                "model": "smollm2:135m",
                "prompt": "hi",
                "stream": False,
                "options": {"num_predict": 2},
            },
            timeout=120,
        )
        assert again.status_code == 200, again.text
        assert "reload because runner died (killed by signal 9" in server.log_path.read_text()
