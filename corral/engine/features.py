"""Which instruction sets an engine build uses, and whether this CPU can run them.

ggml reports the instruction sets its CPU backend was *compiled* with (``llama_print_system_info``:
``CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | ... |``); on x86-64 these are compile-time facts, so a
build made on a richer CPU reports instructions this one may lack. The kernel lists what the
CPU has in ``/proc/cpuinfo``. Comparing the two before a model is loaded turns a would-be
SIGILL into a sentence with the fix. AMX is refused even where the CPU has it: at the pinned
llama.cpp its AMX path crashes (tile-data permission is requested on the main thread only).
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "BROKEN",
    "REBUILD_HINT",
    "build_problem",
    "compiled_features",
    "cpu_flags",
    "missing_on_cpu",
    "usable_cpus",
]

#: ggml's x86 feature names -> the ``/proc/cpuinfo`` flags each needs
X86_FLAGS: dict[str, tuple[str, ...]] = {
    "SSE3": ("pni",),
    "SSSE3": ("ssse3",),
    "AVX": ("avx",),
    "AVX_VNNI": ("avx_vnni",),
    "AVX2": ("avx2",),
    "F16C": ("f16c",),
    "FMA": ("fma",),
    "BMI2": ("bmi2",),
    "AVX512": ("avx512f",),
    "AVX512_VBMI": ("avx512vbmi",),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX_INT8": ("amx_tile", "amx_int8"),
}

#: features a build must not use at this llama.cpp version, and why
BROKEN: dict[str, str] = {
    "AMX_INT8": (
        "its AMX matrix path crashes at this llama.cpp version (tile-data permission is"
        " requested on the main thread only)"
    ),
}

REBUILD_HINT = "./install.sh --rebuild-engine"

_SECTION = re.compile(r"([A-Za-z0-9_\-]+) : ")
_FEATURE = re.compile(r"([A-Z0-9_]+) = 1\b")


def compiled_features(system_info: str, backend: str = "CPU") -> frozenset[str]:
    """The features ``backend``'s section of ``llama_print_system_info()`` reports as on."""
    sections = list(_SECTION.finditer(system_info))
    for index, match in enumerate(sections):
        if match.group(1) != backend:
            continue
        end = sections[index + 1].start() if index + 1 < len(sections) else len(system_info)
        return frozenset(_FEATURE.findall(system_info[match.end() : end]))
    return frozenset()


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, aarch64 ``Features``); empty if unreadable.

    ``CORRAL_CPUINFO`` names another file to read: how the tests play a different CPU.
    """
    if cpuinfo is None:
        cpuinfo = Path(os.environ.get("CORRAL_CPUINFO") or "/proc/cpuinfo")
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask): the engine's default threads."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def missing_on_cpu(features: Iterable[str], flags: frozenset[str]) -> list[str]:
    """The x86 features a build uses that this CPU lacks (nothing when flags are unknown)."""
    if not flags or platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return []
    return sorted(f for f in features if any(n not in flags for n in X86_FLAGS.get(f, ())))


def build_problem(features: Iterable[str], flags: frozenset[str]) -> str | None:
    """Why this engine build cannot run here, with the command that fixes it; None if it can."""
    features = frozenset(features)
    missing = missing_on_cpu(features, flags)
    if missing:
        return (
            "the engine (llama.cpp) was built for instructions this CPU cannot run"
            f" ({', '.join(missing)}): it was compiled on, or copied from, another machine;"
            f" rebuild it for this one with `{REBUILD_HINT}`"
        )
    broken = sorted(f for f in features if f in BROKEN)
    if broken:
        return (
            f"the engine (llama.cpp) was built with {', '.join(broken)}, and"
            f" {BROKEN[broken[0]]}; rebuild it without with `{REBUILD_HINT}`"
        )
    return None
