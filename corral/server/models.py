"""A model as the request handlers need it: resolved from the store, read once, cached.

``ModelCatalog.resolve(raw_name)`` validates the name (hostile input: it becomes a path),
finds the manifest (case-insensitively, Ollama's newest behaviour), and reads its layers:
the GGUF blob, template, system prompt, parameters, license and messages. Results are
cached per manifest digest, so a hot path does one small file read to check freshness.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from corral.api.options import validate_options
from corral.errors import BadRequestError, InvalidNameError, ModelNotFoundError, StoreError
from corral.gguf import ArraySummary, GGUFInfo, format_parameter_count, read_gguf
from corral.modelfile import Command, Modelfile, format_modelfile
from corral.scheduler import ModelSpec
from corral.store import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_DRAFT,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    Manifest,
    ModelConfig,
    ModelStore,
    Name,
    blob_filename,
)
from corral.templates.prompt import PromptTemplate

__all__ = ["ModelCatalog", "ResolvedModel", "gguf_is_reranker", "parse_name"]

logger = logging.getLogger(__name__)
_RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK


def gguf_is_reranker(arch: str, metadata: Mapping[str, Any]) -> bool:
    """Whether a GGUF asks for RANK pooling or carries a classifier's labels."""
    return (
        metadata.get(f"{arch}.pooling_type") == _RANK_POOLING
        or f"{arch}.classifier.output_labels" in metadata
    )


def parse_name(raw: str) -> Name:
    """A name for the routes that write or transfer (pull, push, create, copy, delete).

    A ``name@sha256:...`` is refused there (400): it pins one exact manifest, which those
    routes cannot honour, and dropping it silently would act on whatever the tag holds.
    """
    name, digest = parse_reference(raw)
    if digest is not None:
        raise BadRequestError(
            f"invalid model name {raw!r}: a digest (@sha256:...) is accepted only to use a"
            " model already here, not to pull, push, create, copy or delete one"
        )
    return name


def parse_reference(raw: str) -> tuple[Name, str | None]:
    """A name and its ``@digest`` (normalised) or None; 400 for anything malformed."""
    try:
        return Name.parse_reference(raw)
    except InvalidNameError:
        raise
    except Exception as exc:  # pragma: no cover - the parser raises only InvalidNameError
        raise InvalidNameError() from exc


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    name: Name
    requested: str
    manifest: Manifest
    digest: str
    modified_at: datetime
    model_path: str
    gguf: GGUFInfo
    config: ModelConfig
    template_source: str
    system: str
    params: dict[str, Any]
    license: list[str]
    messages: list[dict[str, Any]]
    has_adapter: bool
    has_projector: bool
    #: the LoRA blobs (``application/vnd.ollama.image.adapter`` layers) the runner applies
    adapter_paths: tuple[str, ...] = ()
    #: the vision projector blob (``application/vnd.ollama.image.projector``), if any
    projector_path: str | None = None
    #: the draft model blob (``application/vnd.ollama.image.draft``): speculative decoding
    draft_path: str | None = None
    _template: list[PromptTemplate] = field(default_factory=list, compare=False, repr=False)

    @property
    def template(self) -> PromptTemplate:
        if not self._template:
            self._template.append(
                PromptTemplate.from_sources(self.template_source or None, self.gguf.chat_template)
            )
        return self._template[0]

    @property
    def is_embedding(self) -> bool:
        return self.gguf.architecture in {"bert", "nomic-bert", "jina-bert-v2"} or (
            self.gguf.metadata.get(f"{self.gguf.architecture}.pooling_type") is not None
            and self.gguf.architecture.endswith("bert")
        )

    @property
    def is_reranker(self) -> bool:
        """Whether the model scores (query, document) pairs (``/api/rerank``)."""
        return gguf_is_reranker(self.gguf.architecture, self.gguf.metadata)

    def details(self) -> dict[str, Any]:
        family = self.config.model_family or self.gguf.architecture
        families = list(self.config.model_families) or [family]
        return {
            "parent_model": "",
            "format": self.config.model_format or "gguf",
            "family": family,
            "families": families,
            "parameter_size": self.config.model_type
            or format_parameter_count(self.gguf.parameter_count),
            "quantization_level": self.config.file_type or self.gguf.file_type,
        }

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name.display_short,
            model=self.requested,
            digest=self.digest,
            model_path=self.model_path,
            size_bytes=self.manifest.total_size,
            context_length=self.gguf.context_length,
            details=self.details(),
            adapter_paths=self.adapter_paths,
            projector_path=self.projector_path,
            draft_path=self.draft_path,
        )

    def modelfile(self, system: str, params: dict[str, Any]) -> str:
        """The Modelfile that recreates this model (``show``'s ``modelfile``).

        Written with the Modelfile writer, so any template, system prompt, license or
        message (quotes, ``\"\"\"``, newlines included) reads back to the same value, and
        ``create`` over this text makes the same manifest. FROM names the weights blob.
        """
        blobs = Path(self.model_path).parent
        commands = [Command("from", self.model_path)]
        if self.projector_path:  # a second FROM, as Ollama writes a vision model's projector
            commands.append(Command("from", self.projector_path))
        for layer in self.manifest.layers_of(MEDIA_TYPE_ADAPTER):
            commands.append(Command("adapter", str(blobs / blob_filename(layer.digest))))
        if self.draft_path:
            commands.append(Command("draft", self.draft_path))
        if self.template_source:
            commands.append(Command("template", self.template_source))
        if system:
            commands.append(Command("system", system))
        for key in ("renderer", "parser", "requires"):
            value = getattr(self.config, key)
            if value:
                commands.append(Command(key, value))
        for key in sorted(params):
            value = params[key]
            for item in value if isinstance(value, list | tuple) else [value]:
                commands.append(Command("parameter", _parameter_text(item), key))
        commands.extend(Command("license", text) for text in self.license)
        for message in self.messages:
            role, content = message.get("role"), message.get("content", "")
            if isinstance(role, str) and isinstance(content, str):
                commands.append(Command("message", content, role))
        header = (
            'Modelfile generated by "corral show"\n'
            "To build a new Modelfile based on this, replace FROM with:\n"
            f"FROM {self.name.display_short}"
        )
        return format_modelfile(Modelfile(tuple(commands)), header=header)

    def tensors(self) -> list[dict[str, Any]]:
        """``show``'s ``tensors``: each tensor's name, ggml type name and shape, in file
        order (as Ollama's ``api.Tensor``)."""
        return [
            {"name": t.name, "type": t.ggml_type, "shape": list(t.shape)} for t in self.gguf.tensors
        ]

    def model_info(self, *, verbose: bool = False) -> dict[str, Any]:
        """GGUF metadata as Ollama's ``model_info``: arrays of more than five elements are
        emptied (``[]``, as newest Ollama) unless verbose."""
        info: dict[str, Any] = {}
        source = (
            read_gguf(self.model_path, full_arrays=True).metadata
            if verbose
            else (self.gguf.metadata)
        )
        for key, value in source.items():
            if key in {"general.name", "tokenizer.chat_template"}:
                continue
            elided = isinstance(value, list) and len(value) > 5 and not verbose
            if isinstance(value, ArraySummary) or elided:
                info[key] = []
            else:
                info[key] = value
        info["general.parameter_count"] = self.gguf.parameter_count
        return dict(sorted(info.items()))

    def projector_info(self, *, verbose: bool = False) -> dict[str, Any]:
        """The projector's GGUF metadata, shaped as ``model_info`` (``show``'s
        ``projector_info``); empty without a projector."""
        if not self.projector_path:
            return {}
        projector = read_gguf(self.projector_path, full_arrays=verbose)
        info: dict[str, Any] = {}
        for key, value in projector.metadata.items():
            if key == "general.name":
                continue
            elided = isinstance(value, list) and len(value) > 5 and not verbose
            info[key] = [] if isinstance(value, ArraySummary) or elided else value
        info["general.parameter_count"] = projector.parameter_count
        return dict(sorted(info.items()))


def _parameter_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class ModelCatalog:
    """Resolves names against the store, caching what was read per manifest digest."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._cache: dict[str, ResolvedModel] = {}

    def resolve(self, raw: str) -> ResolvedModel:
        """Blocking (file reads): call through ``asyncio.to_thread``."""
        name, digest = parse_reference(raw)
        found = self.store.find(name)
        if found is None:
            raise ModelNotFoundError(raw)
        try:
            entry = self.store.get(found)
        except ModelNotFoundError:
            raise ModelNotFoundError(raw) from None
        if digest is not None and digest.removeprefix("sha256:") != entry.digest:
            # name@digest is that exact manifest: another one under the tag is not it
            raise ModelNotFoundError(raw)
        cached = self._cache.get(entry.digest)
        if cached is not None and cached.name == found:
            return cached
        resolved = self._read(found, raw, entry.manifest, entry.digest, entry.modified_at)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[entry.digest] = resolved
        return resolved

    def _read(
        self, name: Name, raw: str, manifest: Manifest, digest: str, modified_at: datetime
    ) -> ResolvedModel:
        model_layer = manifest.layer(MEDIA_TYPE_MODEL)
        if model_layer is None:
            raise StoreError(f"model '{raw}' has no model layer")
        model_path = self.store.blob_path(model_layer.digest)
        if not model_path.is_file():
            raise StoreError(f"model '{raw}' is incomplete: its weights blob is missing")
        gguf = read_gguf(model_path)
        config = ModelConfig.from_json(self._blob(manifest.config.digest))
        params: dict[str, Any] = {}
        params_layer = manifest.layer(MEDIA_TYPE_PARAMS)
        if params_layer is not None:
            try:
                loaded = json.loads(self._blob(params_layer.digest))
                params = validate_options(loaded if isinstance(loaded, dict) else {})
            except (ValueError, StoreError) as exc:
                logger.warning("ignoring unreadable params of %s: %s", raw, exc)
        messages: list[dict[str, Any]] = []
        messages_layer = manifest.layer(MEDIA_TYPE_MESSAGES)
        if messages_layer is not None:
            try:
                loaded_messages = json.loads(self._blob(messages_layer.digest))
                if isinstance(loaded_messages, list):
                    messages = [m for m in loaded_messages if isinstance(m, dict)]
            except ValueError:
                logger.warning("ignoring unreadable messages of %s", raw)
        return ResolvedModel(
            name=name,
            requested=raw,
            manifest=manifest,
            digest=digest,
            modified_at=modified_at,
            model_path=str(model_path),
            gguf=gguf,
            config=config,
            template_source=self._text(manifest, MEDIA_TYPE_TEMPLATE),
            system=self._text(manifest, MEDIA_TYPE_SYSTEM),
            params=params,
            license=[
                self._blob(layer.digest).decode("utf-8", errors="replace")
                for layer in manifest.layers_of(MEDIA_TYPE_LICENSE)
            ],
            messages=messages,
            has_adapter=manifest.layer(MEDIA_TYPE_ADAPTER) is not None,
            has_projector=manifest.layer(MEDIA_TYPE_PROJECTOR) is not None,
            adapter_paths=self._adapter_paths(raw, manifest),
            projector_path=self._projector_path(raw, manifest),
            draft_path=self._draft_path(raw, manifest),
        )

    def _adapter_paths(self, raw: str, manifest: Manifest) -> tuple[str, ...]:
        """Paths of the model's LoRA blobs; a missing one fails now, not in the runner."""
        paths = []
        for layer in manifest.layers_of(MEDIA_TYPE_ADAPTER):
            path = self.store.blob_path(layer.digest)
            if not path.is_file():
                raise StoreError(f"model '{raw}' is incomplete: its adapter blob is missing")
            paths.append(str(path))
        return tuple(paths)

    def _projector_path(self, raw: str, manifest: Manifest) -> str | None:
        """The first projector blob (as Ollama, which loads one); missing fails now."""
        layer = manifest.layer(MEDIA_TYPE_PROJECTOR)
        if layer is None:
            return None
        path = self.store.blob_path(layer.digest)
        if not path.is_file():
            raise StoreError(f"model '{raw}' is incomplete: its projector blob is missing")
        return str(path)

    def _draft_path(self, raw: str, manifest: Manifest) -> str | None:
        """The draft model's blob (Ollama uses one); a missing one fails now."""
        layer = manifest.layer(MEDIA_TYPE_DRAFT)
        if layer is None:
            return None
        path = self.store.blob_path(layer.digest)
        if not path.is_file():
            raise StoreError(f"model '{raw}' is incomplete: its draft model blob is missing")
        return str(path)

    def _blob(self, digest: str) -> bytes:
        path = self.store.blob_path(digest)
        try:
            if path.stat().st_size > 16 * 1024 * 1024:
                raise StoreError(f"blob {digest} is too large to be a text layer")
            return path.read_bytes()
        except OSError as exc:
            raise StoreError(f"blob {digest} is missing from the store") from exc

    def _text(self, manifest: Manifest, media_type: str) -> str:
        layer = manifest.layer(media_type)
        if layer is None:
            return ""
        return self._blob(layer.digest).decode("utf-8", errors="replace")
