"""The CPU: model, cores (logical, physical, and what this process may use), SIMD features.

Physical cores come from the ``(physical id, core id)`` pairs of ``/proc/cpuinfo``; what the
process may use is the smaller of its affinity mask and its cgroup CPU quota (v2
``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), because a container limited to
2 CPUs on a 64-core host runs best with 2 threads. Features are the ones llama.cpp's CPU
kernels care about. Every file is optional: what cannot be read falls back to
``os.cpu_count()`` and no features.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuInfo", "cpu_info"]

_FEATURES = (
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "f16c",
    "fma",
    "sse4_2",
)
#: aarch64 names llama.cpp uses (``/proc/cpuinfo`` "Features")
_ARM_FEATURES = ("asimd", "asimddp", "sve", "i8mm", "fphp")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model_name: str
    logical_cores: int
    physical_cores: int
    usable_cores: float  # affinity and cgroup quota applied; may be fractional
    features: tuple[str, ...]

    @property
    def default_threads(self) -> int:
        """Threads a runner should use: physical cores, within what this process may use."""
        return max(min(self.physical_cores, math.floor(self.usable_cores)), 1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _parse_cpuinfo(text: str) -> tuple[str, int, int, tuple[str, ...]]:
    model = ""
    logical = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    physical_id = core_id = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            logical += 1
            physical_id = core_id = ""
        elif key == "model name" and not model:
            model = value
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
        elif key in ("flags", "Features"):
            flags.update(value.split())
    known = tuple(f for f in (*_FEATURES, *_ARM_FEATURES) if f in flags)
    return model, logical, len(cores), known


def _cgroup_quota(cgroup: Path) -> float | None:
    """CPUs allowed by the cgroup quota, or None when unlimited or unreadable."""
    v2 = _read(cgroup / "cpu.max").split()
    if len(v2) == 2 and v2[0] != "max":
        try:
            return int(v2[0]) / int(v2[1])
        except (ValueError, ZeroDivisionError):
            return None
    quota = _read(cgroup / "cpu" / "cpu.cfs_quota_us").strip()
    period = _read(cgroup / "cpu" / "cpu.cfs_period_us").strip()
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cpu_info(
    proc_cpuinfo: Path = Path("/proc/cpuinfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> CpuInfo:
    model, logical, physical, features = _parse_cpuinfo(_read(proc_cpuinfo))
    logical = logical or os.cpu_count() or 1
    physical = physical or logical
    try:
        usable: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = logical
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        usable = min(usable, quota)
    return CpuInfo(
        model_name=model,
        logical_cores=logical,
        physical_cores=min(physical, logical),
        usable_cores=usable,
        features=features,
    )
