"""What the server benchmarks share: a free loopback port, a process's RSS, and a real
``corral serve`` started and stopped (imported by the ``bench_*.py`` scripts, run from any
directory: each script's own folder is on ``sys.path``)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["free_port", "rss_mb", "start_server", "stop"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """``corral serve`` on ``env["OLLAMA_HOST"]``, once it answers (its output to ``log``)."""
    argv = [sys.executable, "-m", "corral", "serve"]
    if log is None:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out)
    url = f"http://{env['OLLAMA_HOST']}"
    for _ in range(1200):
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start" + (f" (log: {log})" if log else ""))


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
