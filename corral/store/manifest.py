"""Ollama manifests (Docker distribution v2 shape) and the model config blob.

Why: a model in the store is one manifest JSON file naming a config blob and a list of
layer blobs (the GGUF weights, template, system prompt, params, ...). corral reads
manifests Ollama wrote and writes manifests Ollama can read, byte for byte in the same
encoding Go's ``json.Encoder`` produces (compact, ``<``/``>``/``&`` escaped, trailing
newline), so a model created by either shows the same ID (the manifest's SHA-256).

What can go wrong: a manifest on disk may be truncated, hand-edited, from a newer Ollama,
or hostile. :meth:`Manifest.from_json` checks everything the store later turns into paths
or arithmetic (digests, sizes, counts) and raises ``StoreError("invalid manifest: <why>")``
rather than letting a bad value reach the filesystem. Unknown extra keys are ignored, so
manifests from newer Ollama versions still load. The config blob is parsed leniently
(:meth:`ModelConfig.from_json`) because it is informational only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from corral.errors import InvalidDigestError, StoreError
from corral.store.digest import parse_digest

__all__ = [
    "MAX_LAYERS",
    "MAX_LAYER_SIZE",
    "MAX_MANIFEST_BYTES",
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
    "Layer",
    "Manifest",
    "ModelConfig",
    "RootFS",
    "go_json",
]

MEDIA_TYPE_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
_OLLAMA: Final = "application/vnd.ollama.image."
MEDIA_TYPE_MODEL: Final = _OLLAMA + "model"
MEDIA_TYPE_ADAPTER: Final = _OLLAMA + "adapter"
MEDIA_TYPE_PROJECTOR: Final = _OLLAMA + "projector"
MEDIA_TYPE_TEMPLATE: Final = _OLLAMA + "template"
MEDIA_TYPE_SYSTEM: Final = _OLLAMA + "system"
MEDIA_TYPE_PARAMS: Final = _OLLAMA + "params"
MEDIA_TYPE_MESSAGES: Final = _OLLAMA + "messages"
MEDIA_TYPE_LICENSE: Final = _OLLAMA + "license"
MEDIA_TYPE_PROMPT: Final = _OLLAMA + "prompt"
MEDIA_TYPE_EMBED: Final = _OLLAMA + "embed"
#: a draft model (GGUF, same vocabulary as the model) for speculative decoding
MEDIA_TYPE_DRAFT: Final = _OLLAMA + "draft"

MAX_LAYERS: Final = 1000
MAX_LAYER_SIZE: Final = 1 << 50
"""Sizes must be strictly below this (1 PiB): nothing real is larger, sums cannot overflow."""
MAX_MANIFEST_BYTES: Final = 4 << 20
"""A manifest file larger than this is refused unread (real ones are a few KiB)."""


def go_json(obj: Any) -> bytes:
    """Encode ``obj`` the way Go's ``json.NewEncoder(w).Encode`` does.

    Compact separators, UTF-8 output, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, and a
    trailing newline. Those characters can only occur inside JSON strings, so replacing them
    in the encoded text is exact.
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return (text + "\n").encode("utf-8")


def _invalid(why: str) -> StoreError:
    return StoreError(f"invalid manifest: {why}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Layer:
    """One blob reference: media type, ``sha256:<hex>`` digest, byte size, optional origin.

    The digest is normalised on construction (InvalidDigestError if malformed); a size out
    of ``0 <= size < 2**50`` raises ValueError.
    """

    media_type: str
    digest: str
    size: int
    from_: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", parse_digest(self.digest))
        if not _is_int(self.size) or not 0 <= self.size < MAX_LAYER_SIZE:
            raise ValueError(f"layer size out of range: {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in Ollama's order; ``from`` omitted when empty."""
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            d["from"] = self.from_
        return d

    @classmethod
    def from_dict(cls, data: object, where: str) -> Layer:
        """Validate one JSON layer object; StoreError naming ``where`` if anything is off."""
        if not isinstance(data, dict):
            raise _invalid(f"{where} is not an object")
        media_type = data.get("mediaType")
        if not isinstance(media_type, str):
            raise _invalid(f"{where} mediaType is not a string")
        digest = data.get("digest")
        if not isinstance(digest, str):
            raise _invalid(f"{where} digest is not a string")
        try:
            digest = parse_digest(digest)
        except InvalidDigestError:
            raise _invalid(f"{where} digest is malformed") from None
        size = data.get("size")
        if not _is_int(size):
            raise _invalid(f"{where} size is not an integer")
        assert isinstance(size, int)
        if not 0 <= size < MAX_LAYER_SIZE:
            raise _invalid(f"{where} size is out of range")
        from_ = data.get("from")
        if from_ is not None and not isinstance(from_, str):
            raise _invalid(f"{where} from is not a string")
        return cls(media_type, digest, size, from_ or None)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A model's manifest: the config blob plus the ordered layer blobs."""

    config: Layer
    layers: tuple[Layer, ...]
    schema_version: int = 2
    media_type: str = MEDIA_TYPE_MANIFEST

    @property
    def total_size(self) -> int:
        """Bytes of every blob the model uses: all layers plus the config."""
        return self.config.size + sum(layer.size for layer in self.layers)

    @property
    def digests(self) -> frozenset[str]:
        """Every blob digest this manifest references (config included)."""
        return frozenset([self.config.digest, *(layer.digest for layer in self.layers)])

    def layers_of(self, media_type: str) -> tuple[Layer, ...]:
        """All layers of ``media_type``, in manifest order."""
        return tuple(layer for layer in self.layers if layer.media_type == media_type)

    def layer(self, media_type: str) -> Layer | None:
        """The last layer of ``media_type`` (later layers override earlier ones), or None."""
        for layer in reversed(self.layers):
            if layer.media_type == media_type:
                return layer
        return None

    def to_json(self) -> bytes:
        """Encode as Ollama does: schemaVersion, mediaType, config, layers; Go encoding."""
        return go_json(
            {
                "schemaVersion": self.schema_version,
                "mediaType": self.media_type,
                "config": self.config.to_dict(),
                "layers": [layer.to_dict() for layer in self.layers],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and strictly validate manifest bytes; ``StoreError("invalid manifest: ...")``."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise _invalid("too large")
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError
            raise _invalid("not valid JSON") from None
        if not isinstance(obj, dict):
            raise _invalid("not a JSON object")
        version = obj.get("schemaVersion")
        if not _is_int(version) or version != 2:
            raise _invalid("schemaVersion is not 2")
        media_type = obj.get("mediaType", MEDIA_TYPE_MANIFEST)
        if not isinstance(media_type, str):
            raise _invalid("mediaType is not a string")
        if "config" not in obj:
            raise _invalid("config is missing")
        config = Layer.from_dict(obj["config"], "config")
        raw_layers = obj.get("layers")
        if not isinstance(raw_layers, list):
            raise _invalid("layers is not a list")
        if len(raw_layers) > MAX_LAYERS:
            raise _invalid(f"more than {MAX_LAYERS} layers")
        layers = tuple(Layer.from_dict(raw, f"layer {i}") for i, raw in enumerate(raw_layers))
        return cls(config=config, layers=layers, schema_version=2, media_type=media_type)


@dataclass(frozen=True, slots=True)
class RootFS:
    """The ``rootfs`` member of the config blob (required by the OCI image spec)."""

    type: str = "layers"
    diff_ids: tuple[str, ...] = ()


def _str(obj: Mapping[str, Any], key: str, default: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else default


def _strs(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The config blob (Ollama's ``ConfigV2``): format, family, size class, quantisation."""

    model_format: str = "gguf"
    model_family: str = ""
    model_families: tuple[str, ...] = ()
    model_type: str = ""
    file_type: str = ""
    architecture: str = "amd64"
    os: str = "linux"
    rootfs: RootFS = field(default_factory=RootFS)
    #: newest Ollama's fields, written only when set (Go's ``omitempty``): the Modelfile's
    #: RENDERER, PARSER and REQUIRES, and capabilities a create's ``info`` added
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    capabilities: tuple[str, ...] = ()
    #: the architecture of the model's draft layer (``"draft"`` in the blob), if it has one
    draft_architecture: str = ""

    def to_json(self) -> bytes:
        """Encode with Ollama's key order and Go's encoding."""
        optional: dict[str, Any] = {
            "renderer": self.renderer,
            "parser": self.parser,
            "requires": self.requires,
            "capabilities": list(self.capabilities),
            "draft": {"model_format": "gguf", "architecture": self.draft_architecture}
            if self.draft_architecture
            else None,
        }
        return go_json(
            {
                "model_format": self.model_format,
                "model_family": self.model_family,
                "model_families": list(self.model_families),
                "model_type": self.model_type,
                "file_type": self.file_type,
                **{key: value for key, value in optional.items() if value},
                "architecture": self.architecture,
                "os": self.os,
                "rootfs": {"type": self.rootfs.type, "diff_ids": list(self.rootfs.diff_ids)},
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ModelConfig:
        """Parse leniently: missing or mistyped keys take defaults; non-JSON is a StoreError."""
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            raise StoreError("invalid model config: not valid JSON") from None
        if not isinstance(obj, dict):
            raise StoreError("invalid model config: not a JSON object")
        raw_rootfs = obj.get("rootfs")
        rootfs_obj: Mapping[str, Any] = raw_rootfs if isinstance(raw_rootfs, dict) else {}
        return cls(
            model_format=_str(obj, "model_format", "gguf"),
            model_family=_str(obj, "model_family", ""),
            model_families=_strs(obj, "model_families"),
            model_type=_str(obj, "model_type", ""),
            file_type=_str(obj, "file_type", ""),
            architecture=_str(obj, "architecture", "amd64"),
            os=_str(obj, "os", "linux"),
            rootfs=RootFS(
                type=_str(rootfs_obj, "type", "layers"), diff_ids=_strs(rootfs_obj, "diff_ids")
            ),
            renderer=_str(obj, "renderer", ""),
            parser=_str(obj, "parser", ""),
            requires=_str(obj, "requires", ""),
            capabilities=_strs(obj, "capabilities"),
            draft_architecture=_str(draft, "architecture", "")
            if isinstance(draft := obj.get("draft"), dict)
            else "",
        )
