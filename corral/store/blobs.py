"""Blobs in flight: what a stored blob is, pins that keep blobs alive, a piecewise writer.

:class:`BlobPins` exists because a pull or create decides "this blob is here" long before it
writes the manifest naming it; :class:`BlobWriter` because an upload or a conversion hands
the store its bytes piece by piece. Both act on a :class:`~corral.store.store.ModelStore`
(its lock, its ``blobs/`` directory); the store's methods that make them are
:meth:`~corral.store.store.ModelStore.pins` and
:meth:`~corral.store.store.ModelStore.open_blob_writer`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from corral.errors import BadRequestError, StoreError
from corral.store.digest import Hasher, parse_digest
from corral.store.files import TEMP_PREFIX

if TYPE_CHECKING:
    from corral.store.store import ModelStore

__all__ = ["BlobInfo", "BlobPins", "BlobWriter"]


class BlobInfo(NamedTuple):
    """A blob that is now in the store: its ``sha256:<hex>`` digest and size in bytes."""

    digest: str
    size: int


class BlobPins:
    """The blobs one in-flight pull or create depends on; delete and prune spare them.

    Why: a pull decides "this blob is here, skip it" long before it writes the manifest that
    names the blob, and a create reuses its base model's blobs; a delete of another model
    sharing such a blob in between would remove it, and the manifest write would fail (or,
    without the final check, name a missing blob). Pin a digest *before* checking that its
    blob is present; the pin lasts until :meth:`release` (after the manifest is written).
    Pins live in this process only (another process on the same store is covered by the
    prune grace period, not by pins). Thread-safe; :meth:`add` and :meth:`release` take
    the store's lock, so async callers run them with ``asyncio.to_thread``.
    """

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        self._digests: set[str] = set()
        self._guard = threading.Lock()
        self._released = False

    def __enter__(self) -> BlobPins:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def digests(self) -> frozenset[str]:
        """What is pinned now."""
        return frozenset(self._digests)

    def add(self, digests: Iterable[str]) -> None:
        """Pin ``digests`` (each validated; InvalidDigestError if malformed)."""
        wanted = {parse_digest(d) for d in digests}
        with self._guard:
            if self._released:
                raise StoreError("blob pins used after release")
            new = wanted - self._digests
            self._store._pin(new)
            self._digests |= new

    def release(self) -> None:
        """Drop every pin (idempotent)."""
        with self._guard:
            if self._released:
                return
            self._released = True
            self._store._unpin(self._digests)
            self._digests = set()


class BlobWriter:
    """A blob written in pieces: ``write`` as bytes arrive, then ``commit`` (hash check,
    fsync, rename). Synchronous; async callers batch pieces and use ``asyncio.to_thread``."""

    def __init__(self, store: ModelStore) -> None:
        self._store = store
        self._hasher = Hasher()
        directory = store.blobs_dir
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        except OSError as exc:
            raise StoreError(f"cannot create a file in {directory}: {exc}") from exc
        self._path = Path(tmp_name)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._hasher.size

    def write(self, data: bytes) -> None:
        """Append ``data``; StoreError (disk full, ...) if the store cannot take it."""
        if self._file is None:
            raise StoreError("blob writer is closed")
        self._hasher.update(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write to the store: {exc}") from exc

    def commit(self, expected_digest: str | None = None) -> tuple[BlobInfo, bool]:
        """Check the digest, make the blob durable and put it in place.

        Returns the blob and whether it was new. BadRequestError (Ollama's digest mismatch
        text) if ``expected_digest`` differs; the temp file is removed either way.
        """
        expected = parse_digest(expected_digest) if expected_digest is not None else None
        if self._file is None:
            raise StoreError("blob writer is closed")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self.abort()
            raise StoreError(f"cannot write to the store: {exc}") from exc
        self._file.close()
        self._file = None
        actual = self._hasher.digest
        try:
            if expected is not None and actual != expected:
                raise BadRequestError(f'digest mismatch, expected "{expected}", got "{actual}"')
            if self._store.has_blob(actual):
                os.utime(self._store.blob_path(actual))
                return BlobInfo(actual, self._hasher.size), False
            self._store.install_blob(self._path, actual)
            return BlobInfo(actual, self._hasher.size), True
        finally:
            with contextlib.suppress(OSError):
                self._path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Drop everything written (idempotent)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)
