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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

from corral.errors import BadRequestError, InvalidNameError, ModelNotFoundError, StoreError
from corral.store.digest import (
    CHUNK_SIZE,
    Hasher,
    blob_filename,
    digest_from_filename,
    parse_digest,
)
from corral.store.manifest import MAX_MANIFEST_BYTES, Manifest
from corral.store.names import Name

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

TEMP_PREFIX: Final = ".tmp-"
"""Prefix of in-progress files; never a valid blob or manifest name."""

PRUNE_GRACE_SECONDS: Final = 3600.0
"""Files modified more recently than this are never pruned (they may be mid-write)."""

_FILE_MODE: Final = 0o644
_DIGEST_IN_BYTES: Final = re.compile(rb"sha256[:-]([0-9a-fA-F]{64})")

_ManifestParts = tuple[str, str, str, str]


class BlobInfo(NamedTuple):
    """A blob that is now in the store: its ``sha256:<hex>`` digest and size in bytes."""

    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model in the store as listed: its name, manifest, ID and modification time.

    ``digest`` is the bare SHA-256 hex of the manifest file; Ollama shows its first 12
    characters as the model ID. ``modified_at`` is the manifest's mtime, in UTC.
    """

    name: Name
    manifest: Manifest
    digest: str
    modified_at: datetime

    @property
    def size(self) -> int:
        """Total bytes of the model's blobs."""
        return self.manifest.total_size


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable; filesystems that cannot do this are skipped."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        logger.debug("cannot open %s to fsync it: %s", directory, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        logger.debug("cannot fsync directory %s: %s", directory, exc)
    finally:
        os.close(fd)


def _scandir(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` sorted by name; empty if it is missing or unreadable."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _salvage_digests(data: bytes) -> set[str]:
    """Every digest-looking string in ``data``: the blobs a damaged manifest may still need."""
    return {"sha256:" + m.group(1).decode("ascii").lower() for m in _DIGEST_IN_BYTES.finditer(data)}


def _is_in(path: Path, base: Path) -> bool:
    """Whether ``path`` lies strictly inside ``base``, judged lexically (no symlinks)."""
    p, b = os.path.normpath(path), os.path.normpath(base)
    return p != b and os.path.commonpath([p, b]) == b


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
        if not _is_in(path, self.blobs_dir) or path.parent != self.blobs_dir:
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
        tmp = self._write_temp(self.blobs_dir, chunks, hasher)
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
                    _fsync_dir(self.blobs_dir)
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
            os.chmod(path, _FILE_MODE)
            os.replace(path, final)
        except OSError as exc:
            raise StoreError(f"cannot store blob {digest}: {exc}") from exc
        _fsync_dir(self.blobs_dir)

    def import_file(
        self, path: Path, expected_digest: str | None = None, *, pins: BlobPins | None = None
    ) -> BlobInfo:
        """Copy the file at ``path`` into the store as a blob, hashing it on the way.

        An OSError reading ``path`` propagates as is (it is the caller's file, not the store).
        """
        with Path(path).open("rb") as f:
            return self.write_blob(_read_chunks(f), expected_digest, pins=pins)

    def pins(self) -> BlobPins:
        """An empty set of pins for one pull or create; see :class:`BlobPins`."""
        return BlobPins(self)

    # ------------------------------------------------------------------------- manifests

    def manifest_path(self, name: Name) -> Path:
        """``root/manifests/<host>/<namespace>/<model>/<tag>`` for ``name``."""
        parts = name.manifest_parts()
        path = self.manifests_dir.joinpath(*parts)
        if not _is_in(path, self.manifests_dir) or path.relative_to(self.manifests_dir).parts != (
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
        wanted = name.manifest_parts()
        level = [self.manifests_dir]
        for part in name.casefold_key():
            level = [
                Path(entry.path)
                for directory in level
                for entry in _scandir(directory)
                if entry.name.lower() == part
            ]
        found: list[Name] = []
        for path in level:
            if not self._is_manifest_file(path):
                continue
            try:
                found.append(Name(*path.relative_to(self.manifests_dir).parts))
            except InvalidNameError:
                continue
        for candidate in found:
            if candidate.manifest_parts() == wanted:
                return candidate
        return found[0] if found else None

    def list_models(self) -> list[ModelEntry]:
        """Every readable model, newest manifest first. Never raises for a bad manifest."""
        entries: list[ModelEntry] = []
        for parts, path in self._manifest_files():
            try:
                name = Name(*parts)
            except InvalidNameError:
                logger.warning("skipping manifest with an invalid name: %s", "/".join(parts))
                continue
            try:
                data = _read_capped(path)
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
                doomed = _salvage_digests(data)
            try:
                path.unlink()
            except FileNotFoundError:
                raise ModelNotFoundError(name.display_short) from None
            except OSError as exc:
                raise StoreError(f"cannot remove manifest {name.display_short}: {exc}") from exc
            _fsync_dir(path.parent)
            self._remove_empty_dirs(path.parent)
            logger.info("deleted model %s", name.display_short)
            try:
                in_use = self._referenced_digests() | self._pinned_digests()
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
            in_use = self._referenced_digests() | self._pinned_digests()
            cutoff = time.time() - grace_seconds
            removed = 0
            for entry in _scandir(self.blobs_dir):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode) or st.st_mtime > cutoff:
                    continue
                digest = digest_from_filename(entry.name)
                if digest is not None and digest in in_use:
                    continue
                path = self.blobs_dir / entry.name
                if not _is_in(path, self.blobs_dir):
                    continue
                try:
                    path.unlink()
                except OSError as exc:
                    logger.warning("cannot prune %s: %s", entry.name, exc)
                    continue
                logger.info("pruned blob %s", entry.name)
                removed += 1
            removed += self._prune_manifest_tree(cutoff)
            return removed

    # -------------------------------------------------------------------------- internal

    def _write_temp(self, directory: Path, chunks: Iterable[bytes], hasher: Hasher) -> Path:
        """Write ``chunks`` to a fresh fsynced ``.tmp-*`` file in ``directory``; return it."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
        except OSError as exc:
            raise StoreError(f"cannot create a file in {directory}: {exc}") from exc
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    hasher.update(chunk)
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise StoreError(f"cannot write to the store: {exc}") from exc
                try:
                    f.flush()
                    os.fchmod(f.fileno(), _FILE_MODE)
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise StoreError(f"cannot write to the store: {exc}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _write_manifest_locked(self, name: Name, data: bytes, manifest: Manifest) -> None:
        missing = sorted(d for d in manifest.digests if not self.has_blob(d))
        if missing:
            raise StoreError(
                f"cannot write manifest for {name.display_short}: blob {missing[0]} is missing"
            )
        path = self.manifest_path(name)
        tmp = self._write_temp(path.parent, [data], Hasher())
        try:
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write manifest for {name.display_short}: {exc}") from exc
        _fsync_dir(path.parent)
        logger.info("wrote manifest %s", name.display_short)

    def _read_manifest_bytes(self, name: Name) -> bytes:
        path = self.manifest_path(name)
        try:
            return _read_capped(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFoundError(name.display_short) from None
        except OSError as exc:
            raise StoreError(f"cannot read manifest {name.display_short}: {exc}") from exc

    def _is_manifest_file(self, path: Path) -> bool:
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except OSError:
            return False

    def _manifest_files(self) -> Iterator[tuple[_ManifestParts, Path]]:
        """Every non-hidden regular file exactly four levels under ``manifests/``."""
        for host in _scandir(self.manifests_dir):
            if host.name.startswith(".") or not host.is_dir():
                continue
            for namespace in _scandir(Path(host.path)):
                if namespace.name.startswith(".") or not namespace.is_dir():
                    continue
                for model in _scandir(Path(namespace.path)):
                    if model.name.startswith(".") or not model.is_dir():
                        continue
                    for tag in _scandir(Path(model.path)):
                        if tag.name.startswith(".") or not tag.is_file():
                            continue
                        parts = (host.name, namespace.name, model.name, tag.name)
                        yield parts, Path(tag.path)

    def _referenced_digests(self) -> set[str]:
        """Digests named by any manifest; a damaged one counts with every digest it contains.

        StoreError if a manifest file cannot be read at all (its blobs are then unknown).
        """
        in_use: set[str] = set()
        for parts, path in self._manifest_files():
            try:
                data = _read_capped(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StoreError(f"cannot read manifest {'/'.join(parts)}: {exc}") from exc
            try:
                in_use |= Manifest.from_json(data).digests
            except StoreError:
                in_use |= _salvage_digests(data)
        return in_use

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

    def _remove_empty_dirs(self, start: Path) -> None:
        """rmdir ``start`` and its parents while empty, stopping below ``manifests/``."""
        directory = start
        while _is_in(directory, self.manifests_dir):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _prune_manifest_tree(self, cutoff: float) -> int:
        """Remove stale temp files and empty directories under ``manifests/``."""
        removed = 0
        if not self.manifests_dir.is_dir():
            return 0
        for dirpath, _dirnames, filenames in os.walk(self.manifests_dir, topdown=False):
            directory = Path(dirpath)
            for filename in filenames:
                if not filename.startswith(TEMP_PREFIX):
                    continue
                path = directory / filename
                try:
                    if os.lstat(path).st_mtime > cutoff:
                        continue
                    path.unlink()
                except OSError:
                    continue
                removed += 1
            if _is_in(directory, self.manifests_dir):
                with contextlib.suppress(OSError):
                    directory.rmdir()
        return removed


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


def _read_capped(path: Path) -> bytes:
    """Read a regular file of at most MAX_MANIFEST_BYTES + 1 bytes (never blocks on a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(f"not a regular file: {path}")
        return f.read(MAX_MANIFEST_BYTES + 1)


def _read_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK_SIZE):
        yield chunk
