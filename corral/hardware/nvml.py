"""NVML (``libnvidia-ml``): accurate free memory, names, UUIDs and the driver version.

NVML is the cheapest way to re-read free memory (no CUDA context is created, which would
itself take a few hundred MiB of the GPU and tens of milliseconds), so discovery keeps it
open and the scheduler's refresh before every load asks it alone. It enumerates every
physical GPU and ignores ``CUDA_VISIBLE_DEVICES``; devices are matched to the CUDA
library's by UUID.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

from corral.hardware.libraries import LibraryError, RawDevice, open_first

__all__ = ["Nvml"]

logger = logging.getLogger(__name__)

_SYMBOLS = (
    "nvmlInit_v2",
    "nvmlShutdown",
    "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCudaComputeCapability",
)
_BUFFER = 96


class _Memory(ctypes.Structure):
    _fields_ = (
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    )


class Nvml:
    """An initialised NVML; ``close()`` shuts it down."""

    def __init__(self, library: ctypes.CDLL, path: str) -> None:
        self._lib = library
        self.path = path
        self._handles: dict[str, ctypes.c_void_p] = {}  # uuid -> device handle

    @classmethod
    def open(cls, paths: Sequence[str]) -> Nvml:
        """The first of ``paths`` that loads and initialises; ``LibraryError`` if none."""

        def start(library: ctypes.CDLL, path: str) -> Nvml:
            status = library.nvmlInit_v2()
            if status != 0:
                raise LibraryError(f"nvmlInit_v2 failed in {path}: error {status}")
            return cls(library, path)

        return open_first(paths, _SYMBOLS, start, "libnvidia-ml")

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            raise LibraryError(f"{call} failed: error {status}")

    def driver_version(self) -> str:
        buffer = ctypes.create_string_buffer(_BUFFER)
        self._check(self._lib.nvmlSystemGetDriverVersion(buffer, _BUFFER), "driver version")
        return buffer.value.decode(errors="replace")

    def devices(self) -> list[RawDevice]:
        count = ctypes.c_uint(0)
        self._check(self._lib.nvmlDeviceGetCount_v2(ctypes.byref(count)), "device count")
        found: list[RawDevice] = []
        for index in range(count.value):
            try:
                found.append(self._device(index))
            except LibraryError as exc:
                logger.debug("nvml: device %d skipped: %s", index, exc)
        return found

    def _device(self, index: int) -> RawDevice:
        handle = ctypes.c_void_p()
        self._check(
            self._lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(index), ctypes.byref(handle)),
            "device handle",
        )
        uuid = ctypes.create_string_buffer(_BUFFER)
        self._check(self._lib.nvmlDeviceGetUUID(handle, uuid, _BUFFER), "device uuid")
        name = ctypes.create_string_buffer(_BUFFER)
        self._check(self._lib.nvmlDeviceGetName(handle, name, _BUFFER), "device name")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self._check(
            self._lib.nvmlDeviceGetCudaComputeCapability(
                handle, ctypes.byref(major), ctypes.byref(minor)
            ),
            "compute capability",
        )
        total, free = self._memory(handle)
        text = uuid.value.decode(errors="replace")
        self._handles[text] = handle
        return RawDevice(
            ordinal=index,
            uuid=text,
            name=name.value.decode(errors="replace"),
            compute_major=major.value,
            compute_minor=minor.value,
            total_bytes=total,
            free_bytes=free,
        )

    def _memory(self, handle: ctypes.c_void_p) -> tuple[int, int]:
        memory = _Memory()
        self._check(self._lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)), "memory")
        return int(memory.total), int(memory.free)

    def memory(self, uuid: str) -> tuple[int, int] | None:
        """(total, free) bytes of a device seen by ``devices()``, or None if unknown."""
        handle = self._handles.get(uuid)
        if handle is None:
            return None
        try:
            return self._memory(handle)
        except LibraryError as exc:
            logger.debug("nvml: memory of %s: %s", uuid, exc)
            return None

    def close(self) -> None:
        self._handles.clear()
        self._lib.nvmlShutdown()
