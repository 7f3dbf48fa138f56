"""The instruction sets a build uses against the ones the CPU has."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from corral.engine.features import (
    REBUILD_HINT,
    build_problem,
    compiled_features,
    cpu_flags,
    missing_on_cpu,
)

REPORT = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 |"
    " AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
    " CUDA : ARCHS = 890 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 |"
)
x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 feature names")


def test_compiled_features_reads_the_cpu_section_only() -> None:
    features = compiled_features(REPORT)
    assert {"AVX2", "AVX512", "AMX_INT8", "OPENMP"} <= features
    assert "USE_GRAPHS" not in features
    assert compiled_features(REPORT, "CUDA") == {"USE_GRAPHS"}
    assert compiled_features("nothing here") == frozenset()


def test_cpu_flags_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "sse2", "avx", "avx2"}
    monkeypatch.setenv("CORRAL_CPUINFO", str(cpuinfo))
    assert "avx2" in cpu_flags()
    assert cpu_flags(tmp_path / "missing") == frozenset()


@x86
def test_missing_instructions_are_named() -> None:
    flags = frozenset({"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"})
    assert missing_on_cpu({"AVX2", "AVX512", "AVX512_VNNI", "OPENMP"}, flags) == [
        "AVX512",
        "AVX512_VNNI",
    ]
    assert missing_on_cpu({"AVX512"}, frozenset()) == []  # unknown CPU: no verdict
    problem = build_problem({"AVX2", "AVX512"}, flags)
    assert problem is not None
    assert "instructions this CPU cannot run (AVX512)" in problem
    assert REBUILD_HINT in problem


@x86
def test_amx_is_refused_even_where_the_cpu_has_it() -> None:
    flags = frozenset({"avx2", "avx512f", "amx_tile", "amx_int8"})
    problem = build_problem({"AVX2", "AVX512", "AMX_INT8"}, flags)
    assert problem is not None
    assert "AMX_INT8" in problem
    assert REBUILD_HINT in problem


@x86
def test_a_build_for_this_cpu_has_no_problem() -> None:
    flags = frozenset({"pni", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f"})
    assert build_problem({"AVX", "AVX2", "AVX512", "OPENMP", "REPACK"}, flags) is None
