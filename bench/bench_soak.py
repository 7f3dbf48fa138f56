"""Soak benchmark: N clients for M minutes against a real ``corral serve``.

Starts ``corral serve`` on a free loopback port with a fresh store, pulls the chat model and
the embedding model through ``/api/pull`` (the catalogue imports the bundled ones offline),
then runs N clients, each looping until the time is up over a mix of requests:
``/api/chat`` streamed, ``/api/generate``, ``/api/embed``, ``/v1/chat/completions``, and a
streamed chat the client leaves after its first chunks (an early disconnect). It prints
the statuses counted per kind, p50/p99 latency, generated tokens/s (all clients together)
and the resident memory of the server and of its runners, sampled every 10 s from /proc.
It asserts nothing: the figures are for reading.

Usage: .venv/bin/python bench/bench_soak.py [--clients 8] [--minutes 2]
       [--model smollm2:135m] [--embed-model all-minilm] [--num-predict 48] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from _serve import free_port, rss_mb, start_server, stop

PROMPTS = (
    "Write a haiku about the sea.",
    "List three uses of a paperclip.",
    "Explain what a lighthouse does in two sentences.",
    "Give me a short recipe for toast.",
    "What is the capital of France? Answer briefly.",
)
KINDS = ("chat_stream", "generate", "embed", "openai_chat", "disconnect")
WEIGHTS = (3, 2, 2, 2, 1)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str
    status: str  # the HTTP status, "left" (early disconnect) or an exception's class name
    seconds: float
    tokens: int


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the runners), from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


async def one_request(
    client: httpx.AsyncClient, kind: str, args: argparse.Namespace, rng: random.Random
) -> Outcome:
    prompt = rng.choice(PROMPTS)
    options = {"num_predict": args.num_predict, "temperature": 0.7, "seed": rng.randrange(1000)}
    start = time.perf_counter()
    tokens = 0
    if kind in ("chat_stream", "disconnect"):
        body = {
            "model": args.model,
            "messages": [{"role": "user", "content": prompt}],
            "options": options,
        }
        async with client.stream("POST", "/api/chat", json=body) as response:
            status = str(response.status_code)
            chunks = 0
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                chunks += 1
                if kind == "disconnect" and chunks >= 3:
                    status = "left"
                    break  # closing the stream here drops the connection mid-answer
                if "error" in event:
                    status = f"{status}+error"
                if event.get("done"):
                    tokens = int(event.get("eval_count", 0))
    elif kind == "generate":
        body = {"model": args.model, "prompt": prompt, "options": options, "stream": False}
        response = await client.post("/api/generate", json=body)
        status = str(response.status_code)
        if response.status_code == 200:
            tokens = int(response.json().get("eval_count", 0))
    elif kind == "embed":
        inputs = [rng.choice(PROMPTS) for _ in range(rng.randint(1, 4))]
        response = await client.post(
            "/api/embed", json={"model": args.embed_model, "input": inputs}
        )
        status = str(response.status_code)
    else:
        body = {
            "model": args.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": args.num_predict,
            "temperature": 0.7,
        }
        response = await client.post("/v1/chat/completions", json=body)
        status = str(response.status_code)
        if response.status_code == 200:
            tokens = int(response.json().get("usage", {}).get("completion_tokens", 0))
    return Outcome(kind, status, time.perf_counter() - start, tokens)


async def client_loop(
    url: str, index: int, deadline: float, args: argparse.Namespace, results: list[Outcome]
) -> None:
    rng = random.Random(index)
    timeout = httpx.Timeout(300.0, connect=10.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        while time.monotonic() < deadline:
            kind = rng.choices(KINDS, WEIGHTS)[0]
            start = time.perf_counter()
            try:
                results.append(await one_request(client, kind, args, rng))
            except httpx.HTTPError as exc:
                results.append(Outcome(kind, type(exc).__name__, time.perf_counter() - start, 0))


async def sampler(
    server: subprocess.Popen[bytes], every_s: float, stop_at: asyncio.Event, rows: list[Any]
) -> None:
    began = time.monotonic()
    while True:
        runners = descendants(server.pid)
        rows.append(
            (
                round(time.monotonic() - began),
                round(rss_mb(server.pid), 1),
                round(sum(rss_mb(p) for p in runners), 1),
                len(runners),
            )
        )
        try:
            await asyncio.wait_for(stop_at.wait(), every_s)
            return
        except TimeoutError:
            continue


async def soak(
    url: str, server: subprocess.Popen[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    results: list[Outcome] = []
    memory: list[Any] = []
    done = asyncio.Event()
    watcher = asyncio.create_task(sampler(server, args.sample_s, done, memory))
    began = time.monotonic()
    deadline = began + args.minutes * 60
    await asyncio.gather(
        *(client_loop(url, i, deadline, args, results) for i in range(args.clients))
    )
    elapsed = time.monotonic() - began
    done.set()
    await watcher
    runners = descendants(server.pid)
    memory.append(
        (
            round(elapsed),
            round(rss_mb(server.pid), 1),
            round(sum(rss_mb(p) for p in runners), 1),
            len(runners),
        )
    )
    return summarize(results, memory, elapsed)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)
    )


def summarize(results: list[Outcome], memory: list[Any], elapsed: float) -> dict[str, Any]:
    kinds: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in results if r.kind == kind]
        latencies = sorted(r.seconds for r in mine)
        kinds[kind] = {
            "requests": len(mine),
            "statuses": dict(Counter(r.status for r in mine)),
            "p50_s": round(_pct(latencies, 50), 3),
            "p99_s": round(_pct(latencies, 99), 3),
            "tokens": sum(r.tokens for r in mine),
        }
    tokens = sum(r.tokens for r in results)
    return {
        "elapsed_s": round(elapsed, 1),
        "requests": len(results),
        "statuses": dict(Counter(r.status for r in results)),
        "tokens": tokens,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed else 0.0,
        "kinds": kinds,
        "memory": [
            {"t_s": t, "server_rss_mb": s, "runners_rss_mb": r, "runners": n}
            for t, s, r, n in memory
        ],
    }


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"soak: {args.clients} clients x {args.minutes} min, {report['requests']} requests in"
        f" {report['elapsed_s']} s; statuses {report['statuses']};"
        f" {report['tokens']} tokens generated, {report['tokens_per_s']} tok/s"
    )
    print()
    print("| request | count | statuses | p50 | p99 |")
    print("|---|---|---|---|---|")
    for kind, row in report["kinds"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row["statuses"].items()))
        print(
            f"| {kind} | {row['requests']} | {statuses} | {row['p50_s']:.2f} s"
            f" | {row['p99_s']:.2f} s |"
        )
    print()
    print("| t (s) | server RSS (MB) | runners RSS (MB) | runners |")
    print("|---|---|---|---|")
    for row in report["memory"]:
        print(
            f"| {row['t_s']} | {row['server_rss_mb']} | {row['runners_rss_mb']} |"
            f" {row['runners']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--embed-model", default="all-minilm")
    parser.add_argument("--num-predict", type=int, default=48)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON too")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="corral-soak-"))
    host = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(workdir / "models"),
        "HOME": str(workdir),
    }
    env.pop("CORRAL_API_KEY", None)
    url = f"http://{host}"
    server = start_server(env, workdir / "server.log")
    try:
        for model in (args.model, args.embed_model):
            pulled = httpx.post(
                url + "/api/pull", json={"model": model, "stream": False}, timeout=900
            )
            if pulled.status_code != 200:
                raise RuntimeError(f"pull {model}: {pulled.status_code} {pulled.text}")
        # load both models before the clock starts
        httpx.post(url + "/api/generate", json={"model": args.model}, timeout=300)
        httpx.post(url + "/api/embed", json={"model": args.embed_model, "input": "x"}, timeout=300)
        report = asyncio.run(soak(url, server, args))
    finally:
        stop(server)
    print_report(report, args)
    print(f"\nserver log: {workdir / 'server.log'}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
