"""Build llama.cpp (llama-cpp-python) for the CPU it is installed on, and prove it runs.

``python -m corral.engine.build install`` (before corral's other dependencies) and
``python -m corral.engine.build selftest`` (once the bundled models are there) are what
``install.sh`` runs. The tiers, tried in order until the self-test passes:

- ``native``: ``-march=native`` (llama-cpp-python's default, the fastest code for this CPU)
  *minus AMX* (``-mno-amx-tile -mno-amx-int8 -mno-amx-bf16``): at the pinned llama.cpp the
  AMX path crashes with SIGILL on CPUs that report AMX;
- ``avx2``: portable x86-64 with AVX2/FMA/F16C/BMI2 (any x86-64 of the last ten years);
- ``baseline``: no SIMD beyond what every x86-64 or aarch64 has; slow, but it runs.

Why not ggml's runtime-dispatched variants (``GGML_BACKEND_DL`` + ``GGML_CPU_ALL_VARIANTS``)?
They compile the CPU backend about ten times (one per x86 generation), which doubles an
install that is already compile-bound on small machines, and this llama-cpp-python does not
load backends from a folder; a native build measured on the machine itself, guarded at run
time, gives the same code a user's CPU would pick, at one compile.

No wheel reuse across CPUs: pip's wheel cache is bypassed (``--no-cache-dir``) and the built
wheel is kept in corral's own cache under a key made of everything that shaped it: the
llama-cpp-python version, the tier's flags, the compiler, the machine and, for ``native``,
the CPU's full feature list. A different CPU is a different key, so a rebuild; the same CPU
(a re-run, a fresh clone) reinstalls in seconds.

Standard library only (besides ``selftest`` once installed): this runs before corral's
dependencies exist.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, asdict, dataclass, field
from pathlib import Path
from typing import Any

from corral.engine import record
from corral.engine.features import cpu_flags

__all__ = [
    "LLAMA_CPP_PYTHON",
    "RPC_ARGS",
    "TIERS",
    "BuildPlan",
    "cache_dir",
    "ensure_selftest",
    "main",
    "plan_for",
    "tiers_for",
]

#: the one pinned engine version (pyproject.toml pins the same; a test keeps them equal)
LLAMA_CPP_PYTHON = "0.3.36"
TIERS = ("native", "avx2", "baseline")
NO_AMX = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
_X86_SIMD = ("SSE42", "AVX", "AVX_VNNI", "AVX2", "BMI2", "FMA", "F16C", "AVX512")
_AVX2_NEEDS = ("avx", "avx2", "fma", "f16c", "bmi2")
#: every tier has ggml's RPC backend (a model's layers on other hosts, ``corral rpc-worker``):
#: a 188 kB library, nothing runs remotely unless the operator lists workers
RPC_ARGS = ("-DGGML_RPC=ON",)


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


@dataclass(frozen=True)
class BuildPlan:
    """One way to compile llama.cpp: its tier, CMake options and compiler flags."""

    tier: str
    cmake_args: tuple[str, ...]
    _: KW_ONLY
    cflags: tuple[str, ...] = ()
    cuda: bool = False
    #: leave out llama.cpp's ``common`` library (and its HTTP client): llama-cpp-python
    #: forces it on but never loads it, and it is half of the compile
    skip_common: bool = True
    #: the CPU feature list this build depends on (only ``native`` builds depend on it)
    cpu_flags: tuple[str, ...] = field(default=(), compare=False)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        args = list(self.cmake_args)
        if self.skip_common:
            args.append(f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={_no_common_file()}")
        env["CMAKE_ARGS"] = " ".join(args)
        for name in ("CFLAGS", "CXXFLAGS"):
            env[name] = " ".join([*shlex.split(base.get(name, "")), *self.cflags])
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        return env

    def key(self, compiler: str) -> str:
        """Everything that shaped the build, hashed: the wheel cache's key."""
        parts = {
            "llama_cpp_python": LLAMA_CPP_PYTHON,
            "tier": self.tier,
            "cmake_args": self.cmake_args,
            "cflags": self.cflags,
            "skip_common": self.skip_common,
            "machine": platform.machine(),
            "platform": sysconfig.get_platform(),
            "compiler": compiler,
            "cpu": sorted(self.cpu_flags) if self.tier in ("native", "custom") else None,
        }
        text = json.dumps(parts, sort_keys=True)
        return f"{self.tier}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def describe(self) -> str:
        what = {
            "native": "for this CPU (-march=native, AMX off)",
            "avx2": "portable x86-64 with AVX2",
            "baseline": "portable, no SIMD extensions",
            "custom": f"with CMAKE_ARGS={' '.join(self.cmake_args)!r}",
        }.get(self.tier, self.tier)
        return what + (" with CUDA" if self.cuda else "")


def tiers_for(flags: frozenset[str]) -> list[str]:
    """The tiers that can run on this CPU, fastest first."""
    if not _x86():
        return ["native", "baseline"]
    tiers = ["native"]
    if all(f in flags for f in _AVX2_NEEDS):
        tiers.append("avx2")
    tiers.append("baseline")
    return tiers


def plan_for(
    tier: str,
    *,
    flags: frozenset[str],
    cuda: bool = False,
    no_amx_supported: bool = True,
    custom_args: str = "",
) -> BuildPlan:
    """The CMake options and compiler flags of ``tier`` on this machine."""
    extra = (*RPC_ARGS, "-DGGML_CUDA=on") if cuda else RPC_ARGS
    cflags = NO_AMX if _x86() and no_amx_supported else ()
    if tier == "custom":
        args = tuple(shlex.split(custom_args))
        keep_amx = any("AMX" in a.upper() for a in args)
        return BuildPlan(
            "custom",
            args,
            cflags=() if keep_amx else cflags,
            cuda=cuda,
            cpu_flags=tuple(sorted(flags)),
        )
    if tier == "native":
        return BuildPlan(
            "native",
            ("-DGGML_NATIVE=ON", *extra),
            cflags=cflags,
            cuda=cuda,
            cpu_flags=tuple(sorted(flags)),
        )
    if tier == "avx2":
        on = ("AVX", "AVX2", "FMA", "F16C", "BMI2", "SSE42")
        simd = [f"-DGGML_{name}={'ON' if name in on else 'OFF'}" for name in _X86_SIMD]
        return BuildPlan("avx2", ("-DGGML_NATIVE=OFF", *simd, *extra), cflags=cflags, cuda=cuda)
    if tier == "baseline":
        off = [f"-DGGML_{name}=OFF" for name in _X86_SIMD] if _x86() else []
        return BuildPlan("baseline", ("-DGGML_NATIVE=OFF", *off, *extra), cflags=cflags, cuda=cuda)
    raise ValueError(f"unknown engine tier {tier!r} (choose from {', '.join(TIERS)})")


_NO_COMMON = """\
# Included right after llama.cpp's project(): its common library is not used by
# llama-cpp-python (which forces it on), and compiling it is half of the build.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "not used by llama-cpp-python" FORCE)
"""


def _no_common_file() -> Path:
    path = cache_dir() / "no-common.cmake"
    if not path.is_file() or path.read_text() != _NO_COMMON:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_NO_COMMON)
    return path


def cache_dir() -> Path:
    override = os.environ.get("CORRAL_ENGINE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "corral" / "engine"


def compiler_version() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (done.stdout.splitlines() or ["unknown"])[0].strip()


def compiler_accepts(flags: Sequence[str]) -> bool:
    """Whether the C compiler takes ``flags`` (old compilers know no AMX options)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.c"
        source.write_text("int main(void) { return 0; }\n")
        try:
            done = subprocess.run(
                [compiler, *flags, "-c", str(source), "-o", str(Path(tmp) / "probe.o")],
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return False
    return done.returncode == 0


def wants_cuda() -> bool:
    """An NVIDIA GPU and the CUDA toolkit are here, and nobody asked for a CPU build."""
    if os.environ.get("CORRAL_CPU_ONLY"):
        return False
    if shutil.which("nvcc") is None or shutil.which("nvidia-smi") is None:
        return False
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.startswith("GPU") for line in done.stdout.splitlines())


def _say(message: str) -> None:
    sys.stderr.write(f"engine: {message}\n")
    sys.stderr.flush()


NETWORK_ATTEMPTS = 3
# What pip prints when a download, not the compiler, failed: worth another try.
NETWORK_ERRORS = (
    "incomplete-download",
    "Connection broken",
    "ConnectionError",
    "NewConnectionError",
    "ReadTimeoutError",
    "Could not fetch URL",
    "Connection interrupted",
)


def network_failure(log: str) -> bool:
    """Whether a failed pip run's output shows a network failure (not a compile error)."""
    return any(marker in log for marker in NETWORK_ERRORS)


def build_wheel(plan: BuildPlan, *, python: str, compiler: str) -> Path:
    """The wheel for ``plan``: from corral's cache, or compiled now and cached."""
    key = plan.key(compiler)
    folder = cache_dir() / key
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels:
        made = "made for this CPU" if plan.tier == "native" else "compiled before"
        _say(f"reusing the build {made} ({key}, {folder})")
        return wheels[-1]
    folder.parent.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 2
    _say(
        f"compiling llama.cpp {plan.describe()}: a few minutes on {cores} cores (log: {folder}.log)"
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".build-") as tmp:
        argv = [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",  # pip's wheel cache knows no CPU: never store or reuse there
            "--no-binary",
            "llama-cpp-python",
            "-w",
            tmp,
            f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
        ]
        env = plan.env(dict(os.environ))
        text = ""  # the log of a failed run
        for attempt in range(1, NETWORK_ATTEMPTS + 1):
            with open(f"{folder}.log", "w") as log:
                log.write(f"$ {shlex.join(argv)}\nCMAKE_ARGS={env['CMAKE_ARGS']}\n")
                log.write(f"CFLAGS={env['CFLAGS']}\nCXXFLAGS={env['CXXFLAGS']}\n")
                log.flush()
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            if done.returncode == 0:
                break
            text = Path(f"{folder}.log").read_text(errors="replace")
            if attempt == NETWORK_ATTEMPTS or not network_failure(text):
                break
            _say(
                "downloading the sources failed (network); trying again"
                f" ({attempt + 1} of {NETWORK_ATTEMPTS})"
            )
            time.sleep(10 * attempt)
        if done.returncode != 0:
            what = (
                f"downloading llama-cpp-python failed {NETWORK_ATTEMPTS} times (network)"
                if network_failure(text)
                else "compiling llama.cpp failed"
            )
            raise SystemExit(
                f"engine: {what}; the last lines of its log ({folder}.log):\n"
                + "\n".join(text.splitlines()[-15:])
            )
        built = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if not built:
            raise SystemExit(f"engine: pip built no wheel (log: {folder}.log)")
        staged = Path(tmp) / "ready"
        staged.mkdir()
        shutil.move(str(built[-1]), staged / built[-1].name)
        (staged / "build.json").write_text(
            json.dumps({**asdict(plan), "seconds": round(time.monotonic() - started, 1)})
        )
        if folder.exists():  # built meanwhile by another install: keep that one
            shutil.rmtree(staged)
        else:
            os.replace(staged, folder)
    _say(f"compiled in {time.monotonic() - started:.0f} s")
    return sorted(folder.glob("llama_cpp_python-*.whl"))[-1]


def install_wheel(wheel: Path, *, python: str) -> None:
    argv = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall"]
    done = subprocess.run([*argv, "--no-cache-dir", str(wheel)])
    if done.returncode != 0:
        raise SystemExit(f"engine: installing {wheel.name} failed")


def _build_seconds(wheel: Path) -> float | None:
    try:
        return float(json.loads((wheel.parent / "build.json").read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_and_install(plan: BuildPlan, *, python: str) -> dict[str, Any]:
    """Compile (or take from the cache) and install ``plan``; record and return what it is."""
    compiler = compiler_version()
    wheel = build_wheel(plan, python=python, compiler=compiler)
    install_wheel(wheel, python=python)
    data = {
        "tier": plan.tier,
        "description": plan.describe(),
        "cmake_args": list(plan.cmake_args),
        "cflags": list(plan.cflags),
        "cuda": plan.cuda,
        "key": plan.key(compiler),
        "llama_cpp_python": LLAMA_CPP_PYTHON,
        "compiler": compiler,
        "machine": platform.machine(),
        "cpu_flags": sorted(plan.cpu_flags),
        "wheel": str(wheel),
        "build_seconds": _build_seconds(wheel),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "library_sha256": record.library_digest(),
        "selftest": None,
    }
    record.save(data)
    return data


def _current_plan(args: argparse.Namespace, flags: frozenset[str]) -> BuildPlan:
    custom = os.environ.get("CMAKE_ARGS", "").strip()
    cuda = wants_cuda() and not custom
    no_amx = _x86() and compiler_accepts(NO_AMX)
    tier = "custom" if custom else (args.tier or "native")
    return plan_for(tier, flags=flags, cuda=cuda, no_amx_supported=no_amx, custom_args=custom)


CRASHED = "selftest-crashed.json"


def crashed_here(plan: BuildPlan, compiler: str) -> str | None:
    """How ``plan``'s build died in an earlier self-test on this machine, if it did."""
    try:
        data = json.loads((cache_dir() / plan.key(compiler) / CRASHED).read_text())
    except (OSError, ValueError):
        return None
    return str(data.get("error", "crashed")) if isinstance(data, dict) else "crashed"


def mark_crashed(key: str, result: dict[str, Any]) -> None:
    """Remember that the build ``key`` died in its self-test, so a re-run skips its tier."""
    folder = cache_dir() / key
    if folder.is_dir():
        (folder / CRASHED).write_text(json.dumps({"error": result.get("error", "")}))


def _install(args: argparse.Namespace) -> int:
    flags = cpu_flags()
    compiler = compiler_version()
    plan = _current_plan(args, flags)
    if args.rebuild:
        shutil.rmtree(cache_dir() / plan.key(compiler), ignore_errors=True)
    elif plan.tier != "custom":
        tiers = tiers_for(flags)
        later = tiers[tiers.index(plan.tier) + 1 :] if plan.tier in tiers else []
        while (why := crashed_here(plan, compiler)) is not None and later:
            following = plan_for(
                later.pop(0), flags=flags, cuda=plan.cuda, no_amx_supported=bool(plan.cflags)
            )
            _say(
                f"the {plan.tier} build {why} in its self-test on this CPU before: using"
                f" tier {following.tier} ({following.describe()}); --rebuild-engine tries again"
            )
            plan = following
    current = record.load()
    if current is not None and not args.rebuild and current.get("key") == plan.key(compiler):
        _say(f"llama.cpp is installed {plan.describe()} (tier {plan.tier}); nothing to do")
        return 0
    build_and_install(plan, python=args.python)
    _say(f"installed llama.cpp {plan.describe()}")
    return 0


Selftest = Callable[[str], dict[str, Any]]
Installer = Callable[[BuildPlan], dict[str, Any]]


def ensure_selftest(
    *,
    current_tier: str,
    next_plans: Sequence[BuildPlan],
    selftest: Selftest,
    install: Installer,
    crashed: Callable[[str, dict[str, Any]], None] = lambda tier, result: None,
) -> dict[str, Any]:
    """Self-test the installed engine; while it dies by a signal, install the next plan (a
    more portable tier) and test again. Returns the last self-test result. ``crashed`` hears
    of every tier that died (to remember it)."""
    tier = current_tier
    remaining = list(next_plans)
    while True:
        result = selftest(tier)
        if result.get("ok") or "signal" not in result:
            return result
        crashed(tier, result)
        if not remaining:
            _say(f"the {tier} build {result['error']} in its self-test, and no tier is left")
            return result
        plan = remaining.pop(0)
        _say(
            f"the {tier} build of llama.cpp {result['error']} in its self-test: this CPU"
            f" cannot run it; rebuilding {plan.describe()} (tier {plan.tier}) and testing again"
        )
        install(plan)
        tier = plan.tier


def _selftest(args: argparse.Namespace) -> int:
    from corral.engine.selftest import run_selftest

    flags = cpu_flags()
    current = record.load() or {}
    tier = str(current.get("tier", "unrecorded"))
    cuda = bool(current.get("cuda"))
    no_amx = _x86() and compiler_accepts(NO_AMX)
    if tier == "custom" or tier == "unrecorded":
        later: list[str] = []
    else:
        tiers = tiers_for(flags)
        later = tiers[tiers.index(tier) + 1 :] if tier in tiers else []
    plans = [plan_for(t, flags=flags, cuda=cuda, no_amx_supported=no_amx) for t in later]
    _say("self-test: a short real decode in a child process...")
    result = ensure_selftest(
        current_tier=tier,
        next_plans=plans,
        selftest=lambda t: run_selftest(python=args.python, model=args.model, tier=t),
        install=lambda plan: build_and_install(plan, python=args.python),
        crashed=lambda _tier, result: mark_crashed(str((record.load() or {}).get("key")), result),
    )
    data = record.load()
    if data is not None:
        data["selftest"] = {k: v for k, v in result.items() if k != "system_info"}
        data["selftest"]["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record.save(data)
    if result.get("ok"):
        _say(
            f"self-test passed (tier {(data or {}).get('tier', tier)}):"
            f" {result.get('prompt_tokens_per_s')} tok/s prompt,"
            f" {result.get('decode_tokens_per_s')} tok/s decode"
        )
        return 0
    detail = "; ".join(result.get("stderr_tail", [])[-3:])
    _say(f"self-test failed: {result.get('error')}" + (f" ({detail})" if detail else ""))
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m corral.engine.build",
        description="Build llama.cpp for this CPU (install) and prove it runs (selftest).",
    )
    parser.add_argument("command", choices=("install", "selftest", "plan"))
    parser.add_argument("--rebuild", action="store_true", help="compile again, ignore caches")
    parser.add_argument(
        "--tier",
        choices=TIERS,
        default=os.environ.get("CORRAL_ENGINE_TIER") or None,
        help="start from this tier (default: native)",
    )
    parser.add_argument("--model", default=None, help="GGUF for the self-test")
    parser.add_argument("--python", default=sys.executable, help="the environment's python")
    args = parser.parse_args(argv)
    if args.command == "install":
        return _install(args)
    if args.command == "selftest":
        return _selftest(args)
    plan = _current_plan(args, cpu_flags())
    sys.stdout.write(json.dumps({**asdict(plan), "key": plan.key(compiler_version())}, indent=2))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
