"""The CUDA runtime (``libcudart``): the fallback when the driver API cannot be used.

Its ``cudaDeviceProp`` changes layout between CUDA versions (CUDA 13 dropped fields in the
middle), so only the two leading fields that every version keeps are read from it
(``name[256]`` at 0, the 16-byte UUID at 256) from a buffer far larger than any version's
struct; compute capability comes from ``cudaDeviceGetAttribute`` and memory from
``cudaMemGetInfo`` after ``cudaSetDevice``. Selecting a device creates the runtime's primary
context, which holds GPU memory until ``cudaDeviceReset``: every read resets afterwards.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence

from corral.hardware.libraries import LibraryError, RawDevice, open_first, uuid_text

__all__ = ["CudaRuntime"]

logger = logging.getLogger(__name__)

_SYMBOLS = (
    "cudaSetDevice",
    "cudaGetDeviceCount",
    "cudaDeviceReset",
    "cudaMemGetInfo",
    "cudaGetDeviceProperties",
    "cudaDeviceGetAttribute",
    "cudaDriverGetVersion",
)
_PROPERTIES_BYTES = 4096
_ATTRIBUTE_COMPUTE_MAJOR = 75
_ATTRIBUTE_COMPUTE_MINOR = 76


class CudaRuntime:
    """A runtime library that answered ``cudaGetDeviceCount``."""

    def __init__(self, library: ctypes.CDLL, path: str, count: int) -> None:
        self._lib = library
        self.path = path
        self.count = count

    @classmethod
    def open(cls, paths: Sequence[str]) -> CudaRuntime:

        def start(library: ctypes.CDLL, path: str) -> CudaRuntime:
            count = ctypes.c_int(0)
            status = library.cudaGetDeviceCount(ctypes.byref(count))
            if status != 0:
                raise LibraryError(f"cudaGetDeviceCount failed in {path}: error {status}")
            return cls(library, path, count.value)

        return open_first(paths, _SYMBOLS, start, "libcudart")

    def _check(self, status: int, call: str) -> None:
        if status != 0:
            raise LibraryError(f"{call} failed: error {status}")

    def driver_version(self) -> tuple[int, int]:
        version = ctypes.c_int(0)
        self._check(self._lib.cudaDriverGetVersion(ctypes.byref(version)), "driver version")
        return version.value // 1000, (version.value % 1000) // 10

    def devices(self, *, with_memory: bool = True) -> list[RawDevice]:
        found: list[RawDevice] = []
        for ordinal in range(self.count):
            try:
                found.append(self._device(ordinal, with_memory))
            except LibraryError as exc:
                logger.debug("cudart: device %d skipped: %s", ordinal, exc)
        return found

    def _device(self, ordinal: int, with_memory: bool) -> RawDevice:
        properties = ctypes.create_string_buffer(_PROPERTIES_BYTES)
        self._check(self._lib.cudaGetDeviceProperties(properties, ordinal), "properties")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        wanted = ((_ATTRIBUTE_COMPUTE_MAJOR, major), (_ATTRIBUTE_COMPUTE_MINOR, minor))
        for attribute, target in wanted:
            self._check(
                self._lib.cudaDeviceGetAttribute(ctypes.byref(target), attribute, ordinal),
                "compute capability",
            )
        raw = properties.raw
        name = raw[:256].split(b"\0", 1)[0].decode(errors="replace")
        memory = self.memory(ordinal) if with_memory else None
        total, free = memory or (0, 0)
        return RawDevice(
            ordinal=ordinal,
            uuid=uuid_text(raw[256:272]),
            name=name,
            compute_major=major.value,
            compute_minor=minor.value,
            total_bytes=total,
            free_bytes=free,
        )

    def memory(self, ordinal: int) -> tuple[int, int] | None:
        """(total, free) bytes of one device; the context this creates is reset after."""
        try:
            self._check(self._lib.cudaSetDevice(ordinal), "cudaSetDevice")
            free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
            try:
                self._check(
                    self._lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)),
                    "cudaMemGetInfo",
                )
            finally:
                self._lib.cudaDeviceReset()
        except LibraryError as exc:
            logger.debug("cudart: memory of device %d: %s", ordinal, exc)
            return None
        return int(total.value), int(free.value)
