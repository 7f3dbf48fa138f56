"""``POST /api/create``: build a model from a checked :class:`~corral.server.create_plan.Plan`.

The request is planned first (:mod:`corral.server.create_plan`: every check that can be made
before the first byte); what can only fail later (a registry, the converter, the quantizer, a
full disk) arrives as a final ``{"error": ...}`` line of the NDJSON stream.

``FROM <model>`` with a model that is neither in the store nor bundled pulls it first, as
Ollama does, its pull progress streamed inside the create stream (all but the pull's own
``success``, which would look like the end of the create to a client). The structured
request may carry ``insecure`` (a corral extension) for a base on a plain-HTTP registry.

A create pins (:class:`BlobPins`) every blob it reuses or writes until its manifest is
written, so deleting the base model mid-create cannot leave it naming a missing blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from corral.api.types import CreateRequest
from corral.errors import BadRequestError, ModelNotFoundError, StoreError
from corral.gguf import read_gguf
from corral.server.create_plan import Client, Plan, Planner, converter
from corral.server.models import ModelCatalog, parse_name
from corral.server.streaming import parse_body, respond
from corral.server.transfer import Event, Transfers
from corral.store import (
    MEDIA_TYPE_DRAFT,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    BlobPins,
    Layer,
    Manifest,
    ModelStore,
    Name,
    sha256_file,
)
from corral.store.layers import config_layer, json_layer, text_layer
from corral.store.quantize import quantize_command
from corral.store.store import TEMP_PREFIX

__all__ = ["Create"]

_QUANTIZE_TIMEOUT_S = 3600.0


class Create:
    """The create handler over one store; a missing ``FROM`` base is pulled by ``transfers``."""

    def __init__(self, store: ModelStore, models: ModelCatalog, transfers: Transfers) -> None:
        self.store = store
        self.planner = Planner(store, models, bf16=transfers.bf16)
        self.transfers = transfers

    async def create(self, request: Request) -> Response:
        req = await parse_body(request, CreateRequest)
        if not req.target:
            raise BadRequestError("model is required")
        name = parse_name(req.target)
        plan = await asyncio.to_thread(self.planner.plan, name, req, Client.of(request))
        return await respond(
            self._create_events(plan), stream=req.stream, merge=lambda items: items[-1]
        )

    async def _create_events(self, plan: Plan) -> AsyncGenerator[Event, None]:
        """The create's progress; every blob it uses stays pinned until the manifest is in."""
        pins = self.store.pins()
        try:
            async for event in self._create_pinned(plan, pins):
                yield event
        finally:
            await asyncio.to_thread(pins.release)

    async def _create_pinned(self, plan: Plan, pins: BlobPins) -> AsyncIterator[Event]:
        if plan.pull_base is not None:
            async for event in self._pull_base(plan, plan.pull_base):
                yield event
        yield {"status": "parsing GGUF"}
        await asyncio.to_thread(self._pin_plan, plan, pins)
        model = plan.model
        if plan.convert_files is not None:
            yield {"status": "converting model"}
            model = await self._convert(plan.convert_files, pins)
            yield {"status": f"creating new layer {model.digest}"}
        elif plan.model_source is not None:
            yield {"status": "transferring model data"}
            info = await asyncio.to_thread(self.store.import_file, plan.model_source, pins=pins)
            model = Layer(MEDIA_TYPE_MODEL, info.digest, info.size)
            yield {"status": f"creating new layer {model.digest}"}
        elif model is not None:
            yield {"status": f"using existing layer {model.digest}"}
        assert model is not None
        if plan.quantize is not None:
            source_type = await asyncio.to_thread(read_gguf, _path(self.store, model))
            if source_type.file_type.upper() != plan.quantize:
                yield {"status": f"quantizing {source_type.file_type} model to {plan.quantize}"}
                model = await self._quantize(model, plan.quantize, pins)
                yield {"status": f"creating new layer {model.digest}"}
        async for event in self._draft(plan, model, pins):
            yield event
        layers = await asyncio.to_thread(self._small_layers, plan, model, pins)
        for layer in layers[1:]:
            yield {"status": f"using layer {layer.digest}"}
        config = await asyncio.to_thread(
            partial(config_layer, extra=plan.config_extra), self.store, model, layers, pins=pins
        )
        yield {"status": "writing manifest"}
        await asyncio.to_thread(
            self.store.write_manifest, plan.name, Manifest(config=config, layers=tuple(layers))
        )
        yield {"status": "success"}

    async def _pull_base(self, plan: Plan, base: Name) -> AsyncIterator[Event]:
        """Pull the FROM model (sharing any pull of it already running), then build on it.

        The pull's own ``success`` is left out: a client could take it for the create's.
        """
        async for event in self.transfers.registry_events(base, plan.insecure, None):
            if event.get("status") != "success":
                yield event
        await asyncio.to_thread(self._use_pulled_base, plan, base)

    def _use_pulled_base(self, plan: Plan, base: Name) -> None:
        found = self.store.find(base)
        if found is None:  # deleted between its pull and now
            raise ModelNotFoundError(base.display_short, hint=False)
        self.planner.use_base(plan, found)
        if plan.quantize:
            self.planner.check_quantizable(plan)

    def _pin_plan(self, plan: Plan, pins: BlobPins) -> None:
        """Pin every blob the plan reuses, then check each is still here: a delete may have
        run between planning and now (after the pin none can take them)."""
        reused = [
            layer
            for layer in (plan.model, plan.base_template, plan.base_system, plan.base_messages)
            if layer is not None
        ]
        reused += [*plan.inherited, *plan.adapters, *plan.base_licenses]
        reused += [plan.draft] if plan.draft is not None else []
        digests = [layer.digest for layer in reused]
        digests += [d for f, d in (plan.convert_files or {}).items() if f]
        pins.add(digests)
        for digest in digests:
            if not self.store.has_blob(digest):
                raise StoreError(
                    f"blob {digest} is missing: it was deleted while the model was being created"
                )

    def _small_layers(self, plan: Plan, model: Layer, pins: BlobPins) -> list[Layer]:
        """Model, projector, adapter, template, system, license(s), params, messages."""
        store = self.store
        layers = [model, *plan.inherited, *plan.adapters]
        if plan.draft is not None:
            layers.append(plan.draft)
        if plan.template is not None:
            if plan.template:
                layers.append(text_layer(store, MEDIA_TYPE_TEMPLATE, plan.template, pins=pins))
        elif plan.base_template is not None:
            layers.append(plan.base_template)
        if plan.system is not None:
            if plan.system:
                layers.append(text_layer(store, MEDIA_TYPE_SYSTEM, plan.system, pins=pins))
        elif plan.base_system is not None:
            layers.append(plan.base_system)
        if plan.licenses is not None:
            layers.extend(
                text_layer(store, MEDIA_TYPE_LICENSE, text, pins=pins) for text in plan.licenses
            )
        else:
            layers.extend(plan.base_licenses)
        if plan.params:
            params = dict(sorted(plan.params.items()))
            layers.append(json_layer(store, MEDIA_TYPE_PARAMS, params, pins=pins))
        if plan.messages is not None:
            if plan.messages:
                layers.append(json_layer(store, MEDIA_TYPE_MESSAGES, plan.messages, pins=pins))
        elif plan.base_messages is not None:
            layers.append(plan.base_messages)
        return layers

    async def _draft(self, plan: Plan, model: Layer, pins: BlobPins) -> AsyncIterator[Event]:
        """Check the draft's vocabulary against the final model (a pulled or converted one
        is known only now) and quantize it when ``draft_quantize`` asks."""
        if plan.draft is None:
            return
        await asyncio.to_thread(self.planner.check_draft, plan, _path(self.store, model))
        if plan.draft_quantize is None:
            return
        source_type = await asyncio.to_thread(read_gguf, _path(self.store, plan.draft))
        if source_type.file_type.upper() == plan.draft_quantize:
            return
        yield {"status": f"quantizing draft {source_type.file_type} model to {plan.draft_quantize}"}
        quantized = await self._quantize(plan.draft, plan.draft_quantize, pins)
        plan.draft = Layer(MEDIA_TYPE_DRAFT, quantized.digest, quantized.size)
        yield {"status": f"creating new layer {plan.draft.digest}"}

    async def _quantize(self, model: Layer, quant_type: str, pins: BlobPins) -> Layer:
        source = _path(self.store, model)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX + "quant-", dir=self.store.blobs_dir)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            process = await asyncio.create_subprocess_exec(
                *quantize_command(str(source), str(tmp), quant_type),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                async with asyncio.timeout(_QUANTIZE_TIMEOUT_S):
                    _, stderr = await process.communicate()
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            if process.returncode != 0:
                tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise StoreError(f"quantization failed: {' '.join(tail) or process.returncode}")
            return await asyncio.to_thread(self._adopt, tmp, MEDIA_TYPE_MODEL, pins)
        finally:
            await asyncio.to_thread(_remove, tmp)

    async def _convert(self, files: dict[str, str], pins: BlobPins) -> Layer:
        convert = converter()
        return await asyncio.to_thread(self._convert_sync, convert, files, pins)

    def _convert_sync(
        self, convert: Callable[..., Path], files: dict[str, str], pins: BlobPins
    ) -> Layer:
        fd, out_name = tempfile.mkstemp(prefix=TEMP_PREFIX + "convert-", dir=self.store.blobs_dir)
        os.close(fd)
        out = Path(out_name)
        try:
            if "" in files:  # a server-side checkpoint folder
                convert(Path(files[""]), out)
            else:
                with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=self.store.root) as d:
                    folder = Path(d)
                    for filename, digest in files.items():
                        target = folder / filename
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(self.store.blob_path(digest))
                    convert(folder, out)
            return self._adopt(out, MEDIA_TYPE_MODEL, pins)
        finally:
            with contextlib.suppress(OSError):
                out.unlink(missing_ok=True)

    def _adopt(self, path: Path, media_type: str, pins: BlobPins) -> Layer:
        """Hash a finished file in ``blobs/`` and move it into place as a (pinned) blob."""
        read_gguf(path)
        digest = sha256_file(path)
        size = path.stat().st_size
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        pins.add([digest])
        if self.store.has_blob(digest):
            path.unlink()
        else:
            self.store.install_blob(path, digest)
        return Layer(media_type, digest, size)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _path(store: ModelStore, layer: Layer) -> Path:
    return store.blob_path(layer.digest)
