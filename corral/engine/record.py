"""What engine is installed: how it was built, for which CPU, and how its self-test went.

One JSON file per Python environment (``<prefix>/share/corral/engine.json``), written by
``corral.engine.build`` and read by ``corral info`` and the runner. It names the digest of
the CPU backend library it describes, so a record never vouches for a llama.cpp that was
installed some other way afterwards (it is then reported as ``unrecorded``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["cpu_library", "library_digest", "load", "record_path", "save", "selftest_summary"]


def record_path() -> Path:
    override = os.environ.get("CORRAL_ENGINE_RECORD")
    if override:
        return Path(override)
    return Path(sys.prefix) / "share" / "corral" / "engine.json"


def llama_cpp_dir() -> Path | None:
    """The installed ``llama_cpp`` package folder, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cpu_library() -> Path | None:
    """llama.cpp's CPU backend (where the instruction-set-specific kernels live)."""
    package = llama_cpp_dir()
    if package is None:
        return None
    found = sorted((package / "lib").glob("libggml-cpu*.so*")) or sorted(
        (package / "lib").glob("libggml-cpu*")
    )
    return found[0] if found else None


def library_digest() -> str:
    """sha256 of the installed CPU backend library, "" when there is none."""
    path = cpu_library()
    if path is None:
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load(*, check_library: bool = True) -> dict[str, Any] | None:
    """The record, or None when there is none or it describes another library than the
    one installed now."""
    try:
        data = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if check_library and data.get("library_sha256") != library_digest():
        return None
    return data


def save(data: dict[str, Any]) -> None:
    """Write the record whole (a temporary file renamed into place)."""
    path = record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".engine-", suffix=".json")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, path)


def selftest_summary(data: dict[str, Any] | None) -> str:
    """One line on the self-test: ``passed (N tok/s)``, ``failed: ...`` or ``not run``."""
    result = (data or {}).get("selftest")
    if not isinstance(result, dict):
        return "not run"
    if result.get("ok"):
        speed = result.get("decode_tokens_per_s")
        return "passed" + (f" ({speed:.0f} tok/s decode)" if isinstance(speed, float) else "")
    return f"failed: {result.get('error', 'unknown error')}"
