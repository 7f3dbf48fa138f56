"""What spreading a model over RPC workers costs: decode tokens/s and load time of
SmolLM2-135M through ``corral serve`` with its layers here, on 1 worker, on 2 workers.

    python bench/bench_rpc.py [--runs 3] [--tokens 64]

Workers are ``corral rpc-worker`` processes on loopback (``--threads 1`` each); the server
runs with ``CORRAL_RPC_ONLY=1`` so the small model is placed on them. Each configuration:
one warm-up request (the load), then ``--runs`` greedy generations, interleaved across
configurations; the median decode rate (Ollama's ``eval_count / eval_duration``) and the
load time of the warm-up are printed as a table and as JSON.

On one machine every "host" shares the same cores: this measures the overhead of the RPC
hops (one round trip per worker per token, the hosts taking turns), not a speed-up. The
point of workers is memory: a model that does not fit one host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import free_port, start_server, stop

MODEL = "smollm2:135m"
PROMPT = "Write a short story about a lighthouse keeper and a storm."


def _worker(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corral", "rpc-worker", "--port", str(port), "--threads", "1"],
            stdout=out,
            stderr=out,
        )
    from corral.rpc.probe import probe

    for _ in range(200):
        if probe(f"127.0.0.1:{port}").ok:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"worker on {port} did not start (log: {log})")


def _generate(url: str, tokens: int) -> dict[str, float]:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "stream": False,
        "options": {"temperature": 0, "top_k": 1, "num_predict": tokens, "num_ctx": 1024},
    }
    data = httpx.post(url + "/api/generate", json=body, timeout=300).json()
    return {
        "decode_tok_s": data["eval_count"] / (data["eval_duration"] / 1e9),
        "load_s": data["load_duration"] / 1e9,
        "prompt_s": data["prompt_eval_duration"] / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    # a worker serves one client at a time: each configuration stays loaded on its own
    ports = [free_port() for _ in range(3)]
    workers = [_worker(port, tmp / f"worker-{port}.log") for port in ports]
    endpoints = [f"127.0.0.1:{port}" for port in ports]
    configs: dict[str, list[str]] = {
        "local": [],
        "1 worker": endpoints[:1],
        "2 workers": endpoints[1:],
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    loads: dict[str, float] = {}
    try:
        for name, used in configs.items():
            port = free_port()
            env = {
                **os.environ,
                "HOME": str(tmp),
                "OLLAMA_HOST": f"127.0.0.1:{port}",
                "OLLAMA_MODELS": str(tmp / "models"),
                "OLLAMA_NUM_PARALLEL": "1",
                "OLLAMA_NUM_THREAD": "1",
                "OLLAMA_KEEP_ALIVE": "-1",
                # a CPU-turn lock of their own: runners of other servers on this machine
                # (tests, other benches) must not make these wait for their turn
                "TMPDIR": str(tmp),
            }
            if used:
                env |= {"OLLAMA_RPC_SERVERS": ",".join(used), "CORRAL_RPC_ONLY": "1"}
            label = name.replace(" ", "-")
            proc = start_server(env, tmp / f"serve-{label}.log")
            url = f"http://127.0.0.1:{port}"
            servers[name] = (proc, url)
            httpx.post(url + "/api/pull", json={"model": MODEL, "stream": False}, timeout=300)
            loads[name] = _generate(url, 4)["load_s"]  # stays loaded (keep-alive forever)
        for _ in range(args.runs):
            for name, (_, url) in servers.items():
                results[name].append(_generate(url, args.tokens))
    finally:
        for proc, _ in servers.values():
            stop(proc)
        for worker in workers:
            worker.kill()
            worker.wait()
    summary = {
        name: {
            "decode_tok_s_median": round(statistics.median(r["decode_tok_s"] for r in runs), 1),
            "decode_tok_s_min": round(min(r["decode_tok_s"] for r in runs), 1),
            "decode_tok_s_max": round(max(r["decode_tok_s"] for r in runs), 1),
            "load_s": round(loads[name], 3),
        }
        for name, runs in results.items()
    }
    local = summary["local"]["decode_tok_s_median"]
    print(f"{'config':<10} {'decode tok/s (median, min-max)':<32} {'vs local':>9} {'load s':>7}")
    for name, row in summary.items():
        low, high = row["decode_tok_s_min"], row["decode_tok_s_max"]
        spread = f"{row['decode_tok_s_median']} ({low}-{high})"
        ratio = row["decode_tok_s_median"] / local if local else 0
        print(f"{name:<10} {spread:<32} {ratio:>8.0%} {row['load_s']:>7}")
    print(json.dumps({"runs": args.runs, "tokens": args.tokens, "results": summary}))


if __name__ == "__main__":
    main()
