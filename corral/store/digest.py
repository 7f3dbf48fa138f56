"""Content digests: parsing, blob file names, and streaming SHA-256.

Why: every blob in the store is named after the SHA-256 of its bytes
(``blobs/sha256-<hex>``), and manifests, API requests and model names refer to blobs as
``sha256:<hex>``. A digest therefore turns into a file name, so it is validated strictly
before any path is built from it.

What can go wrong: a digest from a client may be malformed, upper-case, use the ``-``
separator, or smuggle path characters or a trailing newline; :func:`parse_digest` accepts
only ``sha256`` followed by ``:`` or ``-`` and exactly 64 hex digits (whole-string match,
so a trailing newline fails too), and returns the one normal form ``sha256:<lowercase hex>``;
anything else raises :class:`~corral.errors.InvalidDigestError`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final

from corral.errors import InvalidDigestError

__all__ = [
    "CHUNK_SIZE",
    "DIGEST_RE",
    "Hasher",
    "blob_filename",
    "digest_from_filename",
    "parse_digest",
    "sha256_file",
]

DIGEST_RE: Final = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$", re.ASCII)
"""The accepted digest forms. Always use ``fullmatch`` (``$`` alone would allow a ``\\n``)."""

CHUNK_SIZE: Final = 1 << 20
"""Read size for hashing and copying files: 1 MiB."""

_PREFIX_LEN: Final = len("sha256:")


def parse_digest(s: str) -> str:
    """Return ``s`` normalised to ``sha256:<lowercase hex>``; InvalidDigestError if malformed."""
    if not isinstance(s, str) or DIGEST_RE.fullmatch(s) is None:
        raise InvalidDigestError()
    return "sha256:" + s[_PREFIX_LEN:].lower()


def blob_filename(digest: str) -> str:
    """The blob file name for ``digest``: ``sha256-<hex>`` (validated)."""
    return "sha256-" + parse_digest(digest)[_PREFIX_LEN:]


def digest_from_filename(name: str) -> str | None:
    """The digest a blob file name stands for, or None if ``name`` is not a blob name.

    Only the exact canonical form ``sha256-<64 lowercase hex>`` counts, so partial downloads
    (``sha256-<hex>-partial``), temp files and upper-case variants are not blob names.
    """
    if not name.startswith("sha256-") or DIGEST_RE.fullmatch(name) is None:
        return None
    digest = parse_digest(name)
    return digest if blob_filename(digest) == name else None


class Hasher:
    """Incremental SHA-256 that also counts bytes; ``digest`` is in ``sha256:<hex>`` form."""

    __slots__ = ("_h", "size")

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        """Feed ``data`` into the hash."""
        self._h.update(data)
        self.size += len(data)

    @property
    def hexdigest(self) -> str:
        """The bare lower-case hex digest of everything fed so far."""
        return self._h.hexdigest()

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of everything fed so far."""
        return "sha256:" + self._h.hexdigest()


def sha256_file(path: Path) -> str:
    """``sha256:<hex>`` of the file at ``path``, read in 1 MiB chunks (OSError propagates)."""
    hasher = Hasher()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            hasher.update(chunk)
    return hasher.digest
