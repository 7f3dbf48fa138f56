"""The ``manifests/`` tree: walking it, finding a name in any casing, the digests in use.

Layout: ``manifests/<host>/<namespace>/<model>/<tag>``, one JSON manifest per tag (the
format itself is :mod:`corral.store.manifest`). Everything here reads; the writes, with
the store's lock, are :class:`~corral.store.store.ModelStore`'s.

What can go wrong: a manifest file may be damaged, foreign or huge. It is read capped at
``MAX_MANIFEST_BYTES`` (and never blocks on a FIFO); a damaged one still protects its
blobs, since every digest-looking string in its raw bytes counts as in use.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from corral.errors import InvalidNameError, StoreError
from corral.store.files import scandir
from corral.store.manifest import MAX_MANIFEST_BYTES, Manifest
from corral.store.names import Name

__all__ = [
    "ManifestParts",
    "ModelEntry",
    "find_name",
    "manifest_files",
    "read_capped",
    "referenced_digests",
    "salvage_digests",
]

ManifestParts = tuple[str, str, str, str]
"""host, namespace, model, tag: the four path parts under ``manifests/``."""

_DIGEST_IN_BYTES: Final = re.compile(rb"sha256[:-]([0-9a-fA-F]{64})")


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


def read_capped(path: Path) -> bytes:
    """Read a regular file of at most MAX_MANIFEST_BYTES + 1 bytes (never blocks on a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(f"not a regular file: {path}")
        return f.read(MAX_MANIFEST_BYTES + 1)


def salvage_digests(data: bytes) -> set[str]:
    """Every digest-looking string in ``data``: the blobs a damaged manifest may still need."""
    return {"sha256:" + m.group(1).decode("ascii").lower() for m in _DIGEST_IN_BYTES.finditer(data)}


def manifest_files(manifests_dir: Path) -> Iterator[tuple[ManifestParts, Path]]:
    """Every non-hidden regular file exactly four levels under ``manifests_dir``."""
    for host in scandir(manifests_dir):
        if host.name.startswith(".") or not host.is_dir():
            continue
        for namespace in scandir(Path(host.path)):
            if namespace.name.startswith(".") or not namespace.is_dir():
                continue
            for model in scandir(Path(namespace.path)):
                if model.name.startswith(".") or not model.is_dir():
                    continue
                for tag in scandir(Path(model.path)):
                    if tag.name.startswith(".") or not tag.is_file():
                        continue
                    parts = (host.name, namespace.name, model.name, tag.name)
                    yield parts, Path(tag.path)


def find_name(manifests_dir: Path, name: Name) -> Name | None:
    """The stored name equal to ``name`` ignoring case, in its on-disk casing, or None.

    An exact match wins; otherwise the first match in sorted order.
    """
    wanted = name.manifest_parts()
    level = [manifests_dir]
    for part in name.casefold_key():
        level = [
            Path(entry.path)
            for directory in level
            for entry in scandir(directory)
            if entry.name.lower() == part
        ]
    found: list[Name] = []
    for path in level:
        if not _is_manifest_file(path):
            continue
        try:
            found.append(Name(*path.relative_to(manifests_dir).parts))
        except InvalidNameError:
            continue
    for candidate in found:
        if candidate.manifest_parts() == wanted:
            return candidate
    return found[0] if found else None


def referenced_digests(manifests_dir: Path) -> set[str]:
    """Digests named by any manifest; a damaged one counts with every digest it contains.

    StoreError if a manifest file cannot be read at all (its blobs are then unknown).
    """
    in_use: set[str] = set()
    for parts, path in manifest_files(manifests_dir):
        try:
            data = read_capped(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot read manifest {'/'.join(parts)}: {exc}") from exc
        try:
            in_use |= Manifest.from_json(data).digests
        except StoreError:
            in_use |= salvage_digests(data)
    return in_use


def _is_manifest_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
