"""Scheduler benchmark: per-request overhead, model swap time, mixed load over two models.

- overhead: ``acquire`` + ``release`` of an already loaded runner, in-process with a fake
  runner (no I/O), median microseconds over many iterations;
- swap: with ``OLLAMA_MAX_LOADED_MODELS=1``, alternate requests between smollm2:135m and
  gemma3:270m on a real server; median seconds per request that must evict and load, and
  the server-reported ``load_duration``;
- mixed: N clients, each sending requests back to back, half to each model (both loaded),
  for a fixed time: requests/s, generated tokens/s, latency p50/p99.

Usage: .venv/bin/python bench/bench_scheduler.py [--clients 8] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.api.options import Options  # noqa: E402
from corral.config import Settings  # noqa: E402
from corral.estimate import Estimate  # noqa: E402
from corral.runner.settings import LoadSettings  # noqa: E402
from corral.scheduler import ModelSpec, RunnerLike, Scheduler  # noqa: E402

MODELS = ("smollm2:135m", "gemma3:270m")


class _Fake:
    """A runner that is always there: only the scheduler's own bookkeeping is timed."""

    def __init__(self, config: LoadSettings) -> None:
        self.config = config
        self._stopped = asyncio.Event()

    @property
    def alive(self) -> bool:
        return not self._stopped.is_set()

    @property
    def pid(self) -> int:
        return 1

    async def stop(self, grace: float = 5.0) -> None:
        self._stopped.set()

    async def exited(self) -> str:
        await self._stopped.wait()
        return "exit status 0"


async def overhead(iterations: int = 20000) -> float:
    async def factory(config: LoadSettings) -> RunnerLike:
        return cast(RunnerLike, _Fake(config))

    scheduler = Scheduler(
        Settings(num_parallel=1), factory, estimator=lambda c, s: Estimate.on_cpu(0)
    )
    spec = ModelSpec("m", "m", "0" * 64, "/nonexistent.gguf", 1)
    options = Options.merged({})
    async with scheduler.acquire(spec, options, None):
        pass
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        async with scheduler.acquire(spec, options, None):
            pass
        samples.append(time.perf_counter() - start)
    await scheduler.shutdown()
    return statistics.median(samples) * 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(**env: str) -> tuple[subprocess.Popen[bytes], str]:
    host = f"127.0.0.1:{free_port()}"
    full = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": tempfile.mkdtemp(prefix="corral-bench-"),
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve"],
        env=full,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{host}"
    for _ in range(600):
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    for model in MODELS:
        httpx.post(url + "/api/pull", json={"model": model, "stream": False}, timeout=600)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def generate(url: str, model: str, n: int = 1) -> dict[str, float]:
    body = {
        "model": model,
        "prompt": "Hello",
        "stream": False,
        "options": {"num_predict": n, "temperature": 0},
    }
    return httpx.post(url + "/api/generate", json=body, timeout=600).json()


def swap(repeats: int) -> tuple[float, float]:
    proc, url = start_server(OLLAMA_MAX_LOADED_MODELS="1")
    try:
        generate(url, MODELS[0])
        walls, loads = [], []
        for i in range(repeats * 2):
            model = MODELS[(i + 1) % 2]
            start = time.perf_counter()
            result = generate(url, model)
            walls.append(time.perf_counter() - start)
            loads.append(result["load_duration"] / 1e9)
        return statistics.median(walls), statistics.median(loads)
    finally:
        stop(proc)


async def mixed(clients: int, seconds: float) -> dict[str, float]:
    proc, url = start_server()
    try:
        for model in MODELS:
            generate(url, model)
        latencies: list[float] = []
        tokens = 0
        deadline = time.perf_counter() + seconds

        async def client(index: int) -> None:
            nonlocal tokens
            model = MODELS[index % 2]
            body = {
                "model": model,
                "prompt": f"Tell me a fact, number {index}.",
                "stream": False,
                "options": {"num_predict": 32, "temperature": 0.7},
            }
            async with httpx.AsyncClient(timeout=600) as http:
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    data = (await http.post(url + "/api/generate", json=body)).json()
                    latencies.append(time.perf_counter() - start)
                    tokens += int(data.get("eval_count", 0))

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - started
        ordered = sorted(latencies)
        return {
            "clients": clients,
            "requests_per_s": round(len(ordered) / elapsed, 2),
            "tokens_per_s": round(tokens / elapsed, 1),
            "latency_p50_s": round(ordered[len(ordered) // 2], 3),
            "latency_p99_s": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        }
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--swaps", type=int, default=5)
    args = parser.parse_args()
    swap_wall, swap_load = swap(args.swaps)
    result = {
        "acquire_release_median_us": round(asyncio.run(overhead()), 1),
        "swap_request_median_s": round(swap_wall, 3),
        "swap_load_duration_median_s": round(swap_load, 3),
        "mixed": asyncio.run(mixed(args.clients, args.seconds)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
