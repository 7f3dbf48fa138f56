"""CPU facts from /proc/cpuinfo and cgroup files written by the test."""

from __future__ import annotations

import os
from pathlib import Path

from corral.hardware import cpu_info, system_memory

X86 = """processor\t: 0
model name\t: Fake EPYC 9654
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f
processor\t: 1
model name\t: Fake EPYC 9654
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f
processor\t: 2
physical id\t: 0
core id\t\t: 1
processor\t: 3
physical id\t: 1
core id\t\t: 0
"""

ARM = """processor\t: 0
Features\t: fp asimd asimddp sve i8mm
processor\t: 1
Features\t: fp asimd asimddp sve i8mm
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cores_features_and_model(tmp_path: Path) -> None:
    info = cpu_info(write(tmp_path / "cpuinfo", X86), tmp_path / "no-cgroup")
    assert info.model_name == "Fake EPYC 9654"
    assert info.logical_cores == 4
    assert info.physical_cores == 3  # (0,0) twice as hyperthreads, (0,1), (1,0)
    assert info.features == ("avx", "avx2", "avx512f", "f16c", "fma", "sse4_2")
    assert info.usable_cores == min(4, len(os.sched_getaffinity(0)))


def test_arm_features_and_no_core_ids(tmp_path: Path) -> None:
    info = cpu_info(write(tmp_path / "cpuinfo", ARM), tmp_path / "no-cgroup")
    assert info.logical_cores == 2
    assert info.physical_cores == 2, "without core ids every processor counts"
    assert "asimd" in info.features and "sve" in info.features


def test_cgroup_v2_quota_limits_usable_cores(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(cgroup / "cpu.max", "150000 100000\n")
    info = cpu_info(write(tmp_path / "cpuinfo", X86), cgroup)
    assert info.usable_cores == min(1.5, len(os.sched_getaffinity(0)))
    assert info.default_threads == 1


def test_cgroup_v1_quota_and_unlimited(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    write(v1 / "cpu" / "cpu.cfs_quota_us", "100000\n")
    write(v1 / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cpu_info(write(tmp_path / "cpuinfo", X86), v1).usable_cores == 1
    unlimited = tmp_path / "v2"
    write(unlimited / "cpu.max", "max 100000\n")
    info = cpu_info(tmp_path / "cpuinfo", unlimited)
    assert info.usable_cores == min(4, len(os.sched_getaffinity(0)))


def test_unreadable_cpuinfo_falls_back_to_the_os(tmp_path: Path) -> None:
    info = cpu_info(tmp_path / "missing", tmp_path / "missing-cgroup")
    assert info.logical_cores == os.cpu_count()
    assert info.features == ()
    assert info.default_threads >= 1


MEMINFO = """MemTotal:       16384000 kB
MemFree:         1000000 kB
MemAvailable:    8192000 kB
SwapFree:        2048000 kB
"""


def test_memory_from_meminfo(tmp_path: Path) -> None:
    memory = system_memory(write(tmp_path / "meminfo", MEMINFO), tmp_path / "no-cgroup")
    assert memory.total_bytes == 16384000 * 1024
    assert memory.free_bytes == 8192000 * 1024
    assert memory.swap_free_bytes == 2048000 * 1024


def test_memory_limited_by_cgroup_v2(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(cgroup / "memory.max", str(4 << 30))
    write(cgroup / "memory.current", str(1 << 30))
    memory = system_memory(write(tmp_path / "meminfo", MEMINFO), cgroup)
    assert memory.total_bytes == 4 << 30
    assert memory.free_bytes == 3 << 30


def test_memory_limited_by_cgroup_v1(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    write(cgroup / "memory" / "memory.limit_in_bytes", str(2 << 30))
    write(cgroup / "memory" / "memory.usage_in_bytes", str(1 << 29))
    memory = system_memory(write(tmp_path / "meminfo", MEMINFO), cgroup)
    assert (memory.total_bytes, memory.free_bytes) == (2 << 30, (2 << 30) - (1 << 29))


def test_bf16_on_cpu_only_without_gpus(tmp_path: Path) -> None:
    """BF16 weights are the faster choice only where the CPU runs the model and multiplies
    BF16 itself (the kernel's ``avx512_bf16`` flag)."""
    from typing import Any, cast

    from corral.hardware.system import SystemInfo

    bf16 = X86.replace("avx512f", "avx512f avx512_bf16 avx512_vnni")
    with_bf16 = cpu_info(write(tmp_path / "bf16", bf16), tmp_path / "no-cgroup")
    without = cpu_info(write(tmp_path / "plain", X86), tmp_path / "no-cgroup")
    assert "avx512_bf16" in with_bf16.features and "avx512_vnni" in with_bf16.features
    memory = system_memory(write(tmp_path / "meminfo", MEMINFO), tmp_path / "no-cgroup")
    assert SystemInfo(gpus=(), cpu=with_bf16, memory=memory).bf16_on_cpu
    assert not SystemInfo(gpus=(), cpu=without, memory=memory).bf16_on_cpu
    a_gpu = cast(Any, object())  # the model would run there: F16 stays
    assert not SystemInfo(gpus=(a_gpu,), cpu=with_bf16, memory=memory).bf16_on_cpu
