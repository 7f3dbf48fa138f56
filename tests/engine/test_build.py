"""The engine build: tiers, the CPU-keyed cache, and the self-test's fallback."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.engine import build, record
from corral.engine.build import (
    NO_AMX,
    RPC_ARGS,
    BuildPlan,
    ensure_selftest,
    plan_for,
    tiers_for,
)
from corral.engine.features import cpu_flags
from corral.engine.selftest import run_selftest

ROOT = Path(__file__).resolve().parents[2]
FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f"})
x86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 tiers")


def test_the_pin_is_the_pyproject_pin() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"llama-cpp-python=={build.LLAMA_CPP_PYTHON}"' in pyproject


@x86
def test_native_keeps_amx_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_CACHE", str(tmp_path))
    plan = plan_for("native", flags=FLAGS)
    assert "-DGGML_NATIVE=ON" in plan.cmake_args
    assert plan.cflags == NO_AMX
    env = plan.env({"CFLAGS": "-g"})
    assert env["CFLAGS"] == "-g " + " ".join(NO_AMX)
    assert env["CXXFLAGS"] == " ".join(NO_AMX)
    assert env["CMAKE_ARGS"].startswith(
        "-DGGML_NATIVE=ON -DGGML_RPC=ON -DCMAKE_PROJECT_llama.cpp_INCLUDE="
    )
    no_common = (tmp_path / "no-common.cmake").read_text()
    assert "set(LLAMA_BUILD_COMMON OFF CACHE BOOL" in no_common


@x86
def test_portable_tiers_name_every_instruction_set() -> None:
    avx2 = plan_for("avx2", flags=FLAGS)
    assert "-DGGML_NATIVE=OFF" in avx2.cmake_args
    assert "-DGGML_AVX2=ON" in avx2.cmake_args
    assert "-DGGML_AVX512=OFF" in avx2.cmake_args
    baseline = plan_for("baseline", flags=FLAGS)
    assert not any(arg.endswith("=ON") for arg in baseline.cmake_args if arg not in RPC_ARGS)
    assert "-DGGML_AVX=OFF" in baseline.cmake_args
    assert plan_for("native", flags=FLAGS, cuda=True).cmake_args[-1] == "-DGGML_CUDA=on"


@pytest.mark.parametrize("tier", ["native", "avx2", "baseline"])
@pytest.mark.parametrize("cuda", [False, True])
def test_every_tier_has_the_rpc_backend(tier: str, cuda: bool) -> None:
    # corral rpc-worker and models spread over workers need ggml-rpc in every build; the
    # flag is part of the cache key, so a build from before it is not reused
    plan = plan_for(tier, flags=FLAGS, cuda=cuda)
    assert "-DGGML_RPC=ON" in plan.cmake_args
    assert "-DGGML_RPC=ON" in plan.env({})["CMAKE_ARGS"]
    without = BuildPlan(tier, tuple(a for a in plan.cmake_args if a not in RPC_ARGS))
    assert plan.key("gcc 12") != BuildPlan(
        tier, without.cmake_args, cflags=plan.cflags, cuda=cuda, cpu_flags=plan.cpu_flags
    ).key("gcc 12")


def test_a_custom_build_keeps_its_own_arguments() -> None:
    # CMAKE_ARGS given by the user are theirs: no RPC added behind their back
    assert plan_for("custom", flags=FLAGS, custom_args="-DGGML_BLAS=ON").cmake_args == (
        "-DGGML_BLAS=ON",
    )


@x86
def test_tiers_follow_the_cpu() -> None:
    assert tiers_for(FLAGS) == ["native", "avx2", "baseline"]
    assert tiers_for(frozenset({"sse4_2", "avx"})) == ["native", "baseline"]


def test_only_native_builds_are_keyed_by_the_cpu() -> None:
    other_cpu = FLAGS - {"avx512f"}
    native = plan_for("native", flags=FLAGS)
    assert native.key("gcc 12") != plan_for("native", flags=other_cpu).key("gcc 12")
    assert native.key("gcc 12") != native.key("gcc 13")
    assert native.key("gcc 12").startswith("native-")
    portable = plan_for("baseline", flags=FLAGS)
    assert portable.key("gcc 12") == plan_for("baseline", flags=other_cpu).key("gcc 12")


def test_custom_args_keep_amx_only_when_asked() -> None:
    plan = plan_for("custom", flags=FLAGS, custom_args="-DGGML_BLAS=ON")
    assert plan.cmake_args == ("-DGGML_BLAS=ON",)
    kept = plan_for("custom", flags=FLAGS, custom_args="-DGGML_NATIVE=OFF -DGGML_AMX_INT8=ON")
    assert kept.cflags == ()
    with pytest.raises(ValueError, match="unknown engine tier"):
        plan_for("fastest", flags=FLAGS)


def test_plan_command_prints_this_machine_s_plan() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.engine.build", "plan"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    plan = json.loads(done.stdout)
    assert plan["tier"] in ("native", "custom")
    assert re.fullmatch(r"(native|custom)-[0-9a-f]{16}", plan["key"])


def test_install_sh_options() -> None:
    shown = subprocess.run(
        ["bash", str(ROOT / "install.sh"), "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0
    assert "--rebuild-engine" in shown.stdout
    wrong = subprocess.run(
        ["bash", str(ROOT / "install.sh"), "--fast"], capture_output=True, text=True
    )
    assert wrong.returncode == 2
    assert "unknown option '--fast'" in wrong.stderr


def test_the_installed_engine_is_recorded_and_runs_here() -> None:
    """What install.sh left behind: a record of this library, and a build this CPU runs."""
    from corral.engine.probe import engine_report

    report = engine_report()
    assert report["ok"], report
    assert report["llama_cpp_python"] == build.LLAMA_CPP_PYTHON
    assert "CPU" in report["backends"]
    if platform.machine() == "x86_64":
        assert "AMX_INT8" not in report["cpu_features"]
    data = record.load()
    if data is None:
        pytest.skip("llama.cpp was not installed by corral.engine.build here")
    assert report["build"]["tier"] == data["tier"]


@pytest.mark.model
def test_a_crashing_build_falls_back_a_tier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The self-test child really dies by SIGILL while the "native" build is under test; the
    loop installs the next tier and the real engine passes its self-test."""
    monkeypatch.setenv("CORRAL_ENGINE_SELFTEST_CRASH", "native")
    installed: list[BuildPlan] = []

    def install(plan: BuildPlan) -> dict[str, Any]:
        installed.append(plan)  # the real one compiles for minutes; the engine stays
        return {}

    results: list[dict[str, Any]] = []

    def selftest(tier: str) -> dict[str, Any]:
        results.append(run_selftest(tier=tier, tokens=4))
        return results[-1]

    plans = [plan_for("avx2", flags=FLAGS), plan_for("baseline", flags=FLAGS)]
    result = ensure_selftest(
        current_tier="native", next_plans=plans, selftest=selftest, install=install
    )
    assert results[0]["ok"] is False
    assert results[0]["signal"] == "SIGILL"
    assert installed == plans[:1]
    assert result["ok"] is True, result
    assert result["decode_tokens"] > 0
    err = capsys.readouterr().err
    assert "the native build of llama.cpp killed by signal 4 (SIGILL) in its self-test" in err
    assert "rebuilding portable x86-64 with AVX2 (tier avx2)" in err


@pytest.mark.model
def test_no_tier_left_reports_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_SELFTEST_CRASH", "*")
    result = ensure_selftest(
        current_tier="baseline",
        next_plans=[],
        selftest=lambda tier: run_selftest(tier=tier, tokens=2),
        install=lambda plan: {},
    )
    assert result == {**result, "ok": False, "signal": "SIGILL"}


@x86
def test_a_tier_that_crashed_here_is_skipped_on_the_next_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_CACHE", str(tmp_path))
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    monkeypatch.setenv("CORRAL_CPU_ONLY", "1")
    monkeypatch.setenv("CORRAL_ENGINE_RECORD", str(tmp_path / "engine.json"))
    flags = cpu_flags()
    if "avx2" not in flags:
        pytest.skip("this CPU has no AVX2 tier")
    compiler = build.compiler_version()
    native = plan_for("native", flags=flags, no_amx_supported=build.compiler_accepts(NO_AMX))
    (tmp_path / native.key(compiler)).mkdir()
    assert build.crashed_here(native, compiler) is None
    build.mark_crashed(native.key(compiler), {"error": "killed by signal 4 (SIGILL)"})
    assert build.crashed_here(native, compiler) == "killed by signal 4 (SIGILL)"
    installed: list[BuildPlan] = []
    monkeypatch.setattr(build, "build_and_install", lambda plan, python: installed.append(plan))
    assert build.main(["install"]) == 0
    assert [plan.tier for plan in installed] == ["avx2"]
    err = capsys.readouterr().err
    assert "the native build killed by signal 4 (SIGILL) in its self-test on this CPU" in err
    assert build.main(["install", "--rebuild"]) == 0  # tries native again, marker gone
    assert [plan.tier for plan in installed] == ["avx2", "native"]
    assert build.crashed_here(native, compiler) is None


def _fake_pip(tmp_path: Path, outcomes: list[str]) -> Path:
    """An interpreter stand-in whose ``-m pip wheel ... -w DIR`` plays ``outcomes`` in order:
    "network" (pip's dropped-download error), "compile" (a compiler error) or "ok" (a wheel)."""
    (tmp_path / "outcomes").write_text("\n".join(outcomes))
    script = tmp_path / "python"
    script.write_text(
        f"""#!{sys.executable}
import pathlib, sys
state = pathlib.Path({str(tmp_path)!r}) / "outcomes"
runs = state.read_text().split()
state.write_text("\\n".join(runs[1:]))
if runs[0] == "network":
    print("WARNING: Connection interrupted while downloading.")
    print("error: incomplete-download")
    sys.exit(1)
if runs[0] == "compile":
    print("ggml.c:1: error: unknown type name 'bogus'")
    sys.exit(1)
folder = pathlib.Path(sys.argv[sys.argv.index("-w") + 1])
(folder / "llama_cpp_python-0-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
"""
    )
    script.chmod(0o755)
    return script


def test_a_dropped_download_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("corral.engine.build.time.sleep", lambda seconds: None)
    python = _fake_pip(tmp_path, ["network", "network", "ok"])
    wheel = build.build_wheel(plan_for("baseline", flags=FLAGS), python=str(python), compiler="cc")
    assert wheel.read_bytes() == b"wheel"
    err = capsys.readouterr().err
    assert "trying again (2 of 3)" in err and "trying again (3 of 3)" in err


def test_a_compile_error_is_not_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("corral.engine.build.time.sleep", lambda seconds: None)
    python = _fake_pip(tmp_path, ["compile", "ok"])
    with pytest.raises(
        SystemExit, match=r"(?s)compiling llama.cpp failed.*unknown type name 'bogus'"
    ):
        build.build_wheel(plan_for("baseline", flags=FLAGS), python=str(python), compiler="cc")
    assert (tmp_path / "outcomes").read_text() == "ok"  # one run only


def test_downloads_that_keep_failing_end_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_ENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("corral.engine.build.time.sleep", lambda seconds: None)
    python = _fake_pip(tmp_path, ["network"] * 3 + ["ok"])
    with pytest.raises(SystemExit, match=r"(?s)failed 3 times \(network\).*incomplete-download"):
        build.build_wheel(plan_for("baseline", flags=FLAGS), python=str(python), compiler="cc")
    assert (tmp_path / "outcomes").read_text() == "ok"
