"""NVIDIA GPU discovery: which GPUs the runners can use and how much memory each has free.

The order follows Ollama's ``GetGPUInfo``: the CUDA driver API lists the devices (it applies
``CUDA_VISIBLE_DEVICES``, so its ordinals are the indices runners use), the CUDA runtime
stands in when the driver API cannot be opened, and NVML, matched by UUID, supplies free
memory without creating a CUDA context. GPUs below compute capability 5.0 are skipped (the
CUDA backend has no kernels for them). Every failure is logged at debug and discovery goes
on: a machine without a GPU, or with a broken driver, gets an empty tuple, never an error.

``refresh()`` re-reads free memory only, through the libraries already open, because the
scheduler asks before every load and while it waits for memory to come back after an
unload.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from corral.hardware.cuda import CudaDriver
from corral.hardware.cudart import CudaRuntime
from corral.hardware.libraries import LibraryError, RawDevice, candidates
from corral.hardware.nvml import Nvml

__all__ = ["MINIMUM_GPU_BYTES", "GpuDiscovery", "GpuInfo"]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
#: memory the CUDA runtime and cuBLAS take on a GPU before any model byte (Ollama: 457 MiB)
MINIMUM_GPU_BYTES = 457 * MiB
_MIN_COMPUTE = (5, 0)


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One usable GPU; ``index`` is its CUDA ordinal as a runner sees it."""

    id: str  # "GPU-<uuid>", or the ordinal when the driver gives no UUID
    index: int
    name: str
    compute: str  # "8.6"
    driver: str  # CUDA driver version, "12.4"
    total_bytes: int
    free_bytes: int
    library: str = "cuda"
    minimum_bytes: int = MINIMUM_GPU_BYTES
    overhead_bytes: int = 0  # OLLAMA_GPU_OVERHEAD

    @property
    def usable_bytes(self) -> int:
        """Free memory a model may take: less the runtime's minimum and the user's reserve."""
        return max(self.free_bytes - self.minimum_bytes - self.overhead_bytes, 0)


class GpuDiscovery:
    """Finds GPUs once (``discover``) and re-reads their free memory (``refresh``).

    ``search_dirs`` replaces the default library search (tests point it at fakes);
    ``env`` is where ``LD_LIBRARY_PATH`` is read.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        search_dirs: Sequence[str | Path] | None = None,
        overhead_bytes: int = 0,
    ) -> None:
        self._env = os.environ if env is None else env
        self._search_dirs = search_dirs
        self._overhead = overhead_bytes
        self._nvml: Nvml | None = None
        self._driver: CudaDriver | None = None
        self._runtime: CudaRuntime | None = None
        self._gpus: tuple[GpuInfo, ...] = ()
        self._discovered = False
        self._lock = threading.Lock()  # ctypes calls from the event loop's worker threads
        self.errors: list[str] = []  # why each library was not used, for `corral info`

    @property
    def library_paths(self) -> dict[str, str]:
        """The library files in use, by role."""
        paths: dict[str, str] = {}
        if self._nvml is not None:
            paths["nvml"] = self._nvml.path
        if self._driver is not None:
            paths["cuda"] = self._driver.path
        if self._runtime is not None:
            paths["cudart"] = self._runtime.path
        return paths

    def discover(self) -> tuple[GpuInfo, ...]:
        with self._lock:
            if not self._discovered:
                self._discovered = True
                self._gpus = self._discover()
            return self._gpus

    def refresh(self) -> tuple[GpuInfo, ...]:
        """The GPUs with their free memory read now (discovering them the first time)."""
        gpus = self.discover()
        with self._lock:
            fresh = tuple(self._refreshed(gpu) for gpu in gpus)
            self._gpus = fresh
            return fresh

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                self._nvml.close()
                self._nvml = None
            self._driver = None
            self._runtime = None

    # ---- discovery -----------------------------------------------------------------

    def _paths(self, pattern: str, soname: str) -> list[str]:
        return candidates(pattern, soname, self._env, self._search_dirs)

    def _discover(self) -> tuple[GpuInfo, ...]:
        self._nvml = self._open_nvml()
        nvml_devices = {d.uuid: d for d in self._nvml.devices()} if self._nvml else {}
        listed = self._list_with_driver() or self._list_with_runtime()
        if listed is None:
            if nvml_devices:
                logger.info(
                    "NVML sees %d GPU(s) but neither libcuda nor libcudart works: using the CPU",
                    len(nvml_devices),
                )
            return ()
        raw_devices, driver = listed
        library_memory = self._driver or self._runtime
        gpus: list[GpuInfo] = []
        for raw in raw_devices:
            if (raw.compute_major, raw.compute_minor) < _MIN_COMPUTE:
                logger.info(
                    "skipping GPU %s (%s): compute capability %d.%d is below %d.%d",
                    raw.uuid,
                    raw.name,
                    raw.compute_major,
                    raw.compute_minor,
                    *_MIN_COMPUTE,
                )
                continue
            memory = self._nvml_memory(raw.uuid, nvml_devices)
            if memory is None and library_memory is not None:
                memory = library_memory.memory(raw.ordinal)
            if memory is None:
                logger.debug("GPU %s skipped: its memory could not be read", raw.uuid)
                continue
            total, free = memory
            gpus.append(
                GpuInfo(
                    id=raw.uuid,
                    index=raw.ordinal,
                    name=raw.name,
                    compute=f"{raw.compute_major}.{raw.compute_minor}",
                    driver=driver,
                    total_bytes=total,
                    free_bytes=free,
                    overhead_bytes=self._overhead,
                )
            )
        return tuple(gpus)

    def _open_nvml(self) -> Nvml | None:
        try:
            return Nvml.open(self._paths("libnvidia-ml.so*", "libnvidia-ml.so.1"))
        except LibraryError as exc:
            self.errors.append(str(exc))
            return None

    def _list_with_driver(self) -> tuple[list[RawDevice], str] | None:
        try:
            driver = CudaDriver.open(self._paths("libcuda.so*", "libcuda.so.1"))
            major, minor = driver.driver_version()
            devices = driver.devices(with_memory=False)
        except LibraryError as exc:
            self.errors.append(str(exc))
            return None
        self._driver = driver
        return devices, f"{major}.{minor}"

    def _list_with_runtime(self) -> tuple[list[RawDevice], str] | None:
        try:
            runtime = CudaRuntime.open(self._paths("libcudart.so*", "libcudart.so"))
            major, minor = runtime.driver_version()
            devices = runtime.devices(with_memory=False)
        except LibraryError as exc:
            self.errors.append(str(exc))
            return None
        self._runtime = runtime
        return devices, f"{major}.{minor}"

    def _nvml_memory(
        self, uuid: str, nvml_devices: Mapping[str, RawDevice]
    ) -> tuple[int, int] | None:
        if self._nvml is None or uuid not in nvml_devices:
            return None
        return self._nvml.memory(uuid)

    def _refreshed(self, gpu: GpuInfo) -> GpuInfo:
        memory = self._nvml.memory(gpu.id) if self._nvml is not None else None
        if memory is None:
            source = self._driver or self._runtime
            memory = source.memory(gpu.index) if source is not None else None
        if memory is None:
            return gpu
        total, free = memory
        return replace(gpu, total_bytes=total, free_bytes=free)
