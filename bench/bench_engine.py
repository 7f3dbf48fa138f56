"""Runner engine benchmark: corral vs llama.cpp's llama-server vs llama-cpp-python's server.

Three modes, each side by side in one run (each server started, measured, stopped in turn,
for every repeat), medians over repeats, greedy decoding, streaming, timed at the client:

- ``--mode matched`` (the default): all three serve the same GGUF with the same threads,
  per-slot context and slot count, flash attention off and one KV stream per slot;
- ``--mode defaults``: what a user compares, each server as it starts with no options
  (corral: ``corral serve``; llama-server: ``-m model``: its flash attention ``auto``,
  unified KV, automatic slots and context), on a 3500-token prompt, one and four streams
  (greedy), and one stream sampled as each server samples when a request names no sampling
  option (``single_sampled``: corral the model's published defaults, llama-server its own);
- ``--mode openwebui``: Open WebUI's first chat replayed (``openwebui_chat.json``: "Say
  hello" with Open WebUI's 36 built-in tool definitions and no system message, as its
  native function calling sends it to ``/api/chat``): corral's time to first token and
  whether the answer ends on its own within a minute, against llama-server on the same
  rendered prompt; then a second chat with the same tools (the shared prefix from the
  cache); and the length of a plain "Say hello" answer with the model's published sampling
  defaults and system prompt against Ollama's generic defaults (temperature 0.8, no system).

Measures of ``matched``, per model:
- single: decode tokens/s of one stream;
- prompt: prompt-processing tokens/s on a ~1000-token prompt (fresh each time, no cache);
- agg4: aggregate decode tokens/s of 4 concurrent streams;
- ttft_busy: time to first token of a new request while 3 others stream;
- turn5: time to first token of chat turn 5, with the prompt cache (and, for corral, the
  same turn with the cache defeated, for the ratio);
- agg16: aggregate tokens/s of 16 concurrent streams (16 slots).

Needs: bench/build_llama_server.sh (builds llama-server from the pinned llama-cpp-python
sdist) and llama-cpp-python's server extras (pip install sse-starlette starlette-context
pydantic-settings) in .venv.

Usage: .venv/bin/python bench/bench_engine.py [--models smollm2:135m gemma3:270m]
       [--repeats 3] [--servers corral llama-server llama-cpp-python]
       [--mode matched|defaults|openwebui] [--only single agg4 ...]
       [--baseline DIR (another corral checkout, measured beside this one as corral-base)]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
THREADS = 2
CTX = 2048
TOKENS = 128
STORY = "Write a long story about a lighthouse keeper and a storm."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stream:
    ttft: float
    tokens: int
    first: float
    last: float


class Server:
    name = ""

    def __init__(self, gguf: str, model: str, parallel: int) -> None:
        self.gguf, self.model, self.parallel = gguf, model, parallel
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def health_path(self) -> str:
        return "/health"

    def start(self) -> None:
        self.stop()
        argv, env = self.command()
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + self.health_path(), timeout=2).status_code == 200:
                    self.warm()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def warm(self) -> None:
        asyncio.run(self.stream("Hello", 4))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def stream(self, prompt: str, n: int, client: httpx.AsyncClient | None = None) -> Stream:
        own = client is None
        client = client or httpx.AsyncClient(timeout=600)
        url, body, extract = self.request(prompt, n)
        start = time.perf_counter()
        stamps: list[float] = []
        counted = 0
        try:
            async with client.stream("POST", url, json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    text = extract(line)
                    if text:
                        stamps.append(time.perf_counter())
                    counted = self.generated(line) or counted
        finally:
            if own:
                await client.aclose()
        if not stamps:
            stamps = [time.perf_counter()]
        # Tokens, not chunks: a server may send several tokens in one chunk (text held back
        # while it could still be a stop string, a character split over tokens), so the
        # count is the server's own where its last event gives one.
        return Stream(stamps[0] - start, max(counted, len(stamps)), stamps[0], stamps[-1])

    def request(self, prompt: str, n: int) -> tuple[str, dict[str, Any], Any]:
        raise NotImplementedError

    def generated(self, line: str) -> int:
        """The number of tokens generated, from a stream's last event (0 elsewhere)."""
        return 0

    async def prompt_rate(self, prompt: str) -> float:
        raise NotImplementedError


#: set by ``--mode``: servers as they start with no options (True), or matched settings
DEFAULTS = False
#: set by ``--only``: the measures to take (all when empty)
ONLY: set[str] = set()
#: set by ``--baseline``: another checkout of corral, run as the server "corral-base"
BASELINE = ""
#: set while a measure samples with each server's own defaults (no temperature sent; a
#: fixed seed, so that every round draws the same answer)
SAMPLED = False
SAMPLED_SEED = 42


class Corral(Server):
    name = "corral"

    def command(self) -> tuple[list[str], dict[str, str]]:
        self.models = tempfile.mkdtemp(prefix="corral-bench-")
        env = {
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": self.models,
            "OLLAMA_KEEP_ALIVE": "-1",
        }
        if self.name == "corral-base":  # the older code, imported ahead of this checkout's
            env["PYTHONPATH"] = BASELINE
        if not DEFAULTS:
            env |= {
                "OLLAMA_NUM_PARALLEL": str(self.parallel),
                "OLLAMA_CONTEXT_LENGTH": str(CTX),
                "OLLAMA_NUM_THREAD": str(THREADS),
                "OLLAMA_FLASH_ATTENTION": "0",
            }
        return [sys.executable, "-m", "corral", "serve"], env

    def health_path(self) -> str:
        return "/"

    def warm(self) -> None:
        httpx.post(self.url + "/api/pull", json={"model": self.model, "stream": False}, timeout=600)
        super().warm()

    def request(self, prompt: str, n: int) -> tuple[str, dict[str, Any], Any]:
        body = {
            "model": self.model,
            "prompt": prompt,
            "raw": True,
            "stream": True,
            "options": {"temperature": 0, "num_predict": n},
        }
        if SAMPLED:
            body["options"] = {"seed": SAMPLED_SEED, "num_predict": n}

        def extract(line: str) -> str:
            return json.loads(line).get("response", "") if line else ""

        return self.url + "/api/generate", body, extract

    def generated(self, line: str) -> int:
        if not line or '"done":true' not in line.replace(" ", ""):
            return 0
        return int(json.loads(line).get("eval_count", 0))

    async def prompt_rate(self, prompt: str) -> float:
        body = {
            "model": self.model,
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 1},
        }
        async with httpx.AsyncClient(timeout=600) as client:
            data = (await client.post(self.url + "/api/generate", json=body)).json()
        return float(data["prompt_eval_count"] / data["prompt_eval_duration"] * 1e9)


class CorralBase(Corral):
    """corral from the checkout ``--baseline`` names: an A/B of two versions in one run."""

    name = "corral-base"


class LlamaServer(Server):
    name = "llama-server"

    def command(self) -> tuple[list[str], dict[str, str]]:
        binary = subprocess.run(
            ["bash", str(ROOT / "bench" / "build_llama_server.sh")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        argv = [binary, "-m", self.gguf, "--host", "127.0.0.1", "--port", str(self.port)]
        if DEFAULTS:
            return [*argv, "--no-webui"], {}
        argv += [
            "-t",
            str(THREADS),
            "-tb",
            str(THREADS),
            "-c",
            str(CTX * self.parallel),
            "-np",
            str(self.parallel),
            "-fa",
            "off",
            "--no-webui",
            "-no-kvu",
        ]
        return argv, {}

    def request(self, prompt: str, n: int) -> tuple[str, dict[str, Any], Any]:
        body = {
            "prompt": prompt,
            "n_predict": n,
            "temperature": 0,
            "stream": True,
            "cache_prompt": True,
        }
        if SAMPLED:
            del body["temperature"]
            body["seed"] = SAMPLED_SEED

        def extract(line: str) -> str:
            if not line.startswith("data: "):
                return ""
            return str(json.loads(line[6:]).get("content", ""))

        return self.url + "/completion", body, extract

    def generated(self, line: str) -> int:
        if not line.startswith("data: ") or '"stop":true' not in line.replace(" ", ""):
            return 0
        event = json.loads(line[6:])
        return int(event.get("tokens_predicted") or event.get("timings", {}).get("predicted_n", 0))

    async def prompt_rate(self, prompt: str) -> float:
        body = {"prompt": prompt, "n_predict": 1, "temperature": 0, "cache_prompt": False}
        async with httpx.AsyncClient(timeout=600) as client:
            data = (await client.post(self.url + "/completion", json=body)).json()
        timings = data["timings"]
        return float(timings["prompt_n"] / timings["prompt_ms"] * 1000)


class LlamaCppPython(Server):
    name = "llama-cpp-python"

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            self.gguf,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            str(THREADS),
            "--n_ctx",
            str(CTX),
            "--verbose",
            "False",
            # by default a new request cuts off the one streaming: queue them instead
            "--interrupt_requests",
            "False",
        ]
        return argv, {}

    def health_path(self) -> str:
        return "/v1/models"

    def request(self, prompt: str, n: int) -> tuple[str, dict[str, Any], Any]:
        body = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": True}

        def extract(line: str) -> str:
            if not line.startswith("data: ") or line == "data: [DONE]":
                return ""
            return str(json.loads(line[6:])["choices"][0].get("text", ""))

        return self.url + "/v1/completions", body, extract

    async def prompt_rate(self, prompt: str) -> float:
        # No server-side timing: the whole request with one output token, and the prompt
        # token count the server reports.
        body = {"prompt": prompt, "max_tokens": 1, "temperature": 0}
        async with httpx.AsyncClient(timeout=600) as client:
            start = time.perf_counter()
            data = (await client.post(self.url + "/v1/completions", json=body)).json()
            elapsed = time.perf_counter() - start
        return float(data["usage"]["prompt_tokens"] / elapsed)


def chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


async def aggregate(server: Server, streams: int) -> float:
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=64)) as c:
        start = time.perf_counter()
        results = await asyncio.gather(
            *(server.stream(chat(f"{STORY} Version {i}."), TOKENS, c) for i in range(streams))
        )
        elapsed = max(r.last for r in results) - start
    return sum(r.tokens for r in results) / elapsed


async def ttft_while_busy(server: Server, probes: int = 5) -> float:
    """Median time to first token of ``probes`` new requests, one after another, while 3
    others stream (where in the others' step a request lands moves one probe by up to a
    step, so one probe a round is mostly noise)."""
    async with httpx.AsyncClient(timeout=600) as client:
        background = [
            asyncio.create_task(server.stream(chat(f"{STORY} Part {i}."), 512, client))
            for i in range(3)
        ]
        await asyncio.sleep(1.0)
        times = []
        for _ in range(probes):
            probe = await server.stream(
                chat(f"What is {random.randint(1, 10**6)} plus one?"), 4, client
            )
            times.append(probe.ttft)
            await asyncio.sleep(random.uniform(0.05, 0.15))
        if any(task.done() for task in background):
            raise ValueError("a background stream ended before the probes did")
        await asyncio.gather(*background)
    return statistics.median(times)


async def turn5(server: Server, salt: str) -> float:
    history = ""
    ttft = 0.0
    for turn in range(5):
        prompt = history + chat(f"{salt} Question {turn}: tell me about the sea, briefly.")
        result = await server.stream(prompt, 32)
        ttft = result.ttft
        history = prompt + f"Answer {turn} about the sea.<|im_end|>\n"
    return ttft


def long_prompt(salt: int, words: int = 210) -> str:
    # 210 words: about 1000 tokens with either tokenizer; 735: about 3500
    parts = [f"topic{salt}"] + [f"w{(i * 7919 + salt) % 5000}" for i in range(words)]
    return " ".join(parts)


async def prompt_ttft(server: Server, words: int) -> float:
    """Client-side time to the first token of a fresh long prompt (nothing cached)."""
    prompt = chat(long_prompt(random.randint(0, 10**6), words))
    return (await server.stream(prompt, 1)).ttft


def measure(server_cls: type[Server], gguf: str, model: str) -> dict[str, float]:
    out: dict[str, float] = {}
    server = server_cls(gguf, model, 4)

    def single() -> float:
        result = asyncio.run(server.stream(chat(STORY), TOKENS))
        return (result.tokens - 1) / (result.last - result.first)

    steps: dict[str, Callable[[], float]] = {
        "single": single,
        "prompt": lambda: asyncio.run(server.prompt_rate(long_prompt(random.randint(0, 10**6)))),
        "agg4": lambda: asyncio.run(aggregate(server, 4)),
        "ttft_busy": lambda: asyncio.run(ttft_while_busy(server)),
        "turn5": lambda: asyncio.run(turn5(server, f"s{random.randint(0, 10**6)}")),
    }
    for key, step in steps.items():
        if ONLY and key not in ONLY:
            continue
        if server.proc is None or server.proc.poll() is not None:
            server.start()  # a server that crashed under the previous step starts again
        try:
            out[key] = step()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"{server.name} {key} failed: {exc!r}", file=sys.stderr)
            out[key] = float("nan")
    server.stop()
    if server_cls is not LlamaCppPython and (not ONLY or "agg16" in ONLY):  # 1 slot: a queue
        server16 = server_cls(gguf, model, 16)
        server16.start()
        try:
            out["agg16"] = asyncio.run(aggregate(server16, 16))
        finally:
            server16.stop()
    return out


def measure_defaults(server_cls: type[Server], gguf: str, model: str) -> dict[str, float]:
    """Each server as it starts with no options: a 3500-token prompt, one and four streams,
    and the first token of a request while three stream."""
    server = server_cls(gguf, model, 4)
    out: dict[str, float] = {}

    def single() -> float:
        result = asyncio.run(server.stream(chat(STORY), TOKENS))
        return (result.tokens - 1) / (result.last - result.first)

    def single_sampled() -> float:
        global SAMPLED
        SAMPLED = True
        try:
            result = asyncio.run(server.stream(chat(STORY), TOKENS))
        finally:
            SAMPLED = False
        if result.tokens < 16:
            raise ValueError(f"the sampled answer ended after {result.tokens} tokens")
        return (result.tokens - 1) / (result.last - result.first)

    steps: dict[str, Callable[[], float]] = {
        "prompt3500": lambda: asyncio.run(
            server.prompt_rate(long_prompt(random.randint(0, 10**6), 735))
        ),
        "prompt3500_ttft": lambda: asyncio.run(prompt_ttft(server, 735)),
        "single": single,
        "single_sampled": single_sampled,
        "agg4": lambda: asyncio.run(aggregate(server, 4)),
        "ttft_busy": lambda: asyncio.run(ttft_while_busy(server)),
    }
    try:
        for key, step in steps.items():
            if ONLY and key not in ONLY:
                continue
            if server.proc is None or server.proc.poll() is not None:
                server.start()
            try:
                out[key] = step()
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                print(f"{server.name} {key} failed: {exc!r}", file=sys.stderr)
                out[key] = float("nan")
    finally:
        server.stop()
    return out


# ---- Open WebUI's first chat ------------------------------------------------------------

OPENWEBUI = Path(__file__).resolve().parent / "openwebui_chat.json"
#: "ends on its own within a minute": the client waits this long for the last chunk
ANSWER_DEADLINE = 60.0


def openwebui_request(model: str, question: str = "Say hello") -> dict[str, Any]:
    body: dict[str, Any] = json.loads(OPENWEBUI.read_text())
    body["model"] = model
    body["messages"] = [{"role": "user", "content": question}]
    return body


def rendered_chat(model: str, body: dict[str, Any]) -> str:
    """The prompt corral renders for ``body`` (its template, the model's default system
    prompt, the tools), for llama-server's ``/completion``: the same text on both sides."""
    sys.path.insert(0, str(ROOT))
    from corral.api.types import Message
    from corral.catalog import find_bundled
    from corral.store import Name
    from corral.templates.prompt import PromptTemplate

    bundled = find_bundled(Name.parse(model))
    assert bundled is not None
    messages = [Message.model_validate(m).to_template() for m in body["messages"]]
    if bundled.system and messages[0]["Role"] != "system":
        messages.insert(0, Message(role="system", content=bundled.system).to_template())
    template = PromptTemplate.from_sources(bundled.template())
    return template.render(messages, body.get("tools"), None)


async def corral_chat(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    """One streamed ``/api/chat``: time to the first content or tool call, and whether the
    last chunk came before the deadline."""
    start = time.perf_counter()
    first = float("nan")
    final: dict[str, Any] = {}
    text = ""
    try:
        async with (
            httpx.AsyncClient(timeout=ANSWER_DEADLINE * 2) as client,
            asyncio.timeout(ANSWER_DEADLINE),
            client.stream("POST", server.url + "/api/chat", json=body) as response,
        ):
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line:
                    continue
                chunk = json.loads(line)
                message = chunk.get("message") or {}
                if (message.get("content") or message.get("tool_calls")) and first != first:
                    first = time.perf_counter() - start
                text += message.get("content") or ""
                if message.get("tool_calls"):
                    text += json.dumps(message["tool_calls"])
                if chunk.get("done"):
                    final = chunk
    except TimeoutError:
        pass
    return {
        "ttft": round(first, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "ended": bool(final),
        "done_reason": final.get("done_reason", "(still going)"),
        "eval_count": final.get("eval_count", -1),
        "prompt_eval_count": final.get("prompt_eval_count", -1),
        "answer": text[:160],
    }


def openwebui_corral(gguf: str, model: str) -> dict[str, Any]:
    server = Corral(gguf, model, 4)
    global DEFAULTS
    DEFAULTS, before = True, DEFAULTS
    try:
        server.start()  # pulls the model and loads it with a short request
        first = asyncio.run(corral_chat(server, openwebui_request(model)))
        second = asyncio.run(corral_chat(server, openwebui_request(model, "What can you do?")))
        return {"first_chat": first, "second_chat": second}
    finally:
        server.stop()
        DEFAULTS = before


def openwebui_llama_server(gguf: str, model: str) -> dict[str, Any]:
    server = LlamaServer(gguf, model, 4)
    global DEFAULTS
    DEFAULTS, before = True, DEFAULTS
    try:
        server.start()
        first = asyncio.run(server.stream(rendered_chat(model, openwebui_request(model)), 1))
        prompt2 = rendered_chat(model, openwebui_request(model, "What can you do?"))
        second = asyncio.run(server.stream(prompt2, 1))
        return {
            "first_chat": {"ttft": round(first.ttft, 3)},
            "second_chat": {"ttft": round(second.ttft, 3)},
        }
    finally:
        server.stop()
        DEFAULTS = before


#: Ollama's generic sampling defaults, which the bundled models used before they carried
#: their authors' (and no system prompt)
GENERIC = {"temperature": 0.8, "top_k": 40, "top_p": 0.9}


def say_hello(gguf: str, model: str, repeats: int) -> dict[str, Any]:
    """Answer lengths of a plain "Say hello" (no tools): the model's own defaults against
    Ollama's generic ones; tokens, and how many answers ran into the cap instead of ending."""
    server = Corral(gguf, model, 4)
    global DEFAULTS
    DEFAULTS, before = True, DEFAULTS
    out: dict[str, Any] = {}
    try:
        server.start()
        for label, options, system in (
            ("model_defaults", {}, []),
            ("generic_defaults", GENERIC, [{"role": "system", "content": ""}]),
        ):
            counts, capped = [], 0
            for seed in range(repeats):
                body = {
                    "model": model,
                    "messages": [*system, {"role": "user", "content": "Say hello"}],
                    "stream": False,
                    "options": {**options, "seed": seed, "num_predict": 1024},
                }
                data = httpx.post(server.url + "/api/chat", json=body, timeout=600).json()
                counts.append(data["eval_count"])
                capped += data["done_reason"] == "length"
            out[label] = {
                "median_tokens": statistics.median(counts),
                "max_tokens": max(counts),
                "hit_1024_cap": capped,
                "answers": repeats,
            }
    finally:
        server.stop()
        DEFAULTS = before
    return out


def turn5_without_cache(gguf: str, model: str) -> float:
    """corral's turn 5 with the cache defeated: each turn's prompt starts differently."""
    server = Corral(gguf, model, 4)
    server.start()
    try:
        history = ""
        ttft = 0.0
        for turn in range(5):
            salt = f"x{random.randint(0, 10**9)} "
            prompt = salt + history + chat(f"Question {turn}: tell me about the sea, briefly.")
            ttft = asyncio.run(server.stream(prompt, 32)).ttft
            history = history + chat(f"Question {turn}: tell me about the sea, briefly.")
            history += f"Answer {turn} about the sea.<|im_end|>\n"
        return ttft
    finally:
        server.stop()


SERVERS: dict[str, type[Server]] = {
    "corral": Corral,
    "corral-base": CorralBase,
    "llama-server": LlamaServer,
    "llama-cpp-python": LlamaCppPython,
}


def gguf_path(model: str) -> str:
    sys.path.insert(0, str(ROOT))
    from corral.catalog import BUNDLED
    from corral.store import ModelStore, Name

    store = ModelStore(Path(tempfile.mkdtemp(prefix="corral-bench-store-")))
    from corral.catalog import find_bundled, pull_bundled

    bundled = find_bundled(Name.parse(model))
    assert bundled is not None and bundled in BUNDLED
    pull_bundled(store, Name.parse(model), bundled, lambda _event: None)
    return str(store.blob_path(f"sha256:{bundled.sha256}"))


def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return round(statistics.median(finite), 4) if finite else float("nan")


def _ratios(ours: dict[str, float], peer: dict[str, float]) -> dict[str, float]:
    """corral / llama-server per measure, > 1 better for corral (times are inverted)."""
    ratios = {}
    for key, value in ours.items():
        if key in peer and value and peer[key]:
            better_low = "ttft" in key or key == "turn5"
            ratios[key] = round(peer[key] / value if better_low else value / peer[key], 3)
    return ratios


def openwebui(models: list[str], repeats: int) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for model in models:
        gguf = gguf_path(model)
        rounds = []
        for _ in range(repeats):
            rounds.append(
                {
                    "corral": openwebui_corral(gguf, model),
                    "llama-server": openwebui_llama_server(gguf, model),
                }
            )
            print(model, rounds[-1], file=sys.stderr, flush=True)
        report[model] = {"rounds": rounds, "say_hello": say_hello(gguf, model, 5)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["smollm2:135m", "gemma3:270m"])
    parser.add_argument("--servers", nargs="+", default=list(SERVERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", choices=("matched", "defaults", "openwebui"), default="matched")
    parser.add_argument("--only", nargs="+", default=[], help="measures to take (default all)")
    parser.add_argument(
        "--baseline", default="", help="another corral checkout, run as server corral-base"
    )
    args = parser.parse_args()
    global ONLY, BASELINE
    ONLY, BASELINE = set(args.only), str(Path(args.baseline).resolve()) if args.baseline else ""
    if BASELINE and "corral-base" not in args.servers:
        args.servers.append("corral-base")
    if args.mode == "openwebui":
        print(json.dumps(openwebui(args.models, args.repeats), indent=2))
        return
    global DEFAULTS
    DEFAULTS = args.mode == "defaults"
    report: dict[str, Any] = {}
    for model in args.models:
        gguf = gguf_path(model)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in args.servers}
        nocache: list[float] = []
        for _ in range(args.repeats):
            for name in args.servers:
                if DEFAULTS and name == "llama-cpp-python":
                    continue  # its defaults are one slot and no batching: not the peer here
                run = measure_defaults if DEFAULTS else measure
                runs[name].append(run(SERVERS[name], gguf, model))
                print(model, name, runs[name][-1], file=sys.stderr, flush=True)
            if "corral" in args.servers and not DEFAULTS and (not ONLY or "turn5" in ONLY):
                nocache.append(turn5_without_cache(gguf, model))
        medians = {
            name: {k: _median([r[k] for r in results]) for k in results[0]}
            for name, results in runs.items()
            if results
        }
        if "corral" in medians and "llama-server" in medians:
            medians["ratio"] = _ratios(medians["corral"], medians["llama-server"])
            # the same ratio within each round (the servers ran minutes apart at most),
            # then its median: the VM's drift between rounds cancels out
            rounds = zip(runs["corral"], runs["llama-server"], strict=True)
            paired = [_ratios(ours, peer) for ours, peer in rounds]
            keys = {k for p in paired for k in p}
            medians["paired_ratio"] = {
                k: _median([p.get(k, float("nan")) for p in paired]) for k in sorted(keys)
            }
        if "corral" in medians and "corral-base" in medians:
            medians["ratio_to_base"] = _ratios(medians["corral"], medians["corral-base"])
        if nocache:
            medians["corral"]["turn5_nocache"] = statistics.median(nocache)
        report[model] = medians
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
