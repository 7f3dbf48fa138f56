"""The on-disk model store, in Ollama's exact layout, so an existing Ollama store works as is.

Layout under ``root`` (``$OLLAMA_MODELS``, usually ``~/.ollama/models``)::

    manifests/<host>/<namespace>/<model>/<tag>    one JSON manifest per tag
    blobs/sha256-<hex>                            content-addressed blobs

Why it is built this way: blobs are shared between models (two tags of one model share the
weights), so a blob may only be deleted once no manifest names it; and a manifest must
never name a blob that is not on disk. Every write is atomic (temp file in the target
directory, ``fsync``, ``os.replace``, ``fsync`` of the directory), so a crash leaves either
the old file or the new one, plus at worst a stray ``.tmp-*`` file that :meth:`prune`
removes later.

What can go wrong, and what happens:

* Hostile names or digests: every path is computed only from a validated :class:`Name` or
  a digest that passed :func:`parse_digest`, then checked (lexically, so a symlinked store
  still works) to lie where it should under ``root``; otherwise :class:`StoreError`.
* A corrupt or foreign manifest: :meth:`list_models` skips it with a warning; when deciding
  which blobs are still in use, the digests found in its raw bytes still count as in use,
  so a damaged manifest never causes its blobs to be deleted.
* Races inside this process: a lock serialises manifest writes, deletes, copies and prunes,
  so a delete cannot remove a blob between a write's "all blobs present" check and its
  rename. A pull or create checks "blob present" long before it writes its manifest; it
  holds :class:`BlobPins` on the digests it depends on, and delete and prune spare pinned
  blobs, so deleting a model that shares a blob with an in-flight pull cannot leave the
  pull's manifest naming a missing blob. Other processes (a running Ollama on the same
  store) are not locked out; the atomic renames keep their view consistent, and
  :meth:`prune` spares files modified within the last hour so it does not eat another
  writer's in-flight download.
* I/O failures while writing become :class:`StoreError`; a missing model is
  :class:`ModelNotFoundError`; a blob whose content does not match the expected digest is
  :class:`BadRequestError` and leaves nothing behind.

The code is synchronous; async callers run it with ``asyncio.to_thread``.

:class:`ModelStore` is the one entry point; its parts live beside it: atomic writes and
path checks in :mod:`corral.store.files`, :class:`BlobPins` and :class:`BlobWriter` in
:mod:`corral.store.blobs`, walking and resolving ``manifests/`` in
:mod:`corral.store.manifest_tree`, the removing of prune and delete in
:mod:`corral.store.prune`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from corral.errors import BadRequestError, InvalidNameError, ModelNotFoundError, StoreError
from corral.store.blobs import BlobInfo, BlobPins, BlobWriter
from corral.store.digest import Hasher, blob_filename, parse_digest
from corral.store.files import FILE_MODE, TEMP_PREFIX, fsync_dir, is_in, read_chunks, write_temp
from corral.store.manifest import Manifest
from corral.store.manifest_tree import (
    ModelEntry,
    find_name,
    manifest_files,
    read_capped,
    referenced_digests,
    salvage_digests,
)
from corral.store.names import Name
from corral.store.prune import (
    PRUNE_GRACE_SECONDS,
    prune_blobs,
    prune_manifest_tree,
    remove_empty_dirs,
)

__all__ = [
    "PRUNE_GRACE_SECONDS",
    "TEMP_PREFIX",
    "BlobInfo",
    "BlobPins",
    "BlobWriter",
    "ModelEntry",
    "ModelStore",
]

logger = logging.getLogger(__name__)


class ModelStore:
    """Blobs and manifests under ``root``, in Ollama's layout. Synchronous and thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir = self.root / "manifests"
        self._lock = threading.Lock()
        self._pinned: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ----------------------------------------------------------------------------- blobs

    def blob_path(self, digest: str) -> Path:
        """``root/blobs/sha256-<hex>`` for ``digest`` (InvalidDigestError if malformed)."""
        path = self.blobs_dir / blob_filename(digest)
        if not is_in(path, self.blobs_dir) or path.parent != self.blobs_dir:
            raise StoreError("refusing a blob path outside the store")
        return path

    def has_blob(self, digest: str) -> bool:
        """Whether the blob for ``digest`` is present as a regular file."""
        return self.blob_path(digest).is_file()

    def write_blob(
        self,
        chunks: Iterable[bytes],
        expected_digest: str | None = None,
        *,
        pins: BlobPins | None = None,
    ) -> BlobInfo:
        """Store the concatenation of ``chunks`` as a blob and return its digest and size.

        The data goes to a ``.tmp-*`` file in ``blobs/``, hashed on the way, and is renamed to
        its digest name only once complete and fsynced. If ``expected_digest`` is given and
        does not match, the temp file is removed and BadRequestError is raised. If the blob
        already exists the temp file is dropped and the existing blob's mtime refreshed (so
        :meth:`prune` spares it until a manifest names it). Errors raised by ``chunks``
        itself propagate unchanged, also leaving nothing behind. With ``pins`` the blob is
        pinned before it is found or renamed, so a concurrent delete cannot take it away
        before the caller's manifest names it.
        """
        expected = parse_digest(expected_digest) if expected_digest is not None else None
        hasher = Hasher()
        tmp = write_temp(self.blobs_dir, chunks, hasher)
        try:
            actual = hasher.digest
            if expected is not None and actual != expected:
                raise BadRequestError(f'digest mismatch, expected "{expected}", got "{actual}"')
            if pins is not None:
                pins.add([actual])
            final = self.blob_path(actual)
            try:
                if final.is_file():
                    tmp.unlink()
                    os.utime(final)
                else:
                    os.replace(tmp, final)
                    fsync_dir(self.blobs_dir)
            except OSError as exc:
                raise StoreError(f"cannot store blob {actual}: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        logger.debug("stored blob %s (%s bytes)", actual, hasher.size)
        return BlobInfo(actual, hasher.size)

    def write_blob_bytes(
        self, data: bytes, expected_digest: str | None = None, *, pins: BlobPins | None = None
    ) -> BlobInfo:
        """Store ``data`` as a blob; see :meth:`write_blob`."""
        return self.write_blob([data], expected_digest, pins=pins)

    def open_blob_writer(self) -> BlobWriter:
        """A writer for a blob whose bytes arrive piece by piece (an upload, a conversion).

        Use as a context manager: leaving the block without :meth:`BlobWriter.commit`
        removes the temp file, so a failed upload leaves nothing behind.
        """
        return BlobWriter(self)

    def partial_path(self, digest: str) -> Path:
        """``blobs/sha256-<hex>-partial``: where a download of ``digest`` accumulates.

        Not a blob name, so nothing reads it as a blob; :meth:`prune` removes it once it is
        older than the grace period (a download abandoned for good).
        """
        path = self.blobs_dir / (blob_filename(digest) + "-partial")
        if path.parent != self.blobs_dir:
            raise StoreError("refusing a partial path outside the store")
        return path

    def install_blob(self, path: Path, digest: str) -> None:
        """Move the fully written file ``path`` (in ``blobs/``) into place as ``digest``.

        The caller has already verified the bytes and fsynced the file.
        """
        final = self.blob_path(digest)
        if path.parent != self.blobs_dir:
            raise StoreError("refusing to install a blob from outside the store")
        try:
            os.chmod(path, FILE_MODE)
            os.replace(path, final)
        except OSError as exc:
            raise StoreError(f"cannot store blob {digest}: {exc}") from exc
        fsync_dir(self.blobs_dir)

    def import_file(
        self, path: Path, expected_digest: str | None = None, *, pins: BlobPins | None = None
    ) -> BlobInfo:
        """Copy the file at ``path`` into the store as a blob, hashing it on the way.

        An OSError reading ``path`` propagates as is (it is the caller's file, not the store).
        """
        with Path(path).open("rb") as f:
            return self.write_blob(read_chunks(f), expected_digest, pins=pins)

    def pins(self) -> BlobPins:
        """An empty set of pins for one pull or create; see :class:`BlobPins`."""
        return BlobPins(self)

    # ------------------------------------------------------------------------- manifests

    def manifest_path(self, name: Name) -> Path:
        """``root/manifests/<host>/<namespace>/<model>/<tag>`` for ``name``."""
        parts = name.manifest_parts()
        path = self.manifests_dir.joinpath(*parts)
        if not is_in(path, self.manifests_dir) or path.relative_to(self.manifests_dir).parts != (
            parts
        ):
            raise StoreError("refusing a manifest path outside the store")
        return path

    def read_manifest(self, name: Name) -> Manifest:
        """The manifest stored under exactly ``name`` (see :meth:`find` for other casings).

        ModelNotFoundError if absent; StoreError if unreadable or invalid.
        """
        return Manifest.from_json(self._read_manifest_bytes(name))

    def manifest_digest(self, name: Name) -> str:
        """Bare SHA-256 hex of the manifest file's bytes (the model ID is its first 12)."""
        return hashlib.sha256(self._read_manifest_bytes(name)).hexdigest()

    def get(self, name: Name) -> ModelEntry:
        """Manifest, ID and mtime of the model stored under exactly ``name``, in one read."""
        path = self.manifest_path(name)
        data = self._read_manifest_bytes(name)
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise ModelNotFoundError(name.display_short) from exc
        return ModelEntry(
            name=name,
            manifest=Manifest.from_json(data),
            digest=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.fromtimestamp(mtime, tz=UTC),
        )

    def write_manifest(self, name: Name, manifest: Manifest) -> None:
        """Atomically write ``manifest`` under ``name`` (exact casing; see :meth:`find`).

        StoreError if a blob it references (config or layer) is not in the store.
        """
        with self._lock:
            self._write_manifest_locked(name, manifest.to_json(), manifest)

    def write_manifest_bytes(self, name: Name, data: bytes) -> None:
        """Atomically write manifest ``data`` exactly as given (a pulled manifest keeps the
        registry's bytes, so the model ID matches). StoreError if invalid or incomplete."""
        manifest = Manifest.from_json(data)
        with self._lock:
            self._write_manifest_locked(name, data, manifest)

    def read_manifest_bytes(self, name: Name) -> bytes:
        """The manifest file of exactly ``name`` as stored (ModelNotFoundError if absent)."""
        return self._read_manifest_bytes(name)

    def find(self, name: Name) -> Name | None:
        """The stored name equal to ``name`` ignoring case, in its on-disk casing, or None.

        An exact match wins; otherwise the first match in sorted order.
        """
        return find_name(self.manifests_dir, name)

    def list_models(self) -> list[ModelEntry]:
        """Every readable model, newest manifest first. Never raises for a bad manifest."""
        entries: list[ModelEntry] = []
        for parts, path in manifest_files(self.manifests_dir):
            try:
                name = Name(*parts)
            except InvalidNameError:
                logger.warning("skipping manifest with an invalid name: %s", "/".join(parts))
                continue
            try:
                data = read_capped(path)
                mtime = os.stat(path).st_mtime
                manifest = Manifest.from_json(data)
            except (OSError, StoreError) as exc:
                logger.warning("skipping manifest %s: %s", name.display_short, exc)
                continue
            entries.append(
                ModelEntry(
                    name=name,
                    manifest=manifest,
                    digest=hashlib.sha256(data).hexdigest(),
                    modified_at=datetime.fromtimestamp(mtime, tz=UTC),
                )
            )
        entries.sort(key=lambda e: e.name.display_long)
        entries.sort(key=lambda e: e.modified_at, reverse=True)
        return entries

    def delete(self, name: Name) -> None:
        """Remove the model ``name`` and every blob of it that no other manifest references.

        ModelNotFoundError if there is no manifest under exactly ``name``. Empty manifest
        directories left behind are removed up to (not including) ``manifests/``.
        """
        with self._lock:
            path = self.manifest_path(name)
            data = self._read_manifest_bytes(name)
            try:
                doomed: set[str] = set(Manifest.from_json(data).digests)
            except StoreError:
                doomed = salvage_digests(data)
            try:
                path.unlink()
            except FileNotFoundError:
                raise ModelNotFoundError(name.display_short) from None
            except OSError as exc:
                raise StoreError(f"cannot remove manifest {name.display_short}: {exc}") from exc
            fsync_dir(path.parent)
            remove_empty_dirs(path.parent, self.manifests_dir)
            logger.info("deleted model %s", name.display_short)
            try:
                in_use = referenced_digests(self.manifests_dir) | self._pinned_digests()
            except StoreError as exc:
                logger.warning("kept the blobs of %s: %s", name.display_short, exc)
                return
            for digest in sorted(doomed - in_use):
                try:
                    self.blob_path(digest).unlink(missing_ok=True)
                except OSError as exc:
                    logger.warning("cannot remove blob %s: %s", digest, exc)
                else:
                    logger.debug("removed blob %s", digest)

    def copy(self, src: Name, dst: Name) -> None:
        """Copy the manifest of ``src`` to ``dst`` byte for byte (so the model ID is kept).

        ModelNotFoundError if ``src`` is missing; StoreError if its manifest is invalid or
        names a missing blob. An existing ``dst`` is replaced atomically.
        """
        with self._lock:
            data = self._read_manifest_bytes(src)
            self._write_manifest_locked(dst, data, Manifest.from_json(data))

    def prune(self, grace_seconds: float = PRUNE_GRACE_SECONDS) -> int:
        """Remove unreferenced blobs, stray files and empty manifest directories.

        In ``blobs/`` a file goes if it is not a blob name (temp files, partial downloads)
        or is a blob no manifest references (and no in-flight pull or create has pinned),
        unless it was modified within ``grace_seconds``. Stale ``.tmp-*`` files under
        ``manifests/`` go too. Returns the number of files removed (directories are not
        counted). StoreError, before anything is removed, if some manifest cannot be read.
        """
        with self._lock:
            in_use = referenced_digests(self.manifests_dir) | self._pinned_digests()
            cutoff = time.time() - grace_seconds
            removed = prune_blobs(self.blobs_dir, in_use, cutoff)
            removed += prune_manifest_tree(self.manifests_dir, cutoff)
            return removed

    # -------------------------------------------------------------------------- internal

    def _write_manifest_locked(self, name: Name, data: bytes, manifest: Manifest) -> None:
        missing = sorted(d for d in manifest.digests if not self.has_blob(d))
        if missing:
            raise StoreError(
                f"cannot write manifest for {name.display_short}: blob {missing[0]} is missing"
            )
        path = self.manifest_path(name)
        tmp = write_temp(path.parent, [data], Hasher())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write manifest for {name.display_short}: {exc}") from exc
        fsync_dir(path.parent)
        logger.info("wrote manifest %s", name.display_short)

    def _read_manifest_bytes(self, name: Name) -> bytes:
        path = self.manifest_path(name)
        try:
            return read_capped(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFoundError(name.display_short) from None
        except OSError as exc:
            raise StoreError(f"cannot read manifest {name.display_short}: {exc}") from exc

    def _pinned_digests(self) -> set[str]:
        """Digests some live :class:`BlobPins` holds; call with the lock held."""
        return {digest for digest, count in self._pinned.items() if count > 0}

    def _pin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pinned.update(digests)

    def _unpin(self, digests: Iterable[str]) -> None:
        with self._lock:
            self._pinned.subtract(digests)
            for digest in [d for d, count in self._pinned.items() if count <= 0]:
                del self._pinned[digest]
