"""GPU discovery through the real ctypes paths, against fake NVIDIA libraries (conftest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.config import Settings
from corral.hardware import MINIMUM_GPU_BYTES, CpuInfo, GpuDiscovery, Hardware, SystemMemory
from corral.hardware.libraries import candidates, uuid_text
from tests.hardware.conftest import FakeLibs

MiB = 1024 * 1024
UUID0 = "GPU-00000000-0000-0000-0000-000000000000"
UUID1 = "GPU-00000000-0000-0000-0000-000000000001"


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().split() if log.exists() else []


def discover(fakes: FakeLibs, **kwargs: object) -> GpuDiscovery:
    discovery = GpuDiscovery(search_dirs=[fakes.folder], **kwargs)  # type: ignore[arg-type]
    discovery.discover()
    return discovery


def test_two_gpus_through_the_driver_with_nvml_memory(
    fakes: FakeLibs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    monkeypatch.setenv("FAKEGPU_0_FREE_MIB", "6000")
    monkeypatch.setenv("FAKEGPU_1_TOTAL_MIB", "24576")
    monkeypatch.setenv("FAKEGPU_1_FREE_MIB", "20000")
    monkeypatch.setenv("FAKEGPU_1_CC", "8.9")
    monkeypatch.setenv("FAKEGPU_1_NAME", "Fake RTX 4090")
    discovery = discover(fakes)
    gpus = discovery.discover()
    assert [(g.id, g.index, g.name, g.compute, g.driver) for g in gpus] == [
        (UUID0, 0, "Fake GPU 0", "8.6", "12.4"),
        (UUID1, 1, "Fake RTX 4090", "8.9", "12.4"),
    ]
    assert [(g.total_bytes // MiB, g.free_bytes // MiB) for g in gpus] == [
        (8192, 6000),
        (24576, 20000),
    ]
    assert all(g.library == "cuda" and g.minimum_bytes == MINIMUM_GPU_BYTES for g in gpus)
    assert set(discovery.library_paths) == {"nvml", "cuda"}
    made = calls(tmp_path)
    assert "nvmlDeviceGetMemoryInfo" in made
    assert "cuCtxCreate_v3" not in made, "NVML knows the memory: no CUDA context is made"
    discovery.close()
    assert "nvmlShutdown" in calls(tmp_path)


def test_without_nvml_memory_comes_from_a_driver_context(fakes: FakeLibs, tmp_path: Path) -> None:
    fakes.install("libcuda.so.1")
    gpus = discover(fakes).discover()
    assert [g.free_bytes // MiB for g in gpus] == [7168, 7168]
    assert calls(tmp_path).count("cuCtxCreate_v3") == 2


def test_a_driver_that_fails_cuinit_falls_back_to_cudart(
    fakes: FakeLibs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    monkeypatch.setenv("FAKEGPU_FAIL_CUDA", "1")
    discovery = discover(fakes)
    gpus = discovery.discover()
    assert [g.id for g in gpus] == [UUID0, UUID1]
    assert set(discovery.library_paths) == {"nvml", "cudart"}
    assert any("cuInit" in e and "too old or missing" in e for e in discovery.errors)


def test_a_driver_missing_a_symbol_falls_back_to_cudart(fakes: FakeLibs, tmp_path: Path) -> None:
    fakes.install("libcuda.so.1", variant=".nomeminfo")
    fakes.install("libcudart.so.12")
    discovery = discover(fakes)
    gpus = discovery.discover()
    assert [g.id for g in gpus] == [UUID0, UUID1]
    assert [g.total_bytes // MiB for g in gpus] == [8192, 8192]
    assert set(discovery.library_paths) == {"cudart"}
    assert any("symbol lookup for cuMemGetInfo_v2 failed" in e for e in discovery.errors)
    assert "cudaMemGetInfo" in calls(tmp_path)


def test_nvml_that_fails_init_is_skipped(
    fakes: FakeLibs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    monkeypatch.setenv("FAKEGPU_FAIL_NVML", "1")
    discovery = discover(fakes)
    assert len(discovery.discover()) == 2
    assert set(discovery.library_paths) == {"cuda"}
    assert "cuCtxCreate_v3" in calls(tmp_path)


def test_every_library_failing_means_no_gpu_and_no_error(
    fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    monkeypatch.setenv("FAKEGPU_FAIL_INIT", "1")
    discovery = discover(fakes)
    assert discovery.discover() == ()
    assert len(discovery.errors) == 3


def test_no_libraries_at_all(fakes: FakeLibs) -> None:
    discovery = discover(fakes)
    assert discovery.discover() == ()
    assert discovery.refresh() == ()


def test_not_a_library_is_skipped(fakes: FakeLibs) -> None:
    (fakes.folder / "libcuda.so.1").write_bytes(b"\x7fELF garbage")
    fakes.install("libcudart.so.12")
    discovery = discover(fakes)
    assert len(discovery.discover()) == 2
    assert any("unable to load" in e for e in discovery.errors)


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        ("1", [UUID1]),
        ("1,0", [UUID1, UUID0]),
        (UUID1, [UUID1]),
        (f"{UUID1},{UUID0}", [UUID1, UUID0]),
        ("", []),
        ("-1", []),
        ("0,7,1", [UUID0]),  # CUDA stops at the first entry that matches nothing
    ],
)
def test_cuda_visible_devices(
    fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[str]
) -> None:
    fakes.install_all()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = discover(fakes).discover()
    assert [g.id for g in gpus] == expected
    assert [g.index for g in gpus] == list(range(len(expected))), "indices as runners see them"


def test_cuda_visible_devices_through_the_runtime(
    fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install("libcudart.so.12", "libnvidia-ml.so.1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("FAKEGPU_1_FREE_MIB", "1234")
    gpus = discover(fakes).discover()
    assert [(g.id, g.index, g.free_bytes // MiB) for g in gpus] == [(UUID1, 0, 1234)]


def test_too_old_gpus_are_skipped(fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch) -> None:
    fakes.install_all()
    monkeypatch.setenv("FAKEGPU_0_CC", "3.5")
    gpus = discover(fakes).discover()
    assert [g.id for g in gpus] == [UUID1]


def test_overhead_is_taken_off_what_a_model_may_use(
    fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    gpus = discover(fakes, overhead_bytes=1024 * MiB).discover()
    assert gpus[0].overhead_bytes == 1024 * MiB
    assert gpus[0].usable_bytes == 7168 * MiB - MINIMUM_GPU_BYTES - 1024 * MiB


def test_refresh_rereads_free_memory_only(
    fakes: FakeLibs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install_all()
    discovery = discover(fakes)
    before = len(calls(tmp_path))
    monkeypatch.setenv("FAKEGPU_1_FREE_MIB", "100")
    gpus = discovery.refresh()
    assert [g.free_bytes // MiB for g in gpus] == [7168, 100]
    made = calls(tmp_path)[before:]
    assert made == ["nvmlDeviceGetMemoryInfo"] * 2, "no init, no enumeration, no context"


def test_refresh_through_driver_contexts_without_nvml(
    fakes: FakeLibs, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.install("libcuda.so.1")
    discovery = discover(fakes)
    monkeypatch.setenv("FAKEGPU_0_FREE_MIB", "512")
    assert [g.free_bytes // MiB for g in discovery.refresh()] == [512, 7168]


def test_search_order_and_stub_skipping(tmp_path: Path) -> None:
    first, second, stubs = tmp_path / "a", tmp_path / "b", tmp_path / "cuda" / "stubs"
    for folder in (first, second, stubs):
        folder.mkdir(parents=True)
        (folder / "libcuda.so.1").write_bytes(b"")
    (first / "libcuda.so").symlink_to(first / "libcuda.so.1")
    env = {"LD_LIBRARY_PATH": f"{first}:{stubs}:{second}"}
    found = candidates("libcuda.so*", "libcuda.so.1", env)
    assert found[:2] == [str(first / "libcuda.so"), str(second / "libcuda.so.1")]
    assert not any("/stubs/" in path for path in found)
    assert found[-1] == "libcuda.so.1", "the loader's own search comes last"
    assert candidates("libcuda.so*", "libcuda.so.1", {}, search_dirs=[second]) == [
        str(second / "libcuda.so.1")
    ]


def test_uuid_text() -> None:
    raw = bytes(range(16))
    assert uuid_text(raw) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


# ---- the whole machine --------------------------------------------------------------------

CPU = CpuInfo("Fake CPU", 8, 4, 8.0, ("avx2",))
MEMORY = SystemMemory(total_bytes=32 << 30, free_bytes=30 << 30)


def hardware(fakes: FakeLibs, *, offloads: bool, **settings: object) -> Hardware:
    return Hardware(
        Settings().with_changes(**settings),
        search_dirs=[fakes.folder],
        memory=lambda: MEMORY,
        cpu=lambda: CPU,
        offloads=lambda: offloads,
    )


def test_gpus_are_used_when_llama_cpp_can_offload(fakes: FakeLibs) -> None:
    fakes.install_all()
    info = hardware(fakes, offloads=True).discover()
    assert [g.id for g in info.gpus] == [UUID0, UUID1]
    assert info.gpu_note == ""
    lines = info.log_lines()
    assert lines[0] == (
        f'inference compute id={UUID0} library=cuda compute="8.6" driver="12.4"'
        ' name="Fake GPU 0" total="8.0 GiB" available="7.0 GiB"'
    )
    assert lines[-1].startswith('inference compute id=cpu library=cpu compute="" driver=""')
    assert len(lines) == 3


def test_gpus_are_listed_but_not_used_by_a_cpu_build(fakes: FakeLibs) -> None:
    fakes.install_all()
    info = hardware(fakes, offloads=False).discover()
    assert info.gpus == ()
    assert len(info.gpus_found) == 2
    assert "built without CUDA" in info.gpu_note
    assert [d["used"] for d in info.devices()] == [False, False, True]


def test_llm_library_cpu_keeps_models_off_the_gpus(fakes: FakeLibs) -> None:
    fakes.install_all()
    info = hardware(fakes, offloads=True, llm_library="cpu_avx2").discover()
    assert info.gpus == ()
    assert "OLLAMA_LLM_LIBRARY" in info.gpu_note


def test_info_json_shape(fakes: FakeLibs) -> None:
    fakes.install_all()
    data = hardware(fakes, offloads=True, gpu_overhead_bytes=0).discover().as_json()
    assert set(data) == {"devices", "cpu", "memory", "gpu_note"}
    device = data["devices"][0]
    assert {"id", "library", "name", "compute", "driver", "total_bytes", "free_bytes"} <= set(
        device
    )
    assert data["devices"][-1]["library"] == "cpu"
    assert data["cpu"]["physical_cores"] == 4
    assert data["memory"]["total_bytes"] == 32 << 30


def corral_info(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``corral info`` as a user runs it, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "corral", "info", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_corral_info_finds_the_fake_gpus_through_ld_library_path(fakes: FakeLibs) -> None:
    """The CLI, as a user runs it: LD_LIBRARY_PATH is the first place searched."""
    fakes.install_all()
    env = {**os.environ, "LD_LIBRARY_PATH": str(fakes.folder), "FAKEGPU_1_FREE_MIB": "4096"}
    result = corral_info(env, "--json")
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)["devices"]
    assert [(d["id"], d["library"]) for d in devices[:2]] == [(UUID0, "cuda"), (UUID1, "cuda")]
    assert devices[1]["free_bytes"] == 4096 * MiB
    table = corral_info(env)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "ID",
        "LIBRARY",
        "NAME",
        "COMPUTE",
        "DRIVER",
        "TOTAL",
        "AVAILABLE",
    ]
    assert UUID1 in table.stdout


def test_corral_info_without_any_gpu_library() -> None:
    env = {**os.environ, "LD_LIBRARY_PATH": ""}
    result = corral_info(env, "--json")
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)["devices"]
    assert devices[-1]["library"] == "cpu"
    assert devices[-1]["total_bytes"] > 0
