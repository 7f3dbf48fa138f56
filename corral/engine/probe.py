"""What the installed engine is, asked of llama.cpp itself in a child process.

``python -m corral.engine.probe`` loads llama.cpp (no model) and prints one JSON line: the
llama-cpp-python version, ggml's system report, the backends it registered, the CPU
instruction sets it was compiled with, and whether that build can run on this CPU. A build
that crashes on load crashes the child; ``probe_engine`` reports how, and ``corral info``
stays up to say it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from corral.engine import record
from corral.engine.exits import describe_exit
from corral.engine.features import build_problem, compiled_features, cpu_flags

__all__ = ["engine_report", "probe_engine"]


def probe_engine(*, python: str = sys.executable, timeout: float = 60.0) -> dict[str, Any]:
    """The child's report, or ``{"ok": False, "error": ...}`` when it could not give one."""
    try:
        done = subprocess.run(
            [python, "-m", "corral.engine.probe"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"llama.cpp did not load within {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        data: dict[str, Any] = json.loads(lines[-1])
        return data
    tail = [line for line in done.stderr.splitlines() if line.strip()][-3:]
    return {
        "ok": False,
        "error": f"loading llama.cpp: {describe_exit(done.returncode)}",
        "stderr_tail": tail,
    }


def engine_report(*, python: str = sys.executable) -> dict[str, Any]:
    """The probe and the install record together, as ``corral info --json`` prints them."""
    report = probe_engine(python=python)
    built = record.load()
    report["build"] = (
        {k: v for k, v in built.items() if k not in ("cpu_flags", "library_sha256")}
        if built is not None
        else None
    )
    report["selftest"] = record.selftest_summary(built)
    return report


def _main() -> int:
    import llama_cpp

    system_info = llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()
    features = compiled_features(system_info)
    backends = [part.split(" : ", 1)[0].strip() for part in system_info.split("|") if " : " in part]
    problem = build_problem(features, cpu_flags())
    _emit(
        {
            "ok": problem is None,
            "error": problem or "",
            "llama_cpp_python": llama_cpp.__version__,
            "backends": backends,
            "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
            "rpc": bool(llama_cpp.llama_supports_rpc()),
            "cpu_features": sorted(features),
            "system_info": system_info,
        }
    )
    return 0


def _emit(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(_main())
