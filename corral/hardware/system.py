"""Everything the scheduler and ``corral info`` need to know about this machine, in one value.

``Hardware.discover()`` runs once before the server listens (GPU libraries opened, CPU and
memory read); ``Hardware.refresh()`` re-reads only free memory (GPUs through the libraries
already open, system memory from ``/proc``), cheap enough for every scheduling decision.

GPUs are *used* only when the installed llama.cpp can offload to CUDA (its package ships a
``libggml-cuda`` backend) and ``OLLAMA_LLM_LIBRARY`` does not ask for the CPU; otherwise
they are still listed, and the reason they are not used is given once in the log.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config import Settings
from corral.hardware.cpu import CpuInfo, cpu_info
from corral.hardware.gpu import GpuDiscovery, GpuInfo
from corral.hardware.memory import SystemMemory, system_memory

__all__ = ["Hardware", "SystemInfo", "llama_cpp_offloads"]

logger = logging.getLogger(__name__)

GiB = 1024**3


def llama_cpp_offloads() -> bool:
    """Whether the installed llama-cpp-python was built with a CUDA backend (no import)."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return False
    for location in spec.submodule_search_locations:
        if glob.glob(os.path.join(location, "lib", "libggml-cuda*")):
            return True
    return False


@dataclass(frozen=True, slots=True)
class SystemInfo:
    """A snapshot: GPUs (those runners may use), the CPU and system memory."""

    gpus: tuple[GpuInfo, ...]
    cpu: CpuInfo
    memory: SystemMemory
    gpus_found: tuple[GpuInfo, ...] = ()  # every GPU discovered, used or not
    gpu_note: str = ""  # why found GPUs are not used

    @property
    def bf16_on_cpu(self) -> bool:
        """Models run on the CPU (no GPU in use) and it multiplies BF16 itself
        (AVX512-BF16): BF16 weights are then faster than F16 (``catalog``'s conversion)."""
        return not self.gpus and "avx512_bf16" in self.cpu.features

    def devices(self) -> list[dict[str, Any]]:
        """One entry per compute device, GPUs first, as ``corral info --json`` prints them."""
        rows: list[dict[str, Any]] = [
            {
                "id": gpu.id,
                "index": gpu.index,
                "library": gpu.library,
                "name": gpu.name,
                "compute": gpu.compute,
                "driver": gpu.driver,
                "total_bytes": gpu.total_bytes,
                "free_bytes": gpu.free_bytes,
                "used": gpu in self.gpus,
            }
            for gpu in self.gpus_found
        ]
        rows.append(
            {
                "id": "cpu",
                "index": 0,
                "library": "cpu",
                "name": self.cpu.model_name or "cpu",
                "compute": "",
                "driver": "",
                "total_bytes": self.memory.total_bytes,
                "free_bytes": self.memory.free_bytes,
                "used": True,
            }
        )
        return rows

    def as_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices(),
            "cpu": {
                "model_name": self.cpu.model_name,
                "logical_cores": self.cpu.logical_cores,
                "physical_cores": self.cpu.physical_cores,
                "usable_cores": self.cpu.usable_cores,
                "default_threads": self.cpu.default_threads,
                "features": list(self.cpu.features),
            },
            "memory": {
                "total_bytes": self.memory.total_bytes,
                "free_bytes": self.memory.free_bytes,
                "swap_free_bytes": self.memory.swap_free_bytes,
            },
            "gpu_note": self.gpu_note,
        }

    def log_lines(self) -> list[str]:
        """Ollama's ``inference compute`` line for every device."""
        return [
            f"inference compute id={row['id']} library={row['library']} "
            f'compute="{row["compute"]}" driver="{row["driver"]}" name="{row["name"]}" '
            f'total="{row["total_bytes"] / GiB:.1f} GiB" '
            f'available="{row["free_bytes"] / GiB:.1f} GiB"'
            for row in self.devices()
        ]


class Hardware:
    """Discovery once, cheap refreshes after; safe to call from worker threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        search_dirs: Sequence[str | Path] | None = None,
        memory: Callable[[], SystemMemory] = system_memory,
        cpu: Callable[[], CpuInfo] = cpu_info,
        offloads: Callable[[], bool] = llama_cpp_offloads,
    ) -> None:
        self._gpus = GpuDiscovery(
            env=env, search_dirs=search_dirs, overhead_bytes=settings.gpu_overhead_bytes
        )
        self._memory = memory
        self._cpu_fn = cpu
        self._cpu: CpuInfo | None = None
        self._settings = settings
        self._offloads = offloads
        self._note: str | None = None

    @property
    def errors(self) -> list[str]:
        """Why each GPU library was not used (for ``corral info``)."""
        return list(self._gpus.errors)

    def _gpu_note(self, found: tuple[GpuInfo, ...]) -> str:
        if self._note is None:
            if not found:
                self._note = ""
            elif self._settings.llm_library.lower().startswith("cpu"):
                self._note = f"OLLAMA_LLM_LIBRARY={self._settings.llm_library}: GPUs not used"
            elif not self._offloads():
                self._note = (
                    "llama.cpp was built without CUDA: GPUs not used (reinstall with"
                    ' CMAKE_ARGS="-DGGML_CUDA=on")'
                )
            else:
                self._note = ""
        return self._note

    def _snapshot(self, found: tuple[GpuInfo, ...]) -> SystemInfo:
        if self._cpu is None:
            self._cpu = self._cpu_fn()
        note = self._gpu_note(found)
        return SystemInfo(
            gpus=() if note else found,
            cpu=self._cpu,
            memory=self._memory(),
            gpus_found=found,
            gpu_note=note,
        )

    def discover(self) -> SystemInfo:
        info = self._snapshot(self._gpus.discover())
        if info.gpu_note:
            logger.warning("%s", info.gpu_note)
        return info

    def refresh(self) -> SystemInfo:
        return self._snapshot(self._gpus.refresh())

    def close(self) -> None:
        self._gpus.close()
