"""Server overhead benchmark: cold start, warm time to first token, decode rate, RSS.

Measured side by side in one run, medians over repeats:
- cold start: ``corral run MODEL PROMPT`` with no server running (the CLI starts one in the
  background), from process start to the first byte of the answer on stdout;
- warm time to first token: streamed ``/api/generate`` with the model loaded;
- decode tokens/s through the server vs. the runner process alone (same GGUF, prompt,
  greedy options, context and threads), timed at the client from first to last token;
- resident memory of the server process and of its runner.

Usage: .venv/bin/python bench/bench_server.py [--model smollm2:135m] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from _serve import free_port, rss_mb, start_server, stop

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
OPTIONS = {"temperature": 0, "seed": 1, "num_predict": 128}


#: one client for every timed request: a new httpx client costs ~25 ms (its TLS context)
#: before the request even starts, which is the client's time, not the server's
_CLIENT = httpx.Client(timeout=300)


def stream_times(url: str, body: Mapping[str, object], key: str) -> tuple[float, float, int]:
    """(time to first token, decode tokens/s, tokens) measured at the client."""
    start = time.perf_counter()
    stamps: list[float] = []
    with _CLIENT.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if event.get(key):
                stamps.append(time.perf_counter())
    ttft = stamps[0] - start
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return ttft, rate, len(stamps)


def kill_servers_on(host: str) -> None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"serve" in cmd and f"OLLAMA_HOST={host}".encode() in environ:
            os.kill(int(entry.name), signal.SIGTERM)


def cold_start(env: dict[str, str], model: str) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral", "run", model, "Say hello."],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - start
    proc.terminate()  # only the first token counts; a sampled answer may run long
    proc.wait()
    kill_servers_on(env["OLLAMA_HOST"])
    time.sleep(1.0)
    return first


def start_runner(model_path: str, ctx: int, parallel: int) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corral.runner",
            "--model",
            model_path,
            "--ctx-size",
            str(ctx),
            "--parallel",
            str(parallel),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GOMP_SPINCOUNT": "1000"},  # as the server starts its runners
    )
    assert proc.stdout is not None
    port = json.loads(proc.stdout.readline())["port"]
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).json().get("status") == "ok":
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("runner did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    host = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(workdir / "models"),
        "HOME": str(workdir),
    }
    url = f"http://{host}"

    server = start_server(env)
    httpx.post(url + "/api/pull", json={"model": args.model, "stream": False}, timeout=600)
    show = httpx.post(url + "/api/show", json={"model": args.model}).json()
    model_path = show["modelfile"].split("\nFROM ", 1)[1].split("\n", 1)[0]
    stop(server)

    colds = [cold_start(env, args.model) for _ in range(args.repeats)]

    server = start_server(env)
    body = {"model": args.model, "prompt": PROMPT, "options": OPTIONS, "stream": True}
    stream_times(url + "/api/generate", body, "response")  # load + warm up
    ps = httpx.get(url + "/api/ps").json()["models"][0]
    ctx = ps["context_length"]
    runner_pid = next(
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == server.pid
    )
    parallel = _runner_parallel(runner_pid)
    runner, runner_url = start_runner(model_path, ctx, parallel)
    raw_prompt, stops = _render(url, args.model)
    # what the server sends its runner: the model's system prompt and stop strings too
    runner_body = {"prompt": raw_prompt, "options": {**OPTIONS, "stop": stops}}
    stream_times(runner_url + "/completion", runner_body, "content")

    warm_ttft, server_rate, runner_rate, runner_ttft = [], [], [], []
    for _ in range(args.repeats):
        ttft, rate, _n = stream_times(url + "/api/generate", {**body, "prompt": PROMPT}, "response")
        warm_ttft.append(ttft)
        server_rate.append(rate)
        ttft, rate, _n = stream_times(runner_url + "/completion", runner_body, "content")
        runner_ttft.append(ttft)
        runner_rate.append(rate)
    server_rss, model_rss = rss_mb(server.pid), rss_mb(runner_pid)
    stop(runner)
    stop(server)

    med = statistics.median
    result = {
        "model": args.model,
        "repeats": args.repeats,
        "cold_start_first_token_s": round(med(colds), 3),
        "warm_first_token_ms": round(med(warm_ttft) * 1000, 1),
        "runner_alone_first_token_ms": round(med(runner_ttft) * 1000, 1),
        "decode_tok_s_server": round(med(server_rate), 1),
        "decode_tok_s_runner_alone": round(med(runner_rate), 1),
        "decode_ratio_server_vs_runner": round(med(server_rate) / med(runner_rate), 3),
        # the ratio within each round (the two run back to back), then its median
        "decode_paired_ratio": round(
            med([a / b for a, b in zip(server_rate, runner_rate, strict=True)]), 3
        ),
        "server_rss_mb": round(server_rss, 1),
        "runner_rss_mb": round(model_rss, 1),
        "runner_ctx_per_slot": ctx,
        "runner_parallel": parallel,
    }
    print(json.dumps(result, indent=2))


def _ppid(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


def _runner_parallel(pid: int) -> int:
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"--parallel") + 1])


def _render(url: str, model: str) -> tuple[str, list[str]]:
    """The exact prompt the server sends the runner for PROMPT (the model's system prompt
    included), and the model's stop strings."""
    show = httpx.post(url + "/api/show", json={"model": model}).json()
    sys.path.insert(0, str(ROOT))
    from corral.api.types import Message
    from corral.modelfile.parser import parse_modelfile
    from corral.templates.prompt import PromptTemplate

    prompt_template = PromptTemplate.from_sources(show["template"])
    messages = [Message(role="user", content=PROMPT).to_template()]
    if show.get("system"):
        messages.insert(0, Message(role="system", content=show["system"]).to_template())
    parameters = parse_modelfile(show["modelfile"]).of("parameter")
    stops = [command.value for command in parameters if command.key == "stop"]
    return prompt_template.render(messages), stops


if __name__ == "__main__":
    main()
