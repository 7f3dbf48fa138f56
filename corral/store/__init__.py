"""Ollama-compatible model store: names, digests, manifests and the on-disk store.

The layout and formats match Ollama's exactly so an existing ``~/.ollama/models`` works as
is; see :mod:`corral.store.store` for what can go wrong and how it is handled.
"""

from __future__ import annotations

from corral.store.digest import (
    DIGEST_RE,
    Hasher,
    blob_filename,
    digest_from_filename,
    parse_digest,
    sha256_file,
)
from corral.store.manifest import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_DRAFT,
    MEDIA_TYPE_EMBED,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_PROMPT,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
    ModelConfig,
    RootFS,
)
from corral.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG, Name
from corral.store.store import BlobInfo, BlobPins, ModelEntry, ModelStore

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_TAG",
    "DIGEST_RE",
    "MEDIA_TYPE_ADAPTER",
    "MEDIA_TYPE_CONFIG",
    "MEDIA_TYPE_DRAFT",
    "MEDIA_TYPE_EMBED",
    "MEDIA_TYPE_LICENSE",
    "MEDIA_TYPE_MANIFEST",
    "MEDIA_TYPE_MESSAGES",
    "MEDIA_TYPE_MODEL",
    "MEDIA_TYPE_PARAMS",
    "MEDIA_TYPE_PROJECTOR",
    "MEDIA_TYPE_PROMPT",
    "MEDIA_TYPE_SYSTEM",
    "MEDIA_TYPE_TEMPLATE",
    "BlobInfo",
    "BlobPins",
    "Hasher",
    "Layer",
    "Manifest",
    "ModelConfig",
    "ModelEntry",
    "ModelStore",
    "Name",
    "RootFS",
    "blob_filename",
    "digest_from_filename",
    "parse_digest",
    "sha256_file",
]
