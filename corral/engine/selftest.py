"""The engine self-test: a short real decode in a child process.

``python -m corral.engine.selftest [--model GGUF]`` loads a model (the bundled SmolLM2 by
default) with llama.cpp on every usable core, evaluates a prompt of about a hundred tokens
in one batch (the matrix-matrix kernels) and decodes a few tokens greedily (the
matrix-vector ones), then prints one JSON line: the text, prompt and decode speed, and
ggml's report of the instruction sets it was compiled with. A build that cannot run here dies
in this child, not in a user's first request; ``run_selftest`` says how it died.

``CORRAL_ENGINE_SELFTEST_CRASH=<tier>[,<tier>]`` (or ``*``) makes the child kill itself with
SIGILL when the engine under test is of one of those tiers: the install's fallback path,
exercised on machines where nothing crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from corral.engine.exits import describe_exit
from corral.engine.features import build_problem, compiled_features, cpu_flags, usable_cpus

__all__ = ["run_selftest"]

_PROMPT = (
    "The sky looks blue on a clear day because air scatters short wavelengths of sunlight"
    " more strongly than long ones. Sunsets look red and orange because the light crosses"
    " much more air near the horizon, and most of the blue is scattered away before it"
    " reaches the eye. On the Moon, which has no air, the sky is black even at noon."
    " Explain this to a child in one sentence:"
)


def run_selftest(
    *,
    python: str = sys.executable,
    model: str | None = None,
    tier: str = "",
    tokens: int = 16,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Run the self-test child; ``ok`` with its measurements, or how it failed.

    A child killed by a signal has ``signal`` set (``SIGILL``, ``SIGSEGV``, ...): the build is
    what failed, and a more portable one may pass.
    """
    argv = [python, "-m", "corral.engine.selftest", "--tokens", str(tokens)]
    if model:
        argv += ["--model", model]
    env = {**os.environ, "CORRAL_ENGINE_TIER": tier}
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"the self-test did not finish within {timeout:.0f} s"}
    result: dict[str, Any] = {"seconds": round(time.monotonic() - started, 2)}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        result.update(json.loads(lines[-1]))
        return result
    tail = [line for line in done.stderr.splitlines() if line.strip()][-5:]
    result.update(ok=False, error=describe_exit(done.returncode), stderr_tail=tail)
    if done.returncode < 0:
        result["signal"] = signal.Signals(-done.returncode).name
    elif lines:  # the child explained itself (e.g. a build this CPU cannot run)
        result.update(json.loads(lines[-1]))
    return result


def _default_model() -> str:
    from corral.catalog.bundled import BUNDLED

    for bundled in BUNDLED:
        if "smollm2:135m" in bundled.names:
            return str(bundled.paths()[0])
    raise SystemExit("error: the bundled model for the self-test is not installed")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.engine.selftest")
    parser.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2)")
    parser.add_argument("--tokens", type=int, default=16, help="tokens to decode")
    args = parser.parse_args(argv)
    crash = os.environ.get("CORRAL_ENGINE_SELFTEST_CRASH", "")
    tier = os.environ.get("CORRAL_ENGINE_TIER", "")
    if crash and (crash == "*" or tier in crash.split(",")):
        os.kill(os.getpid(), signal.SIGILL)  # as a build this CPU cannot run would
    model = args.model or _default_model()

    import llama_cpp  # the engine under test: from here on a bad build crashes this child

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")
    features = compiled_features(system_info)
    problem = build_problem(features, cpu_flags())
    if problem:
        _emit({"ok": False, "error": problem, "system_info": system_info})
        return 3
    threads = usable_cpus()
    llm = llama_cpp.Llama(
        model_path=model, n_ctx=512, n_batch=512, n_threads=threads, seed=0, verbose=False
    )
    prompt = llm.tokenize(_PROMPT.encode(), add_bos=True)
    started = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - started
    out: list[int] = []
    started = time.perf_counter()
    for _ in range(args.tokens):
        token = llm.sample(temp=0.0, top_k=1)
        if llm.token_eos() == token:
            break
        out.append(token)
        llm.eval([token])
    decode_s = time.perf_counter() - started
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    _emit(
        {
            "ok": True,
            "model": Path(model).name,
            "threads": threads,
            "prompt_tokens": len(prompt),
            "prompt_tokens_per_s": round(len(prompt) / prompt_s, 1),
            "decode_tokens": len(out),
            "decode_tokens_per_s": round(len(out) / decode_s, 1) if out else 0.0,
            "text": text,
            "features": sorted(features),
            "system_info": system_info.strip(),
        }
    )
    return 0


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
