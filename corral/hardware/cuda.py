"""The CUDA driver API (``libcuda``): the GPUs llama.cpp's CUDA backend will see.

The driver applies ``CUDA_VISIBLE_DEVICES`` itself, so its ordinals are the device indices
a runner uses (``main_gpu``, the order of ``tensor_split``). Free memory needs a context
(``cuCtxCreate_v3`` + ``cuMemGetInfo_v2`` + ``cuCtxDestroy``), which is slow and briefly
takes GPU memory: discovery asks NVML instead whenever NVML knows the device.

What can go wrong: ``cuInit`` returns 35 (``CUDA_ERROR_INSUFFICIENT_DRIVER``) when the
driver is older than the library, 100 when there is no device, 34 for the toolkit's stub
library; each becomes a ``LibraryError`` and discovery tries the next candidate.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

from corral.hardware.libraries import LibraryError, RawDevice, open_first, uuid_text

__all__ = ["CudaDriver"]

logger = logging.getLogger(__name__)

_SYMBOLS = (
    "cuInit",
    "cuDriverGetVersion",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetAttribute",
    "cuDeviceGetName",
    "cuDeviceGetUuid",
    "cuCtxCreate_v3",
    "cuMemGetInfo_v2",
    "cuCtxDestroy",
)
_ATTRIBUTE_COMPUTE_MAJOR = 75
_ATTRIBUTE_COMPUTE_MINOR = 76
_INSUFFICIENT_DRIVER = 35


class CudaDriver:
    """An initialised driver API."""

    def __init__(self, library: ctypes.CDLL, path: str) -> None:
        self._lib = library
        self.path = path

    @classmethod
    def open(cls, paths: Sequence[str]) -> CudaDriver:
        """The first of ``paths`` that loads and passes ``cuInit``; ``LibraryError`` if none."""

        def start(library: ctypes.CDLL, path: str) -> CudaDriver:
            status = library.cuInit(ctypes.c_uint(0))
            if status == _INSUFFICIENT_DRIVER:
                raise LibraryError(
                    f"{path}: your nvidia driver is too old or missing (cuInit error 35)"
                )
            if status != 0:
                raise LibraryError(f"cuInit failed in {path}: error {status}")
            return cls(library, path)

        return open_first(paths, _SYMBOLS, start, "libcuda")

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            raise LibraryError(f"{call} failed: error {status}")

    def driver_version(self) -> tuple[int, int]:
        version = ctypes.c_int(0)
        self._check(self._lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
        return version.value // 1000, (version.value % 1000) // 10

    def devices(self, *, with_memory: bool = True) -> list[RawDevice]:
        """Every device the driver shows; memory is read through a context when asked."""
        count = ctypes.c_int(0)
        self._check(self._lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        found: list[RawDevice] = []
        for ordinal in range(count.value):
            try:
                found.append(self._device(ordinal, with_memory))
            except LibraryError as exc:
                logger.debug("cuda: device %d skipped: %s", ordinal, exc)
        return found

    def _device(self, ordinal: int, with_memory: bool) -> RawDevice:
        device = ctypes.c_int(-1)
        self._check(self._lib.cuDeviceGet(ctypes.byref(device), ordinal), "cuDeviceGet")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self._check(
            self._lib.cuDeviceGetAttribute(ctypes.byref(major), _ATTRIBUTE_COMPUTE_MAJOR, device),
            "compute capability",
        )
        self._check(
            self._lib.cuDeviceGetAttribute(ctypes.byref(minor), _ATTRIBUTE_COMPUTE_MINOR, device),
            "compute capability",
        )
        name = ctypes.create_string_buffer(256)
        self._check(self._lib.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
        uuid = ctypes.create_string_buffer(16)
        has_uuid = self._lib.cuDeviceGetUuid(uuid, device) == 0
        text = uuid_text(uuid.raw) if has_uuid else str(ordinal)
        total, free = self._memory(device) if with_memory else (0, 0)
        return RawDevice(
            ordinal=ordinal,
            uuid=text,
            name=name.value.decode(errors="replace"),
            compute_major=major.value,
            compute_minor=minor.value,
            total_bytes=total,
            free_bytes=free,
        )

    def _memory(self, device: ctypes.c_int) -> tuple[int, int]:
        context = ctypes.c_void_p()
        self._check(
            self._lib.cuCtxCreate_v3(ctypes.byref(context), None, 0, ctypes.c_uint(0), device),
            "cuCtxCreate_v3",
        )
        try:
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            self._check(
                self._lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)),
                "cuMemGetInfo_v2",
            )
            return int(total.value), int(free.value)
        finally:
            self._lib.cuCtxDestroy(context)

    def memory(self, ordinal: int) -> tuple[int, int] | None:
        """(total, free) bytes of one device through a short-lived context."""
        device = ctypes.c_int(-1)
        try:
            self._check(self._lib.cuDeviceGet(ctypes.byref(device), ordinal), "cuDeviceGet")
            return self._memory(device)
        except LibraryError as exc:
            logger.debug("cuda: memory of device %d: %s", ordinal, exc)
            return None
