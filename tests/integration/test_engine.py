"""A runner that dies for engine reasons: the client and the log say why, and how to fix it."""

from __future__ import annotations

import json
import os
import platform
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model


def _generate(server: ServerProcess, model: str, **options: object) -> httpx.Response:
    body = {"model": model, "prompt": "hi", "stream": False, "options": options}
    return httpx.post(server.url + "/api/generate", json=body, timeout=120)


def test_runner_killed_by_sigill_mid_stream(server: ServerProcess, smollm2: str) -> None:
    body = {
        "model": smollm2,
        "prompt": "Write a very long story about dragons.",
        "options": {"num_predict": 2000, "temperature": 0},
    }
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        next(lines)
        (pid,) = server.runner_pids()
        os.kill(pid, signal.SIGILL)  # as a kernel compiled for another CPU would die
        rest = [json.loads(line) for line in lines if line]
    error = rest[-1]["error"]
    assert "killed by signal 4 (SIGILL)" in error
    assert "instructions this CPU cannot run" in error
    assert "./install.sh --rebuild-engine" in error
    log = server.log_path.read_text()
    assert "stopped unexpectedly: killed by signal 4 (SIGILL): the engine (llama.cpp)" in log
    again = _generate(server, smollm2, num_predict=2)
    assert again.status_code == 200, again.text
    assert server.runner_pids() != [pid]


def test_a_crash_carries_llama_cpp_s_last_lines(server: ServerProcess, smollm2: str) -> None:
    body = {"model": smollm2, "prompt": "Count to a thousand.", "options": {"num_predict": 2000}}
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        (pid,) = server.runner_pids()
        os.kill(pid, signal.SIGSEGV)
        rest = [json.loads(line) for line in lines if line]
    assert "killed by signal 11 (SIGSEGV): llama.cpp crashed" in rest[-1]["error"]
    assert "stopped unexpectedly: killed by signal 11 (SIGSEGV): llama.cpp crashed" in (
        server.log_path.read_text()
    )
    assert _generate(server, smollm2, num_predict=2).status_code == 200


@pytest.fixture
def old_cpu(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose runners see a CPU with SSE only: this machine's build is too new."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 pni\n")
    with started(tmp_path, CORRAL_CPUINFO=str(cpuinfo)) as server:
        pulled = httpx.post(
            server.url + "/api/pull", json={"model": "smollm2:135m", "stream": False}, timeout=120
        )
        assert pulled.status_code == 200, pulled.text
        yield server


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 instruction sets")
def test_a_build_this_cpu_cannot_run_is_refused_with_the_fix(old_cpu: ServerProcess) -> None:
    response = _generate(old_cpu, "smollm2:135m", num_predict=2)
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error.startswith("llama runner process has terminated: exit status 78: ")
    assert "built for instructions this CPU cannot run (AVX" in error
    assert "./install.sh --rebuild-engine" in error
    assert "instructions this CPU cannot run" in old_cpu.log_path.read_text()
    assert httpx.get(old_cpu.url + "/api/version", timeout=10).status_code == 200
