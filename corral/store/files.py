"""The file operations the store is built on: atomic writes, durable renames, safe paths.

Every write goes to a ``.tmp-*`` file in the target directory, is fsynced, and is renamed
into place; the directory is then fsynced so the rename survives a crash (see
:mod:`corral.store.store`). Paths are judged lexically (:func:`is_in`), so a store reached
through a symlink still works while a computed path that escapes it is refused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from corral.errors import StoreError
from corral.store.digest import CHUNK_SIZE, Hasher

__all__ = [
    "FILE_MODE",
    "TEMP_PREFIX",
    "fsync_dir",
    "is_in",
    "read_chunks",
    "scandir",
    "write_temp",
]

logger = logging.getLogger(__name__)

TEMP_PREFIX: Final = ".tmp-"
"""Prefix of in-progress files; never a valid blob or manifest name."""

FILE_MODE: Final = 0o644
"""Mode of every blob and manifest file."""


def fsync_dir(directory: Path) -> None:
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


def scandir(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` sorted by name; empty if it is missing or unreadable."""
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def is_in(path: Path, base: Path) -> bool:
    """Whether ``path`` lies strictly inside ``base``, judged lexically (no symlinks)."""
    p, b = os.path.normpath(path), os.path.normpath(base)
    return p != b and os.path.commonpath([p, b]) == b


def write_temp(directory: Path, chunks: Iterable[bytes], hasher: Hasher) -> Path:
    """Write ``chunks`` to a fresh fsynced ``.tmp-*`` file in ``directory``; return it.

    Each chunk is hashed with ``hasher`` on the way. Errors raised by ``chunks`` itself
    propagate unchanged; I/O errors become StoreError; either way nothing is left behind.
    """
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
                os.fchmod(f.fileno(), FILE_MODE)
                os.fsync(f.fileno())
            except OSError as exc:
                raise StoreError(f"cannot write to the store: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return tmp


def read_chunks(f: BinaryIO) -> Iterator[bytes]:
    """The bytes of ``f`` in CHUNK_SIZE pieces."""
    while chunk := f.read(CHUNK_SIZE):
        yield chunk
