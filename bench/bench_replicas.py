"""Replicas benchmark: aggregate generated tokens/s and p99 latency of N concurrent requests
to one model with ``CORRAL_MAX_REPLICAS`` 1 and 2 (``OLLAMA_NUM_PARALLEL=1``, so one runner
serves one request at a time and a second runner is the only way to serve two).

Each setting gets its own real ``corral serve`` and store; smollm2:135m is pulled from the
bundled catalogue and warmed with one request; then ``--rounds`` bursts of ``--clients``
concurrent ``/api/generate`` requests (``--tokens`` each, greedy). The first burst with 2
replicas includes the second runner's load (the burst is what triggers it); later bursts
find it loaded (it stays for its idle time, 30 s). Medians over the rounds.

On a machine with few cores two CPU runners share the same cores (and corral's CPU turn
lets one decode step run at a time): this shows the mechanism, not a speed-up.

Usage: .venv/bin/python bench/bench_replicas.py [--clients 8] [--rounds 3] [--tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _serve import free_port, start_server, stop

MODEL = "smollm2:135m"


async def _burst(url: str, clients: int, tokens: int) -> tuple[float, float, float]:
    """One burst: (aggregate tokens/s, p99 latency s, wall s)."""

    async def one(client: httpx.AsyncClient, n: int) -> tuple[float, int]:
        body = {
            "model": MODEL,
            "prompt": f"Write a short story about a lighthouse keeper, part {n}.",
            "stream": False,
            "options": {"num_predict": tokens, "temperature": 0},
        }
        started = time.perf_counter()
        response = await client.post(url + "/api/generate", json=body)
        response.raise_for_status()
        return time.perf_counter() - started, int(response.json().get("eval_count", 0))

    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(client, n) for n in range(clients)))
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]  # nearest rank: the max of 8
    return sum(r[1] for r in results) / wall, p99, wall


def run(replicas: int, clients: int, rounds: int, tokens: int) -> dict[str, float]:
    host = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": tempfile.mkdtemp(prefix="corral-bench-"),
        "OLLAMA_NUM_PARALLEL": "1",
        "CORRAL_MAX_REPLICAS": str(replicas),
    }
    url = f"http://{host}"
    proc = start_server(env)
    try:
        httpx.post(url + "/api/pull", json={"model": MODEL, "stream": False}, timeout=600)
        httpx.post(
            url + "/api/generate",
            json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}},
            timeout=600,
        ).raise_for_status()
        bursts = [asyncio.run(_burst(url, clients, tokens)) for _ in range(rounds)]
        runners = len(httpx.get(url + "/api/ps").json()["models"])
    finally:
        stop(proc)
    return {
        "tokens_per_s": statistics.median(b[0] for b in bursts),
        "p99_s": statistics.median(b[1] for b in bursts),
        "wall_s": statistics.median(b[2] for b in bursts),
        "first_wall_s": bursts[0][2],
        "runners": runners,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"{args.clients} concurrent requests x {args.tokens} tokens, median of {args.rounds}")
    print(f"{'replicas':>8} {'tok/s':>8} {'p99 s':>8} {'wall s':>8} {'1st wall':>9} {'runners':>8}")
    for replicas in (1, 2):
        r = run(replicas, args.clients, args.rounds, args.tokens)
        print(
            f"{replicas:>8} {r['tokens_per_s']:>8.1f} {r['p99_s']:>8.2f} {r['wall_s']:>8.2f}"
            f" {r['first_wall_s']:>9.2f} {int(r['runners']):>8}"
        )


if __name__ == "__main__":
    main()
