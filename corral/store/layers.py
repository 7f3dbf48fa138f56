"""Building the small layers of a model: text blobs, parameters, and the config blob.

Why shared: a bundled import, ``create`` and a registry pull must produce the same blobs for
the same content (same bytes, same digest), so there is one way to encode each layer.
``pins`` (optional) pins each blob as it is stored, so a concurrent delete of a model with
the same text cannot remove it before the caller's manifest names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from corral.gguf import format_parameter_count, read_gguf
from corral.store.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_DRAFT,
    Layer,
    ModelConfig,
    RootFS,
    go_json,
)
from corral.store.store import BlobPins, ModelStore

__all__ = ["config_layer", "json_layer", "text_layer"]


def text_layer(
    store: ModelStore, media_type: str, text: str, *, pins: BlobPins | None = None
) -> Layer:
    """Store ``text`` (UTF-8) as a blob and return its layer."""
    info = store.write_blob_bytes(text.encode("utf-8"), pins=pins)
    return Layer(media_type, info.digest, info.size)


def json_layer(
    store: ModelStore,
    media_type: str,
    value: Mapping[str, Any] | Sequence[Any],
    *,
    pins: BlobPins | None = None,
) -> Layer:
    """Store ``value`` encoded as Go's encoder does (params, messages) and return its layer."""
    info = store.write_blob_bytes(go_json(value), pins=pins)
    return Layer(media_type, info.digest, info.size)


def config_layer(
    store: ModelStore,
    model: Layer,
    layers: Sequence[Layer],
    *,
    pins: BlobPins | None = None,
    extra: ModelConfig | None = None,
) -> Layer:
    """The config blob for a model whose weights are ``model`` (a GGUF blob in ``store``).

    Family, size class and file type come from the GGUF header (GGUFError if it is not one);
    ``rootfs.diff_ids`` lists ``layers`` in manifest order. ``extra`` carries what the
    header does not say (renderer, parser, requires, capabilities).
    """
    gguf = read_gguf(store.blob_path(model.digest))
    architecture = gguf.architecture
    config = ModelConfig(
        model_format="gguf",
        model_family=architecture,
        model_families=(architecture,),
        model_type=format_parameter_count(gguf.parameter_count),
        file_type=gguf.file_type,
        rootfs=RootFS(type="layers", diff_ids=tuple(layer.digest for layer in layers)),
    )
    if extra is not None:
        config = replace(
            config,
            renderer=extra.renderer,
            parser=extra.parser,
            requires=extra.requires,
            capabilities=extra.capabilities,
        )
    for layer in layers:
        if layer.media_type == MEDIA_TYPE_DRAFT:  # as Ollama notes its draft's architecture
            draft = read_gguf(store.blob_path(layer.digest))
            config = replace(config, draft_architecture=draft.architecture)
    info = store.write_blob_bytes(config.to_json(), pins=pins)
    return Layer(MEDIA_TYPE_CONFIG, info.digest, info.size)
