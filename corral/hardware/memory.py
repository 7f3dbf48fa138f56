"""System memory as the scheduler must see it: what is free for a new runner.

``MemAvailable`` from ``/proc/meminfo`` (the kernel's estimate of what can be allocated
without swapping), capped by a cgroup v2/v1 memory limit when the process runs in a
container, because the host's numbers overstate what the container may use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SystemMemory", "system_memory"]

_UNLIMITED = 1 << 60


@dataclass(frozen=True, slots=True)
class SystemMemory:
    total_bytes: int
    free_bytes: int
    swap_free_bytes: int = 0


def _meminfo(path: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return values
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return _UNLIMITED
    return int(text) if text.isdigit() else None


def _cgroup_limit(root: Path) -> tuple[int, int] | None:
    """(limit, usage) of this process's memory cgroup, if limited."""
    v2_limit = _read_int(root / "memory.max")
    if v2_limit is not None:
        usage = _read_int(root / "memory.current") or 0
        return (v2_limit, usage) if v2_limit < _UNLIMITED else None
    v1_limit = _read_int(root / "memory" / "memory.limit_in_bytes")
    if v1_limit is not None and v1_limit < _UNLIMITED:
        usage = _read_int(root / "memory" / "memory.usage_in_bytes") or 0
        return v1_limit, usage
    return None


def system_memory(
    proc: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")
) -> SystemMemory:
    info = _meminfo(proc)
    total = info.get("MemTotal") or (
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    )
    free = info.get("MemAvailable")
    if free is None:
        free = info.get("MemFree", 0) + info.get("Buffers", 0) + info.get("Cached", 0)
    limited = _cgroup_limit(cgroup)
    if limited is not None:
        limit, usage = limited
        total = min(total, limit)
        free = min(free, max(limit - usage, 0))
    return SystemMemory(total_bytes=total, free_bytes=free, swap_free_bytes=info.get("SwapFree", 0))
