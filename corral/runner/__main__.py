"""``python -m corral.runner``: one model, served on a loopback port (see ``server.py``).

Its arguments are a ``LoadSettings`` (``corral.runner.settings``) and ``--port``."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import sys
from typing import Any

from corral.engine.features import build_problem, compiled_features, cpu_flags
from corral.runner.bindings import llama  # first: the C bindings alone (see bindings.py)
from corral.runner.diagnose import ENGINE_UNUSABLE
from corral.runner.engine import LLAMA_ERRORS
from corral.runner.server import serve
from corral.runner.settings import LoadSettings, add_arguments, from_namespace

# ggml log levels: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the last line
_LEVEL_WARN = 3
_LEVEL_ERROR = 4


def _parse_args(argv: list[str]) -> tuple[LoadSettings, int]:
    """The load settings (``LoadSettings.argv``'s arguments) and the port to bind."""
    parser = argparse.ArgumentParser(prog="python -m corral.runner")
    add_arguments(parser)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return from_namespace(args), args.port
    except ValueError as exc:
        parser.error(str(exc))


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
    try:  # the projector's log too (vision models); a build without libmtmd has none
        from llama_cpp import mtmd_cpp

        mtmd_cpp.mtmd_helper_log_set(_callback, ctypes.c_void_p(0))
    except (ImportError, OSError, AttributeError):
        pass
    return _callback  # the caller keeps it referenced: a collected callback crashes


def _engine_problem() -> str | None:
    """Why the installed llama.cpp cannot run on this CPU (instructions it lacks, or a path
    known to crash), checked before any kernel runs; ``CORRAL_ENGINE_UNCHECKED=1`` skips it."""
    if os.environ.get("CORRAL_ENGINE_UNCHECKED"):
        return None
    report = llama.llama_print_system_info().decode("utf-8", errors="replace")
    return build_problem(compiled_features(report), cpu_flags())


def main(argv: list[str] | None = None) -> int:
    settings, port = _parse_args(sys.argv[1:] if argv is None else argv)
    problem = _engine_problem()
    if problem:
        sys.stderr.write(f"error: {problem}\n")
        return ENGINE_UNUSABLE
    logging.basicConfig(
        level=logging.DEBUG if settings.verbose else logging.WARNING,
        stream=sys.stderr,
        format="runner %(levelname)s %(message)s",
    )
    keep = _install_llama_log(settings.verbose)
    # Exit at once: no interpreter teardown while the engine thread may be inside a decode
    # step, holding the CPU turn (a teardown racing it can hang the process with the turn
    # held, and every CPU runner on the machine then waits). A runner keeps nothing to save.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        return asyncio.run(serve(settings, port=port))
    except KeyboardInterrupt:
        return 0
    finally:
        del keep


if __name__ == "__main__":
    sys.exit(main())
