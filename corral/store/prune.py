"""Removing what no model needs: unreferenced blobs, stray files, empty manifest directories.

The decisions (which digests are in use, under the store's lock) are
:meth:`~corral.store.store.ModelStore.prune`'s and
:meth:`~corral.store.store.ModelStore.delete`'s; these functions do the removing. A file
modified after ``cutoff`` is never removed: it may be another writer's in-flight download.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path
from typing import Final

from corral.store.digest import digest_from_filename
from corral.store.files import TEMP_PREFIX, is_in, scandir

__all__ = ["PRUNE_GRACE_SECONDS", "prune_blobs", "prune_manifest_tree", "remove_empty_dirs"]

logger = logging.getLogger(__name__)

PRUNE_GRACE_SECONDS: Final = 3600.0
"""Files modified more recently than this are never pruned (they may be mid-write)."""


def prune_blobs(blobs_dir: Path, in_use: set[str], cutoff: float) -> int:
    """Remove each file in ``blobs_dir`` that is not a blob in ``in_use`` (temp files,
    partial downloads, unreferenced blobs) and was last modified before ``cutoff``.

    Returns the number of files removed; one that cannot be removed is logged and kept.
    """
    removed = 0
    for entry in scandir(blobs_dir):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) or st.st_mtime > cutoff:
            continue
        digest = digest_from_filename(entry.name)
        if digest is not None and digest in in_use:
            continue
        path = blobs_dir / entry.name
        if not is_in(path, blobs_dir):
            continue
        try:
            path.unlink()
        except OSError as exc:
            logger.warning("cannot prune %s: %s", entry.name, exc)
            continue
        logger.info("pruned blob %s", entry.name)
        removed += 1
    return removed


def prune_manifest_tree(manifests_dir: Path, cutoff: float) -> int:
    """Remove stale temp files and empty directories under ``manifests_dir``."""
    removed = 0
    if not manifests_dir.is_dir():
        return 0
    for dirpath, _dirnames, filenames in os.walk(manifests_dir, topdown=False):
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
        if is_in(directory, manifests_dir):
            with contextlib.suppress(OSError):
                directory.rmdir()
    return removed


def remove_empty_dirs(start: Path, manifests_dir: Path) -> None:
    """rmdir ``start`` and its parents while empty, stopping below ``manifests_dir``."""
    directory = start
    while is_in(directory, manifests_dir):
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
