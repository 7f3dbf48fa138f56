"""Pull a model: manifest first, then its blobs in parallel HTTP Range parts, verified.

Order and statuses as Ollama: ``pulling manifest``; ``pulling <12 hex>`` with ``digest``,
``total`` and ``completed`` per blob (layers, then the config); ``verifying sha256 digest``;
``writing manifest``; ``success``.

Resuming: a blob downloads into ``blobs/sha256-<hex>-partial`` with a small state file
beside it (``...-partial.json``) recording how much of each part is done. A pull that fails
(lost connection, registry gone, disk full) keeps both; the next pull of any model that
needs the blob continues from there. The state file is created at its full size before the
first data byte and then only overwritten in place (two checksummed slots, see
:class:`_StateFile`, saved every few MB, never per chunk), so saving it never needs new disk
blocks: a full disk cannot take the resume point away. The state may lag the data (it is
written after the bytes) but never leads it by more than what the final check catches:
every blob is hashed before it is moved into place, and a blob whose bytes do not hash to
its digest is deleted and the pull fails (``digest mismatch, file must be downloaded
again: ...``).

Transfer: each part is read in a worker thread over a plain socket
(:mod:`corral.registry.fastget`: large ``recv_into`` buffers, written with ``pwrite``, no
per-chunk event-loop hop); a response that is not a plain body (chunked, encoded, an error
status, an auth challenge), a proxy in the environment, or a connection that fails before
its first byte goes through the general HTTP client instead, which also words every error.
Parts are at least 256 MB: on a fast link one stream is quickest (the hash below must take
the bytes in order), and a big blob still gets parallel parts for slow links.

Hashing happens while the bytes arrive (:class:`_InOrderHash`), in a thread of its own: the
bytes at the hashed end are hashed straight from the receive buffer, and when a part
finishes, the parts after it that already arrived are read back (from the page cache), so
the check after the last byte has little or nothing left to read. The written bytes are
sent to disk every few MB by another thread (:class:`_EarlyFlush`), so the one fsync before
the blob is moved into place has little left to wait for.

Deletes while pulling: the manifest's digests are pinned (:class:`BlobPins`) before the
first "already here?" check and until the manifest is written, so deleting another model
that shares a blob (a config, a license) mid-pull cannot make the pull fail.

Hostile registries: the manifest is read with a size cap and validated (digests must be
``sha256:<64 hex>``, sizes bounded); a part's response never writes more than the part's
length (extra bytes are cut off), nor past the announced size; a response for the wrong
range is refused; free disk space is checked before the first byte.

Concurrency: pulls of one blob take turns on a per-blob lock (the second finds it done);
the server also shares one pull per model name between clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import httpx

from corral.errors import CorralError, StoreError
from corral.registry import fastget
from corral.registry.client import RegistryClient, unreachable
from corral.registry.errors import RegistryError
from corral.registry.events import ProgressEvent
from corral.store import (
    MEDIA_TYPE_MANIFEST,
    BlobPins,
    Layer,
    Manifest,
    ModelStore,
    Name,
)
from corral.store.manifest import MAX_MANIFEST_BYTES

__all__ = ["PullOptions", "pull_model"]

logger = logging.getLogger(__name__)

Report = Callable[[ProgressEvent], None]

_ACCEPT: Final = ", ".join(
    [
        MEDIA_TYPE_MANIFEST,
        "application/vnd.oci.image.manifest.v1+json",
    ]
)
_CONTENT_RANGE: Final = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_WRITE_BATCH: Final = 1 << 20
_HASH_READ: Final = 4 << 20
_SYNC_EVERY: Final = 8 << 20
_FAST_BUFFER: Final = 4 << 20
_FAST_BUFFERS: Final = 3
_FAST_TIMEOUT_S: Final = 60.0
_STATE_EVERY: Final = 8 << 20
_STATE_SLOT_BYTES: Final = 8192
_MAX_PARTS: Final = 64  # so that a state record always fits its slot

_blob_locks: dict[tuple[str, str], asyncio.Lock] = {}


@dataclass(frozen=True, slots=True)
class PullOptions:
    """How to pull: plain HTTP allowed, part size bounds, parallel parts, retries."""

    insecure: bool = False
    min_part_bytes: int = 256 << 20
    max_parts: int = 16
    parallel_parts: int = 4
    max_tries: int = 4
    retry_delay_s: float = 0.25


@dataclass(slots=True)
class _Part:
    start: int
    size: int
    done: int = 0

    @property
    def remaining(self) -> int:
        return self.size - self.done


async def pull_model(
    store: ModelStore, name: Name, report: Report, options: PullOptions | None = None
) -> None:
    """Pull ``name`` into ``store``, calling ``report`` with each progress event."""
    options = options or PullOptions()
    pins = store.pins()
    try:
        await _pull_pinned(store, name, report, options, pins)
    finally:
        await asyncio.to_thread(pins.release)


async def _pull_pinned(
    store: ModelStore, name: Name, report: Report, options: PullOptions, pins: BlobPins
) -> None:
    report({"status": "pulling manifest"})
    async with RegistryClient(name, insecure=options.insecure) as client:
        data = await _fetch_manifest(client, name)
        manifest = Manifest.from_json(data)
        await asyncio.to_thread(pins.add, manifest.digests)
        blobs = [*manifest.layers, manifest.config]
        _check_space(store, blobs)
        await _download_all(client, store, blobs, report, options)
    report({"status": "verifying sha256 digest"})
    report({"status": "writing manifest"})
    await asyncio.to_thread(store.write_manifest_bytes, name, data)
    report({"status": "success"})


async def _fetch_manifest(client: RegistryClient, name: Name) -> bytes:
    try:
        response = await client.request(
            "GET", client.url(f"manifests/{name.tag}"), headers={"Accept": _ACCEPT}, stream=True
        )
    except RegistryError as exc:
        if not exc.unreachable:
            raise
        # Ollama: "pull model manifest: Get \"https://...\": dial tcp ...: connection refused"
        raise RegistryError(
            f"pull model manifest: {exc.message}", unreachable=True, status=exc.status
        ) from exc
    if response.status_code == 404:
        await response.aclose()
        raise RegistryError("pull model manifest: file does not exist", status=404)
    if response.status_code >= 400:
        raise await client.status_error(response)
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_MANIFEST_BYTES:
                raise StoreError("invalid manifest: too large")
    except httpx.HTTPError as exc:
        raise unreachable("GET", str(response.request.url), exc) from exc
    finally:
        await response.aclose()
    return bytes(body)


def _check_space(store: ModelStore, blobs: list[Layer]) -> None:
    """Refuse before the first byte if the blobs cannot fit (a hostile size included)."""
    needed = 0
    for layer in {b.digest: b for b in blobs}.values():
        if store.has_blob(layer.digest):
            continue
        needed += layer.size
        with contextlib.suppress(OSError):
            needed -= min(layer.size, store.partial_path(layer.digest).stat().st_blocks * 512)
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(store.blobs_dir).free
    if needed > free:
        raise StoreError(
            f"not enough disk space to pull: {needed} bytes needed, {free} bytes free in"
            f" {store.blobs_dir}"
        )


async def _download_all(
    client: RegistryClient,
    store: ModelStore,
    blobs: list[Layer],
    report: Report,
    options: PullOptions,
) -> None:
    unique = list({b.digest: b for b in blobs}.values())
    try:
        async with asyncio.TaskGroup() as group:
            for layer in unique:
                group.create_task(_download_blob(client, store, layer, report, options))
    except* CorralError as eg:
        raise eg.exceptions[0] from None


def _status(layer: Layer) -> str:
    return f"pulling {layer.digest.removeprefix('sha256:')[:12]}"


async def _download_blob(
    client: RegistryClient,
    store: ModelStore,
    layer: Layer,
    report: Report,
    options: PullOptions,
) -> None:
    status = _status(layer)

    def progress(completed: int) -> None:
        report(
            {"status": status, "digest": layer.digest, "total": layer.size, "completed": completed}
        )

    if store.has_blob(layer.digest):
        progress(layer.size)
        return
    lock = _blob_locks.setdefault((str(store.root), layer.digest), asyncio.Lock())
    async with lock:
        if store.has_blob(layer.digest):
            progress(layer.size)
            return
        download = _BlobDownload(client, store, layer, options, progress)
        await download.run()


class _BlobDownload:
    """One blob into its partial file, part by part, then verified and moved into place."""

    def __init__(
        self,
        client: RegistryClient,
        store: ModelStore,
        layer: Layer,
        options: PullOptions,
        progress: Callable[[int], None],
    ) -> None:
        self.client = client
        self.store = store
        self.layer = layer
        self.options = options
        self.progress = progress
        self.partial = store.partial_path(layer.digest)
        self.state = _StateFile(
            self.partial.with_name(self.partial.name + ".json"), layer.digest, layer.size
        )
        self.parts: list[_Part] = []
        self.hash = _InOrderHash(layer.size)
        self._since_state = 0
        self._state_lock = threading.Lock()
        self._last_percent = -1
        self._digest = ""
        self._fast = not fastget.proxy_configured()
        self._flush: _EarlyFlush | None = None

    @property
    def completed(self) -> int:
        return sum(p.done for p in self.parts)

    async def run(self) -> None:
        try:
            self.parts = await asyncio.to_thread(self._open)
            self._report(force=True)
            await self._transfer()
            await asyncio.to_thread(self._verify_and_install)
        finally:
            self.state.close()
        self._report(force=True)

    async def _transfer(self) -> None:
        """Every unfinished part, a few at a time; the state is saved whatever happens."""
        fd = os.open(self.partial, os.O_RDWR)
        self.hash.follow(fd, self.parts)
        flush = self._flush = _EarlyFlush(fd)
        try:
            semaphore = asyncio.Semaphore(self.options.parallel_parts)
            try:
                async with asyncio.TaskGroup() as group:
                    for part in self.parts:
                        if part.remaining:
                            group.create_task(self._part_with_retries(fd, part, semaphore))
            except* CorralError as eg:
                raise eg.exceptions[0] from None
            finally:
                await asyncio.to_thread(self.state.save, self.parts)
            await asyncio.to_thread(flush.stop)
            # the hash's tail and the one fsync side by side (both leave the GIL)
            self._digest, _ = await asyncio.gather(
                asyncio.to_thread(self._finish_hash, fd), asyncio.to_thread(os.fsync, fd)
            )
        finally:
            await asyncio.to_thread(self.hash.stop)
            await asyncio.to_thread(flush.stop)
            os.close(fd)

    def _finish_hash(self, fd: int) -> str:
        try:
            return self.hash.finish(fd)
        except OSError as exc:
            raise StoreError(f"cannot read {self.partial.name}: {exc.strerror or exc}") from exc

    # ---- state ------------------------------------------------------------------------

    def _open(self) -> list[_Part]:
        """Load the parts of an earlier attempt, or plan fresh ones; make sure the data file
        is there with the right size and the state file is ready to be saved in place."""
        size = self.layer.size
        parts = self.state.load() if self.partial.is_file() else None
        fresh = parts is None
        if parts is None:
            parts = _plan_parts(size, self.options)
            with contextlib.suppress(OSError):
                self.partial.unlink()
        try:
            fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot create {self.partial.name}: {exc}") from exc
        self.state.open(parts, fresh=fresh)
        return parts

    def _percent(self) -> int:
        return self.completed * 100 // (self.layer.size or 1)

    def _report(self, *, force: bool = False) -> None:
        percent = self._percent()
        if force or percent != self._last_percent:
            self._last_percent = percent
            self.progress(self.completed)

    # ---- transfer -----------------------------------------------------------------------

    async def _part_with_retries(self, fd: int, part: _Part, semaphore: asyncio.Semaphore) -> None:
        async with semaphore:
            last: Exception | None = None
            for attempt in range(self.options.max_tries):
                if attempt:
                    await asyncio.sleep(self.options.retry_delay_s * 2 ** (attempt - 1))
                before = part.done
                try:
                    await self._part(fd, part)
                    return
                except RegistryError as exc:
                    if exc.status < 500 and not exc.unreachable:
                        raise
                    last = exc
                except (httpx.HTTPError, _ShortRead) as exc:
                    last = exc
                if part.done > before:
                    continue  # progress was made: that try does not count against the part
            message = last.message if isinstance(last, CorralError) else str(last)
            unreachable_ = isinstance(last, RegistryError) and last.unreachable
            raise RegistryError(
                f"max retries exceeded: {message}",
                unreachable=unreachable_,
                status=502 if unreachable_ else 500,
            )

    async def _part(self, fd: int, part: _Part) -> None:
        if self._fast:
            before = part.done
            try:
                await self._part_fast(fd, part)
            except fastget.Fallback as exc:
                logger.debug("%s: general HTTP client (%s)", self.layer.digest[:19], exc)
                self._fast = False
            except fastget.WireError as exc:
                if part.done == before:
                    pass  # nothing came: the general client retries and words the error
                else:
                    raise _ShortRead(str(exc)) from exc
            else:
                return
        await self._part_general(fd, part)

    async def _part_fast(self, fd: int, part: _Part) -> None:
        """The part's bytes read in a worker thread (:mod:`corral.registry.fastget`), which
        also writes them and tells the hash; the event loop only waits."""
        first = part.start + part.done
        last = part.start + part.size - 1
        headers = {
            "Range": f"bytes={first}-{last}",
            "User-Agent": self.client.http.headers.get("User-Agent", "corral"),
            **self.client.auth_headers(),
        }
        get = fastget.RangeGet(
            self.client.url(f"blobs/{self.layer.digest}"),
            headers,
            timeout_s=_FAST_TIMEOUT_S,
            buffer_bytes=min(_FAST_BUFFER, max(part.remaining, 1)),
            buffers=_FAST_BUFFERS,
        )
        loop = asyncio.get_running_loop()

        def check(status: int, content_range: str) -> int:
            if status == 206:
                _check_range_header(content_range, first, last, self.layer.size)
            return first if status == 200 else 0

        free = [threading.Event() for _ in range(_FAST_BUFFERS)]
        for event in free:
            event.set()

        def sink(view: memoryview, slot: int) -> int:
            data = view[: part.remaining]  # never more than the part announced
            if data:
                taken = free[slot] if slot >= 0 else None
                if taken is not None:
                    taken.clear()
                self._write_now(fd, part, data, taken)
                if self._percent() != self._last_percent:
                    loop.call_soon_threadsafe(self._report)
            return part.remaining

        def reuse(slot: int) -> None:
            free[slot].wait()  # the hash thread is done with this buffer

        # a thread of its own, not the shared pool: a transfer holds it for minutes
        future = _in_thread(loop, get.run, check, sink, reuse)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            get.stop()  # the thread must be done with fd before it is closed
            with contextlib.suppress(BaseException):
                await future
            raise
        if part.remaining:
            raise _ShortRead(f"connection closed after {part.done} of {part.size} bytes")

    async def _part_general(self, fd: int, part: _Part) -> None:
        first = part.start + part.done
        last = part.start + part.size - 1
        response = await self.client.request(
            "GET",
            self.client.url(f"blobs/{self.layer.digest}"),
            headers={"Range": f"bytes={first}-{last}"},
            stream=True,
        )
        try:
            if response.status_code >= 400:
                raise await self.client.status_error(response)
            skip = first if response.status_code == 200 else 0
            if response.status_code == 206:
                _check_content_range(response, first, last, self.layer.size)
            elif response.status_code != 200:
                raise RegistryError(f"{response.status_code}: unexpected response to a range")
            await self._copy(fd, part, response, skip)
        finally:
            await response.aclose()
        if part.remaining:
            raise _ShortRead(f"connection closed after {part.done} of {part.size} bytes")

    async def _copy(self, fd: int, part: _Part, response: httpx.Response, skip: int) -> None:
        buffer = bytearray()
        async for chunk in response.aiter_raw():
            if skip:
                cut = min(skip, len(chunk))
                chunk, skip = chunk[cut:], skip - cut
            room = part.remaining - len(buffer)
            buffer += chunk[:room]  # never more than the part announced: the rest is cut off
            if len(buffer) >= _WRITE_BATCH or len(buffer) == part.remaining:
                await self._write(fd, part, bytes(buffer))
                buffer.clear()
            if part.remaining == 0:
                return
        if buffer:
            await self._write(fd, part, bytes(buffer))

    async def _write(self, fd: int, part: _Part, data: bytes) -> None:
        await asyncio.to_thread(self._write_now, fd, part, data)
        self._report()

    def _write_now(
        self,
        fd: int,
        part: _Part,
        data: bytes | memoryview,
        taken: threading.Event | None = None,
    ) -> None:
        """In a worker thread: the bytes to the file at the part's end, the part's ``done``
        after them, the hash told, the state saved every few MB. With ``taken`` the hash may
        read ``data`` itself (and sets ``taken`` when done with that memory)."""
        offset = part.start + part.done
        if taken is not None:
            self.hash.offer(data, offset, taken)
        try:
            _pwrite_all(fd, data, offset)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.layer.digest} to the store: {exc.strerror or exc}"
                " (the partial download is kept and resumes on the next pull)"
            ) from exc
        part.done += len(data)
        self.hash.notify()
        if self._flush is not None:
            self._flush.wrote(len(data))
        with self._state_lock:
            self._since_state += len(data)
            if self._since_state < _STATE_EVERY:
                return
            self._since_state = 0
            self.state.save(self.parts)

    # ---- verification -------------------------------------------------------------------

    def _verify_and_install(self) -> None:
        actual = self._digest
        if actual != self.layer.digest:
            self.state.close()
            for path in (self.partial, self.state.path):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise RegistryError(
                "digest mismatch, file must be downloaded again:"
                f" want {self.layer.digest}, got {actual}"
            )
        self.store.install_blob(self.partial, self.layer.digest)
        self.state.close()
        with contextlib.suppress(OSError):
            self.state.path.unlink()


class _InOrderHash:
    """The sha256 of a blob whose parts arrive in parallel, computed as they arrive.

    SHA-256 takes bytes in order, so only the bytes at the hashed end can be hashed as they
    come; a part further on is hashed when everything before it is there, read back from the
    file (its pages are still cached). Two ways to drive it: ``feed`` after each write (the
    writer hashes; one at a time, a lock), or ``follow``: a thread of its own trails the
    contiguous written end (writers only ``notify``), so hashing runs beside the transfer
    instead of between its reads. ``finish`` hashes what is left (a resumed download's
    earlier bytes, a part that ended before the one ahead of it) and gives the digest.
    """

    def __init__(self, size: int) -> None:
        self._hasher = hashlib.sha256()
        self._size = size
        self._hashed = 0  # bytes [0, _hashed) are in the hash
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = False
        self._jobs: list[tuple[bytes | memoryview, int, threading.Event | None]] = []

    def feed(self, fd: int, data: bytes | memoryview, offset: int, parts: list[_Part]) -> None:
        """``data`` was just written at ``offset``; ``parts`` say what else has arrived
        (their ``done`` may lag, never lead, the bytes written)."""
        with self._lock:
            if offset == self._hashed:
                self._hasher.update(data)
                self._hashed += len(data)
            self._catch_up(fd, _contiguous_end(parts, self._hashed, len(data), offset))

    def follow(self, fd: int, parts: list[_Part]) -> None:
        """Hash in a thread of its own as ``parts`` fill (``notify`` after each write)."""
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._trail, args=(fd, parts), name="pull-hash", daemon=True
        )
        self._thread.start()

    def offer(self, data: bytes | memoryview, offset: int, taken: threading.Event | None) -> None:
        """While following: ``data`` is about to be written at ``offset``; hash it from this
        memory if it is next in order (no read back), and set ``taken`` once done with it."""
        with self._wake:
            if self._thread is None:
                if taken is not None:
                    taken.set()
                return
            self._jobs.append((data, offset, taken))
            self._pending = True
            self._wake.notify()

    def notify(self) -> None:
        with self._wake:
            self._pending = True
            self._wake.notify()

    def stop(self) -> None:
        """End ``follow`` (what was hashed stays hashed); safe to call when not following."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self.notify()
        thread.join()
        with self._wake:
            for _, _, taken in self._jobs:
                if taken is not None:
                    taken.set()
            self._jobs.clear()

    def finish(self, fd: int) -> str:
        self.stop()
        with self._lock:
            self._catch_up(fd, self._size)
            return "sha256:" + self._hasher.hexdigest()

    def _trail(self, fd: int, parts: list[_Part]) -> None:
        while not self._stopping.is_set():
            with self._wake:
                self._pending = False
                jobs = list(self._jobs)
                self._jobs.clear()
            with self._lock:
                for data, offset, taken in jobs:
                    if offset == self._hashed:  # next in order: straight from the buffer
                        self._hasher.update(data)
                        self._hashed += len(data)
                    if taken is not None:
                        taken.set()
                end = _contiguous_end(parts, self._hashed, 0, -1)
                if end > self._hashed:
                    with contextlib.suppress(OSError):  # finish reads again and reports it
                        self._catch_up(fd, end, self._stopping)
                    continue
            if jobs:
                continue
            with self._wake:
                if not self._pending and not self._stopping.is_set():
                    self._wake.wait(0.25)

    def _catch_up(self, fd: int, end: int, stopping: threading.Event | None = None) -> None:
        while self._hashed < end:
            if stopping is not None and stopping.is_set():
                return
            chunk = os.pread(fd, min(_HASH_READ, end - self._hashed), self._hashed)
            if not chunk:  # the file is shorter than its parts claim: the digest will say
                return
            self._hasher.update(chunk)
            self._hashed += len(chunk)


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` (not in :mod:`os`), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


_sync_file_range = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE: Final = 2


def _start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages to disk without waiting for the disk (no cache
    flush, no journal commit: the fsync at the end does those once); elsewhere fdatasync."""
    if _sync_file_range is None or _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
        os.fdatasync(fd)


class _EarlyFlush:
    """Writeback started in a thread of its own every few MB written (``sync_file_range``,
    else ``fdatasync``), so the bytes go to disk while more arrive and the one fsync before
    the blob is moved into place has little left to wait for (a thread of its own: neither
    the reads nor the hash wait on the disk).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = 0
        self._synced = 0
        self._due = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="pull-flush", daemon=True)
        self._thread.start()

    def wrote(self, count: int) -> None:
        self._written += count  # writers race here: a count off by a write only moves a sync
        if self._written - self._synced >= _SYNC_EVERY:
            self._due.set()

    def stop(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._stopping:
                return
            target = self._written
            with contextlib.suppress(OSError):  # the fsync at the end reports what matters
                _start_writeback(self._fd)
            self._synced = target


def _in_thread(
    loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object
) -> asyncio.Future[None]:
    """Run ``fn(*args)`` in a new daemon thread; the future settles when it returns."""
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="pull-part", daemon=True).start()
    return future


def _contiguous_end(parts: list[_Part], start: int, written: int, offset: int) -> int:
    """How far the bytes from ``start`` on are all written: through whole parts, up to the
    ``done`` of the first unfinished one (counting a write of ``written`` bytes at
    ``offset`` that its part's ``done`` does not show yet)."""
    end = start
    for part in parts:
        if part.start + part.size <= end:
            continue
        if part.start > end:
            break
        done = part.start + part.done
        if part.start <= offset <= done:
            done = max(done, offset + written)
        end = max(end, min(done, part.start + part.size))
        if end < part.start + part.size:
            break
    return end


class _StateFile:
    """How far each part of one download got, in a file that never needs new disk blocks.

    Why this shape: a pull fails on a full disk exactly when its resume point matters most,
    and rewriting a file by temp + rename needs fresh blocks just then (a state saved that
    way is lost, and the retry starts from zero). So the file is written whole once, before
    the first data byte: two fixed-size slots, each ``<sha256 hex of record> <record>``
    padded with spaces, the record a JSON object with a sequence number. Every save then
    overwrites the older slot in place; loading takes the valid slot with the higher
    number. A torn write (crash, I/O error) spoils one slot at most, which its checksum
    exposes, and the other slot still stands.

    What can go wrong: the file cannot be created (disk already full): StoreError before
    the first data byte; a save fails anyway: logged, the previous slot stands and the
    next pull resumes from a little earlier.
    """

    def __init__(self, path: Path, digest: str, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size
        self._fd: int | None = None
        self._seq = 0

    def load(self) -> list[_Part] | None:
        """The parts of the newest valid slot, or None (no file, foreign, damaged)."""
        try:
            with self.path.open("rb") as f:
                data = f.read(2 * _STATE_SLOT_BYTES + 1)
        except OSError:
            return None
        if len(data) != 2 * _STATE_SLOT_BYTES:
            return None
        slots = [
            self._parse_slot(data[i * _STATE_SLOT_BYTES :][:_STATE_SLOT_BYTES]) for i in (0, 1)
        ]
        found = [slot for slot in slots if slot is not None]
        if not found:
            return None
        self._seq, parts = max(found, key=lambda slot: slot[0])
        return parts

    def open(self, parts: list[_Part], *, fresh: bool) -> None:
        """Get ready to save: a fresh file is written whole now (StoreError if it cannot be)."""
        self._remove_legacy_temp()
        try:
            if not fresh:
                self._fd = os.open(self.path, os.O_RDWR)
                return
            self._seq = 0
            content = self._slot(parts, 0) + b" " * (_STATE_SLOT_BYTES - 1) + b"\n"
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                # no fsync: a state lost in a crash is a checksum that fails (a fresh start),
                # and the data file's one fsync is the blob's
                _pwrite_all(fd, content, 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.name}: {exc.strerror or exc}") from exc

    def save(self, parts: list[_Part]) -> None:
        """Overwrite the older slot with ``parts``; a failure is logged, never raised."""
        if self._fd is None:
            return
        seq = self._seq + 1
        try:
            _pwrite_all(self._fd, self._slot(parts, seq), (seq % 2) * _STATE_SLOT_BYTES)
        except OSError as exc:
            logger.warning("cannot save download state %s: %s", self.path.name, exc)
            return
        self._seq = seq  # only now: a failed slot is retried, the good one is kept

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _slot(self, parts: list[_Part], seq: int) -> bytes:
        record = json.dumps(
            {
                "digest": self.digest,
                "size": self.size,
                "seq": seq,
                "parts": [[p.start, p.size, p.done] for p in parts],
            },
            separators=(",", ":"),
        ).encode()
        line = hashlib.sha256(record).hexdigest().encode() + b" " + record
        if len(line) >= _STATE_SLOT_BYTES:
            raise StoreError("download state too large")  # pragma: no cover - parts are capped
        return line + b" " * (_STATE_SLOT_BYTES - 1 - len(line)) + b"\n"

    def _parse_slot(self, raw: bytes) -> tuple[int, list[_Part]] | None:
        check, _, record = raw.rstrip(b" \n").partition(b" ")
        if hashlib.sha256(record).hexdigest().encode() != check:
            return None
        try:
            value = json.loads(record)
            if value["digest"] != self.digest or value["size"] != self.size:
                return None
            seq = int(value["seq"])
            parts = [_Part(int(a), int(b), int(c)) for a, b, c in value["parts"]]
        except (ValueError, KeyError, TypeError):
            return None
        return (seq, parts) if _parts_cover(parts, self.size) else None

    def _remove_legacy_temp(self) -> None:
        """A ``.tmp`` left by an older corral whose state rewrite failed (disk full)."""
        with contextlib.suppress(OSError):
            self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)


def _parts_cover(parts: list[_Part], size: int) -> bool:
    """Whether ``parts`` tile ``[0, size)`` in order, each with a possible ``done``."""
    expected = 0
    for part in parts:
        if part.start != expected or not 0 <= part.done <= part.size:
            return False
        if part.size <= 0 and size != 0:
            return False
        expected += part.size
    return expected == size and bool(parts)


class _ShortRead(Exception):
    """The registry closed a part's response before its last byte."""


def _plan_parts(size: int, options: PullOptions) -> list[_Part]:
    if size == 0:
        return [_Part(0, 0, 0)]
    max_parts = max(1, min(options.max_parts, _MAX_PARTS))
    part_size = max(options.min_part_bytes, 1, -(-size // max_parts))
    return [_Part(start, min(part_size, size - start)) for start in range(0, size, part_size)]


def _check_content_range(response: httpx.Response, first: int, last: int, size: int) -> None:
    _check_range_header(response.headers.get("content-range", ""), first, last, size)


def _check_range_header(value: str, first: int, last: int, size: int) -> None:
    match = _CONTENT_RANGE.match(value.strip())
    if match is None:
        return  # a proxy that drops the header: the byte count and the digest still decide
    start, end, total = match.groups()
    if int(start) != first or int(end) > last or (total != "*" and int(total) != size):
        raise RegistryError(
            f"the registry answered bytes {start}-{end}/{total} for bytes {first}-{last}/{size}",
            status=400,
        )


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def partial_files(store: ModelStore, digest: str) -> tuple[Path, Path]:
    """The partial data file and its state file for ``digest`` (for tests and tools)."""
    partial = store.partial_path(digest)
    return partial, partial.with_name(partial.name + ".json")
