"""Fake NVIDIA libraries, compiled with ``gcc`` from ``fakelibs/``, for the real ctypes paths.

They export the same symbols as NVML, the CUDA driver and the CUDA runtime and report GPUs
described by ``FAKEGPU_*`` environment variables (see ``fakelibs/fakegpu.h``), read at call
time. Each test gets its own copies under its own folder: ``dlopen`` of another path is
another library, so no state leaks from one test to the next.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCES = Path(__file__).parent / "fakelibs"

#: file name in the search folder -> (source, extra gcc flags)
LIBRARIES = {
    "libnvidia-ml.so.1": ("fake_nvml.c", ()),
    "libcuda.so.1": ("fake_cuda.c", ()),
    "libcudart.so.12": ("fake_cudart.c", ()),
}


@dataclass
class FakeLibs:
    built: Path  # every variant compiled once
    folder: Path  # this test's search folder

    def install(self, *names: str, variant: str = "") -> None:
        """Copy libraries into the search folder (``variant``: a differently built one)."""
        for name in names:
            shutil.copy(self.built / f"{name}{variant}", self.folder / name)

    def install_all(self) -> None:
        self.install(*LIBRARIES)


def _compile(source: str, output: Path, *flags: str) -> None:
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", *flags, "-o", str(output), str(SOURCES / source)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="session")
def built_fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the fake GPU libraries")
    built = tmp_path_factory.mktemp("fakegpu-built")
    for name, (source, flags) in LIBRARIES.items():
        _compile(source, built / name, *flags)
    _compile("fake_cuda.c", built / "libcuda.so.1.nomeminfo", "-DOMIT_MEMINFO")
    return built


@pytest.fixture
def fakes(built_fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLibs]:
    for key in ("CUDA_VISIBLE_DEVICES", "FAKEGPU_FAIL_INIT", "FAKEGPU_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FAKEGPU_CALLS", str(tmp_path / "calls.log"))
    folder = tmp_path / "lib"
    folder.mkdir()
    yield FakeLibs(built_fakes, folder)
