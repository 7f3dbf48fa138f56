"""``python -m corral.runner``: one model, served on a loopback port (see ``server.py``)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Any

import llama_cpp as llama

from corral.engine.features import build_problem, compiled_features, cpu_flags
from corral.runner.diagnose import ENGINE_UNUSABLE
from corral.runner.engine import LLAMA_ERRORS, EngineConfig
from corral.runner.server import serve

# ggml log levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the last line
_LEVEL_WARN = 3
_LEVEL_ERROR = 4


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m corral.runner")
    parser.add_argument("--model", required=True)
    parser.add_argument("--ctx-size", type=int, default=4096, help="context per slot")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--n-gpu-layers", type=int, default=0)
    parser.add_argument("--main-gpu", type=int, default=0)
    parser.add_argument(
        "--tensor-split", default="", help="layers (or fractions) per visible GPU, comma list"
    )
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--flash-attn", choices=("on", "off", "auto"), default="off")
    parser.add_argument("--kv-cache-type", default="f16")
    parser.add_argument("--embedding", action="store_true")
    parser.add_argument(
        "--lora", action="append", default=[], help="LoRA adapter GGUF (repeatable), scale 1.0"
    )
    parser.add_argument("--cpu-lock", default=None, help="file to lock around decode steps")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args(argv)


_log_state = {"last_level": 0}


def _install_llama_log(verbose: bool) -> Any:
    """Route llama.cpp's log to stderr: warnings and errors always, the rest if verbose."""

    @llama.llama_log_callback  # type: ignore[untyped-decorator]
    def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        # Level 5 continues the previous line.
        effective = _log_state["last_level"] if level == 5 else level
        _log_state["last_level"] = effective
        decoded = text.decode("utf-8", errors="replace")
        if effective >= _LEVEL_ERROR:
            LLAMA_ERRORS.append(decoded)
            del LLAMA_ERRORS[:-5]
        if verbose or effective >= _LEVEL_WARN:
            sys.stderr.write(decoded)
            sys.stderr.flush()

    llama.llama_log_set(_callback, ctypes.c_void_p(0))
    return _callback  # the caller keeps it referenced: a collected callback crashes


def _split(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SystemExit(
            f"error: --tensor-split must be numbers separated by commas: {text!r}"
        ) from None


def _engine_problem() -> str | None:
    """Why the installed llama.cpp cannot run on this CPU (instructions it lacks, or a path
    known to crash), checked before any kernel runs; ``CORRAL_ENGINE_UNCHECKED=1`` skips it."""
    if os.environ.get("CORRAL_ENGINE_UNCHECKED"):
        return None
    report = llama.llama_print_system_info().decode("utf-8", errors="replace")
    return build_problem(compiled_features(report), cpu_flags())


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    problem = _engine_problem()
    if problem:
        sys.stderr.write(f"error: {problem}\n")
        return ENGINE_UNUSABLE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="runner %(levelname)s %(message)s",
    )
    keep = _install_llama_log(args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = EngineConfig(
        model_path=args.model,
        n_ctx_per_slot=max(args.ctx_size, 4),
        n_parallel=max(args.parallel, 1),
        n_batch=max(args.batch_size, 1),
        n_threads=args.threads,
        n_gpu_layers=args.n_gpu_layers,
        main_gpu=args.main_gpu,
        tensor_split=_split(args.tensor_split),
        use_mmap=not args.no_mmap,
        flash_attention={"on": True, "off": False}.get(args.flash_attn),
        kv_cache_type=args.kv_cache_type,
        embedding=args.embedding,
        cpu_lock_path=args.cpu_lock,
        lora_paths=tuple(args.lora),
    )
    try:
        return asyncio.run(serve(config, port=args.port))
    except KeyboardInterrupt:
        return 0
    finally:
        del keep


if __name__ == "__main__":
    sys.exit(main())
