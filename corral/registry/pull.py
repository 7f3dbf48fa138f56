"""Pull a model: manifest first, then its blobs in parallel HTTP Range parts, verified.

Order and statuses as Ollama: ``pulling manifest``; ``pulling <12 hex>`` with ``digest``,
``total`` and ``completed`` per blob (layers, then the config); ``verifying sha256 digest``;
``writing manifest``; ``success``.

Resuming: a blob downloads into ``blobs/sha256-<hex>-partial`` with a small state file
beside it (``...-partial.json``) recording how much of each part is done. A pull that fails
(lost connection, registry gone, disk full) keeps both; the next pull of any model that
needs the blob continues from there. The state file is created at its full size before the
first data byte and then only overwritten in place (two checksummed slots, see
:class:`_StateFile`), so saving it never needs new disk blocks: a full disk cannot take
the resume point away. The state may lag the data (it is written after the bytes) but
never leads it by more than what the final check catches: every blob is hashed before it
is moved into place, and a blob whose bytes do not hash to its digest is deleted and the
pull fails (``digest mismatch, file must be downloaded again: ...``).

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
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import httpx

from corral.errors import CorralError, StoreError
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
    sha256_file,
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
_STATE_EVERY: Final = 8 << 20
_STATE_SLOT_BYTES: Final = 8192
_MAX_PARTS: Final = 64  # so that a state record always fits its slot

_blob_locks: dict[tuple[str, str], asyncio.Lock] = {}


@dataclass(frozen=True, slots=True)
class PullOptions:
    """How to pull: plain HTTP allowed, part size bounds, parallel parts, retries."""

    insecure: bool = False
    min_part_bytes: int = 64 << 20
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
        self._since_state = 0
        self._last_percent = -1

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
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

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

    def _report(self, *, force: bool = False) -> None:
        total = self.layer.size or 1
        percent = self.completed * 100 // total
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
        offset = part.start + part.done
        try:
            await asyncio.to_thread(_pwrite_all, fd, data, offset)
        except OSError as exc:
            raise StoreError(
                f"cannot write {self.layer.digest} to the store: {exc.strerror or exc}"
                " (the partial download is kept and resumes on the next pull)"
            ) from exc
        part.done += len(data)
        self._since_state += len(data)
        if self._since_state >= _STATE_EVERY:
            self._since_state = 0
            await asyncio.to_thread(self.state.save, self.parts)
        self._report()

    # ---- verification -------------------------------------------------------------------

    def _verify_and_install(self) -> None:
        actual = sha256_file(self.partial)
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
                _pwrite_all(fd, content, 0)
                os.fsync(fd)
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
    match = _CONTENT_RANGE.match(response.headers.get("content-range", "").strip())
    if match is None:
        return  # a proxy that drops the header: the byte count and the digest still decide
    start, end, total = match.groups()
    if int(start) != first or int(end) > last or (total != "*" and int(total) != size):
        raise RegistryError(
            f"the registry answered bytes {start}-{end}/{total} for bytes {first}-{last}/{size}",
            status=400,
        )


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def partial_files(store: ModelStore, digest: str) -> tuple[Path, Path]:
    """The partial data file and its state file for ``digest`` (for tests and tools)."""
    partial = store.partial_path(digest)
    return partial, partial.with_name(partial.name + ".json")
