"""Where the NVIDIA libraries are, and opening them without ever crashing the caller.

The search follows Ollama's order: the directories of ``LD_LIBRARY_PATH`` first, then the
usual system and CUDA folders (distribution multiarch folders, ``/usr/local/cuda*``, WSL's
driver folder), then the ``nvidia-*`` Python wheels installed beside corral, and last the
bare soname, which the dynamic loader resolves through its cache. A path that is not there,
cannot be loaded (wrong architecture, missing dependency), or lacks a symbol is skipped with
a debug line: a machine without a GPU has none of these files and must discover nothing,
quietly.

``search_dirs`` replaces every default location (the tests point discovery at fake
libraries they compile, and nothing else).
"""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "LibraryError",
    "RawDevice",
    "candidates",
    "open_first",
    "open_library",
    "uuid_text",
]

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: system folders searched after LD_LIBRARY_PATH (globs)
_SYSTEM_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/usr/lib64",
    "/usr/lib",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
    "/usr/local/cuda/lib64",
    "/usr/local/cuda*/targets/*/lib",
    "/usr/local/cuda*/lib64",
    "/opt/cuda/lib64",
    "/usr/lib/wsl/lib",
    "/usr/lib/wsl/drivers/*",
)


class LibraryError(Exception):
    """A library could not be opened or used; the message says why (logged at debug)."""


@dataclass(frozen=True, slots=True)
class RawDevice:
    """One GPU as one library enumerates it (``ordinal`` is that library's index)."""

    ordinal: int
    uuid: str  # "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
    name: str
    compute_major: int
    compute_minor: int
    total_bytes: int
    free_bytes: int


def uuid_text(raw: bytes) -> str:
    """16 UUID bytes as NVIDIA writes them: ``GPU-`` and the 8-4-4-4-12 hex groups."""
    text = raw[:16].hex()
    return f"GPU-{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:32]}"


def _python_wheel_dirs() -> list[str]:
    """``site-packages/nvidia/*/lib`` of the ``nvidia-*`` wheels (cudart, for example)."""
    dirs: list[str] = []
    for entry in sys.path:
        if entry and os.path.isdir(os.path.join(entry, "nvidia")):
            dirs.extend(sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib"))))
    return dirs


def _search_dirs(env: Mapping[str, str]) -> Iterator[str]:
    for entry in env.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if entry:
            yield entry
    for pattern in _SYSTEM_DIRS:
        yield from sorted(glob.glob(pattern))
    yield from _python_wheel_dirs()


def candidates(
    pattern: str,
    soname: str,
    env: Mapping[str, str],
    search_dirs: Sequence[str | Path] | None = None,
) -> list[str]:
    """Paths to try for a library, best first, each real file once.

    ``pattern`` is a file glob (``libcuda.so*``); ``soname`` the name the dynamic loader
    knows (``libcuda.so.1``), tried last and only when ``search_dirs`` is not given.
    Stub libraries (``.../stubs/...``) that the CUDA toolkit ships for linking are skipped:
    they load, then fail every call.
    """
    dirs = [str(d) for d in search_dirs] if search_dirs is not None else list(_search_dirs(env))
    seen: set[str] = set()
    found: list[str] = []
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(glob.escape(directory), pattern))):
            if "/stubs/" in path or not os.path.isfile(path):
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            found.append(path)
    if search_dirs is None:
        found.append(soname)
    return found


def open_library(path: str, symbols: Sequence[str]) -> ctypes.CDLL:
    """Load ``path`` and check that it exports every name in ``symbols``."""
    try:
        library = ctypes.CDLL(path, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        raise LibraryError(f"unable to load {path}: {exc}") from exc
    for name in symbols:
        try:
            getattr(library, name)
        except AttributeError as exc:
            raise LibraryError(f"symbol lookup for {name} failed in {path}") from exc
    return library


def open_first(
    paths: Sequence[str],
    symbols: Sequence[str],
    start: Callable[[ctypes.CDLL, str], T],
    what: str,
) -> T:
    """The first of ``paths`` that loads, has ``symbols`` and passes ``start`` (which raises
    ``LibraryError`` when the library's init call fails); ``LibraryError`` with every
    reason when none does. Each failure is logged at debug."""
    reasons: list[str] = []
    for path in paths:
        try:
            return start(open_library(path, symbols), path)
        except LibraryError as exc:
            logger.debug("%s: %s", what, exc)
            reasons.append(str(exc))
    raise LibraryError("; ".join(reasons) or f"{what} not found")
