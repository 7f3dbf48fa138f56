"""Shared fixtures: real ``corral serve`` processes on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


def processes() -> Iterator[tuple[int, Path, bytes]]:
    """(pid, /proc/<pid>, command line) of every process still there when read."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry.name), entry, cmdline


def parent_pid(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    host: str
    models_dir: Path
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def env(self) -> dict[str, str]:
        return {**os.environ, "OLLAMA_HOST": self.host, "OLLAMA_MODELS": str(self.models_dir)}

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the server's ``/metrics`` samples named ``name`` that carry ``labels``
        (0 when there are none)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics").text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += float(sample.value)
        return total

    def runner_pids(self) -> list[int]:
        """Runner processes started by this server (children running corral.runner)."""
        return [
            pid
            for pid, proc_dir, cmdline in processes()
            if b"corral.runner" in cmdline and parent_pid(proc_dir) == self.process.pid
        ]


def start_server(tmp: Path, **env: str) -> ServerProcess:
    port = free_port()
    host = f"127.0.0.1:{port}"
    models_dir = tmp / "models"
    log_path = tmp / f"server-{port}.log"
    full_env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(models_dir),
        "HOME": str(tmp),
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=full_env,
        )
    server = ServerProcess(process, f"http://{host}", host, models_dir, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"corral serve exited early:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"corral serve did not answer in time:\n{server.log_tail()}")
        time.sleep(0.1)


def stop_server(server: ServerProcess) -> None:
    stop_process(server.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, 20 s to exit, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server per test module, with its own empty store."""
    tmp = tmp_path_factory.mktemp("corral")
    proc = start_server(tmp)
    try:
        yield proc
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def smollm2(server: ServerProcess) -> str:
    """The server with smollm2:135m pulled from the bundled catalogue."""
    response = httpx.post(
        server.url + "/api/pull", json={"model": "smollm2:135m", "stream": False}, timeout=120
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    return "smollm2:135m"


@contextlib.contextmanager
def started(tmp: Path, **env: str) -> Iterator[ServerProcess]:
    proc = start_server(tmp, **env)
    try:
        yield proc
    finally:
        stop_server(proc)
