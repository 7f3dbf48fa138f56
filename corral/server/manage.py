"""Model management routes: pull, push, create, and the blob upload endpoints.

Each handler checks everything it can *before* the first byte (bad name, bad digest, a
Modelfile that does not parse, a file that is not GGUF) so those errors get their real
status (400/404); what can only fail later (a registry, the quantizer, a full disk) arrives
as a final ``{"error": ...}`` line of the NDJSON stream.

``FROM <model>`` with a model that is neither in the store nor bundled pulls it first, as
Ollama does, its pull progress streamed inside the create stream (all but the pull's own
``success``, which would look like the end of the create to a client). The structured
request may carry ``insecure`` (a corral extension) for a base on a plain-HTTP registry.

Every name, digest, path and byte from the client is hostile: names go through the name
grammar, digests through :func:`parse_digest`, file names in ``files`` must be clean relative
paths, and a blob upload is hashed on the way in and stored only if it matches. Server-side
paths (``FROM /abs/path``, ``ADAPTER /abs/path``, a checkpoint folder) are accepted only
from a loopback client: from anyone else they would let a client import any file the server
can read, and probe which paths exist; such a request gets a 400 decided before the path is
looked at. The CLI uploads local files through ``/api/blobs`` and never needs them.

A create pins (:class:`BlobPins`) every blob it reuses or writes until its manifest is
written, so deleting the base model mid-create cannot leave it naming a missing blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import math
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from corral.api.options import OPTION_KINDS, coerce_option, parse_parameter
from corral.catalog import find_bundled, pull_bundled
from corral.catalog.bundled import BundledModel
from corral.config import Settings
from corral.errors import (
    BadRequestError,
    CatalogError,
    CorralError,
    GGUFError,
    InvalidDigestError,
    InvalidNameError,
    InvalidOptionError,
    ModelNotFoundError,
    NotFoundError,
    StoreError,
)
from corral.gguf import GGUFInfo, read_gguf
from corral.modelfile import MESSAGE_ROLES, CreateFields, parse_modelfile, to_create_fields
from corral.registry import PullOptions, RegistryError, pull_model, push_model
from corral.server.models import ModelCatalog, parse_name
from corral.server.streaming import parse_body, respond
from corral.store import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PARAMS,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    BlobPins,
    Layer,
    Manifest,
    ModelStore,
    Name,
    parse_digest,
    sha256_file,
)
from corral.store.layers import config_layer, json_layer, text_layer
from corral.store.quantize import QUANTIZABLE_FROM, normalize_quant_type, quantize_command
from corral.store.store import TEMP_PREFIX
from corral.templates.prompt import PromptTemplate

__all__ = ["CreateRequest", "Manage", "PushRequest"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]
_Key = tuple[str, str, str, str]

_UPLOAD_BATCH = 4 * 1024 * 1024
_QUANTIZE_TIMEOUT_S = 3600.0
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_FLOAT32_MAX = 3.4028234663852886e38


# ---- wire types -------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CreateRequest(_Request):
    """``POST /api/create``: the old ``modelfile`` text or the structured fields."""

    model: str = ""
    name: str = ""
    modelfile: str | None = None
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None
    quantization: str | None = None
    insecure: bool = False  # corral: pull a missing FROM base over plain HTTP
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


class PushRequest(_Request):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


class PullRequest(_Request):
    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


# ---- create plan ------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """Everything a create needs, checked before streaming starts."""

    name: Name
    model: Layer | None = None  # the GGUF weights, once in the store
    model_source: Path | None = None  # a server-side file still to import
    convert_files: dict[str, str] | None = None  # safetensors checkpoint: path -> digest
    inherited: list[Layer] = field(default_factory=list)  # projector layers kept from a base
    adapters: list[Layer] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    licenses: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    base_template: Layer | None = None
    base_system: Layer | None = None
    base_licenses: list[Layer] = field(default_factory=list)
    base_messages: Layer | None = None
    quantize: str | None = None
    pull_base: Name | None = None  # FROM a model not here: pulled when the stream starts
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class _Client:
    """What a create may do for this client: server paths only from the server's machine."""

    local: bool

    @classmethod
    def of(cls, request: Request) -> _Client:
        return cls(local=_is_loopback(request.client.host if request.client else None))

    def check_server_path(self, what: str, source: str) -> None:
        """Refuse a server path from a remote client, before anything looks at the path."""
        if not self.local:
            raise BadRequestError(
                f"invalid {what} reference: {source} (server paths are accepted only from"
                " the server's own machine: upload the file with POST /api/blobs and name"
                " its digest instead)"
            )


class Manage:
    """The model management handlers over one store."""

    def __init__(self, settings: Settings, store: ModelStore, models: ModelCatalog) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self._pulls: dict[_Key, asyncio.Task[None]] = {}
        self._listeners: dict[_Key, list[asyncio.Queue[Event | BaseException | None]]] = {}

    # ---- blobs ----------------------------------------------------------------------

    async def head_blob(self, request: Request) -> Response:
        digest = parse_digest(request.path_params["digest"])
        if await asyncio.to_thread(self.store.has_blob, digest):
            return Response(status_code=200)
        return Response(status_code=404)

    async def post_blob(self, request: Request) -> Response:
        digest = parse_digest(request.path_params["digest"])
        if await asyncio.to_thread(self.store.has_blob, digest):
            # Drain nothing: the client learns at once that the upload is not needed.
            return Response(status_code=200)
        writer = await asyncio.to_thread(self.store.open_blob_writer)
        try:
            batch: list[bytes] = []
            pending = 0
            async for chunk in request.stream():
                batch.append(chunk)
                pending += len(chunk)
                if pending >= _UPLOAD_BATCH:
                    await asyncio.to_thread(writer.write, b"".join(batch))
                    batch, pending = [], 0
            if batch:
                await asyncio.to_thread(writer.write, b"".join(batch))
            _, created = await asyncio.to_thread(writer.commit, digest)
        finally:
            await asyncio.to_thread(writer.abort)
        return Response(status_code=201 if created else 200)

    # ---- create ---------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        req = await parse_body(request, CreateRequest)
        if not req.target:
            raise BadRequestError("model is required")
        name = parse_name(req.target)
        plan = await asyncio.to_thread(self._plan, name, req, _Client.of(request))
        return await respond(
            self._create_events(plan), stream=req.stream, merge=lambda items: items[-1]
        )

    def _plan(self, name: Name, req: CreateRequest, client: _Client) -> _Plan:
        """Check the request and resolve its base; blocking (store and GGUF reads)."""
        existing = self.store.find(name)
        plan = _Plan(name=existing or name, insecure=req.insecure)
        fields = _fields_from_request(req)
        quantize = req.quantize or req.quantization
        if quantize:
            plan.quantize = normalize_quant_type(quantize)
        if fields.from_ and req.files:
            raise BadRequestError("specify either 'from' or 'files', not both")
        if req.files:
            self._plan_files(plan, req.files)
        elif fields.from_:
            self._plan_from(plan, fields.from_.strip(), client)
        else:
            raise BadRequestError("neither 'from' or 'files' was specified")
        adapters = dict(req.adapters or {})
        for i, raw in enumerate(fields.adapters):
            adapters[f"adapter-{i}"] = self._adapter_digest(raw, client)
        if len(adapters) > 1:
            raise BadRequestError("only one adapter is currently supported")
        for filename, raw_digest in adapters.items():
            _check_relative(filename)
            digest = _digest(raw_digest)
            path = self._existing_blob(digest)
            _read_gguf_upload(path)
            plan.adapters = [Layer(MEDIA_TYPE_ADAPTER, digest, path.stat().st_size)]
        if fields.template is not None:
            PromptTemplate.from_sources(fields.template or None)  # TemplateError (400) if bad
            plan.template = fields.template
        if fields.system is not None:
            plan.system = fields.system
        if fields.license:
            plan.licenses = list(fields.license)
        plan.params.update(fields.parameters)
        if fields.messages:
            plan.messages = [dict(m) for m in fields.messages]
        if plan.quantize:
            self._check_quantizable(plan)
        return plan

    def _plan_from(self, plan: _Plan, source: str, client: _Client) -> None:
        digest = _blob_reference(self.store, source)
        if digest is not None:
            path = self._existing_blob(digest)
            _read_gguf_upload(path)
            plan.model = Layer(MEDIA_TYPE_MODEL, digest, path.stat().st_size)
            return
        if _looks_like_path(source):
            self._plan_path(plan, source, client)
            return
        try:
            base_name = parse_name(source)
        except InvalidNameError:
            raise BadRequestError(f"invalid model reference: {source}") from None
        self._plan_base_model(plan, source, base_name)

    def _plan_path(self, plan: _Plan, source: str, client: _Client) -> None:
        path = Path(os.path.expanduser(source))
        if not path.is_absolute():
            raise BadRequestError(
                f"invalid model reference: {path} (a relative path means nothing to the"
                " server: upload the file with POST /api/blobs and name it in 'files')"
            )
        client.check_server_path("model", source)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise BadRequestError(f"no GGUF file or checkpoint (config.json) in {path}")
            _converter()  # 400 now if conversion is not available
            plan.convert_files = {"": str(path)}
            return
        if not path.is_file():
            raise BadRequestError(f"invalid model reference: {path} (no such file)")
        _read_gguf_upload(path)
        plan.model_source = path

    def _plan_base_model(self, plan: _Plan, raw: str, base_name: Name) -> None:
        """A local or bundled base is used now; any other is pulled once streaming starts."""
        found = self.store.find(base_name)
        if found is None:
            bundled = find_bundled(base_name)
            if bundled is None:
                plan.pull_base = base_name
                return
            self._import_bundled(base_name, bundled)
            found = base_name
        self._use_base(plan, found)

    def _use_base(self, plan: _Plan, found: Name) -> None:
        """Take the base's layers; its parameters go under those the request sets."""
        base = self.models.resolve(found.display_long)
        manifest = base.manifest
        plan.model = manifest.layer(MEDIA_TYPE_MODEL)
        plan.inherited = list(manifest.layers_of(MEDIA_TYPE_PROJECTOR))
        if not plan.adapters:
            plan.adapters = list(manifest.layers_of(MEDIA_TYPE_ADAPTER))
        plan.base_template = manifest.layer(MEDIA_TYPE_TEMPLATE)
        plan.base_system = manifest.layer(MEDIA_TYPE_SYSTEM)
        plan.base_licenses = list(manifest.layers_of(MEDIA_TYPE_LICENSE))
        plan.base_messages = manifest.layer(MEDIA_TYPE_MESSAGES)
        plan.params = {**base.params, **plan.params}
        if plan.model is None:
            raise BadRequestError(f"{found.display_short} has no model layer to build on")

    def _import_bundled(self, name: Name, bundled: BundledModel) -> None:
        try:
            pull_bundled(self.store, name, bundled, lambda _event: None)
        except CatalogError as exc:
            raise ModelNotFoundError(name.display_short, hint=False) from exc

    def _plan_files(self, plan: _Plan, files: dict[str, str]) -> None:
        if not files:
            raise BadRequestError("no files provided to convert")
        checked: dict[str, str] = {}
        for filename, raw_digest in files.items():
            _check_relative(filename)
            checked[filename] = _digest(raw_digest)
            self._existing_blob(checked[filename])
        if any(PurePosixPath(f).name == "config.json" for f in checked):
            _converter()
            plan.convert_files = checked
            return
        ggufs = [f for f in checked if f.lower().endswith(".gguf")] or list(checked)
        if len(ggufs) != 1:
            raise BadRequestError("only one GGUF file is supported")
        digest = checked[ggufs[0]]
        path = self.store.blob_path(digest)
        _read_gguf_upload(path)
        plan.model = Layer(MEDIA_TYPE_MODEL, digest, path.stat().st_size)

    def _adapter_digest(self, raw: str, client: _Client) -> str:
        source = raw.strip()
        digest = _blob_reference(self.store, source)
        if digest is not None:
            return digest
        path = Path(os.path.expanduser(source))
        if not path.is_absolute():
            raise BadRequestError(
                f"invalid adapter reference: {source} (upload it with POST /api/blobs and"
                " name it in 'adapters')"
            )
        client.check_server_path("adapter", source)
        if not path.is_file():
            raise BadRequestError(f"invalid adapter reference: {source} (no such file)")
        _read_gguf_upload(path)
        return self.store.import_file(path).digest

    def _existing_blob(self, digest: str) -> Path:
        path = self.store.blob_path(digest)
        if not path.is_file():
            raise BadRequestError(
                f'blob "{digest}" not found: upload it with POST /api/blobs/{digest} first'
            )
        return path

    def _check_quantizable(self, plan: _Plan) -> None:
        if plan.convert_files is not None:
            return  # converted to F16 first
        path = (
            plan.model_source
            if plan.model_source is not None
            else self.store.blob_path(plan.model.digest)
            if plan.model is not None
            else None
        )
        if path is None:
            return
        file_type = read_gguf(path).file_type.upper()
        if file_type not in QUANTIZABLE_FROM and file_type != plan.quantize:
            raise BadRequestError("quantization is only supported for F16, BF16 and F32 models")

    async def _create_events(self, plan: _Plan) -> AsyncGenerator[Event, None]:
        """The create's progress; every blob it uses stays pinned until the manifest is in."""
        pins = self.store.pins()
        try:
            async for event in self._create_pinned(plan, pins):
                yield event
        finally:
            await asyncio.to_thread(pins.release)

    async def _create_pinned(self, plan: _Plan, pins: BlobPins) -> AsyncIterator[Event]:
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
        layers = await asyncio.to_thread(self._small_layers, plan, model, pins)
        for layer in layers[1:]:
            yield {"status": f"using layer {layer.digest}"}
        config = await asyncio.to_thread(config_layer, self.store, model, layers, pins=pins)
        yield {"status": "writing manifest"}
        await asyncio.to_thread(
            self.store.write_manifest, plan.name, Manifest(config=config, layers=tuple(layers))
        )
        yield {"status": "success"}

    async def _pull_base(self, plan: _Plan, base: Name) -> AsyncIterator[Event]:
        """Pull the FROM model (sharing any pull of it already running), then build on it.

        The pull's own ``success`` is left out: a client could take it for the create's.
        """
        async for event in self._registry_events(base, plan.insecure, None):
            if event.get("status") != "success":
                yield event
        await asyncio.to_thread(self._use_pulled_base, plan, base)

    def _use_pulled_base(self, plan: _Plan, base: Name) -> None:
        found = self.store.find(base)
        if found is None:  # deleted between its pull and now
            raise ModelNotFoundError(base.display_short, hint=False)
        self._use_base(plan, found)
        if plan.quantize:
            self._check_quantizable(plan)

    def _pin_plan(self, plan: _Plan, pins: BlobPins) -> None:
        """Pin every blob the plan reuses, then check each is still here: a delete may have
        run between planning and now (after the pin none can take them)."""
        reused = [
            layer
            for layer in (plan.model, plan.base_template, plan.base_system, plan.base_messages)
            if layer is not None
        ]
        reused += [*plan.inherited, *plan.adapters, *plan.base_licenses]
        digests = [layer.digest for layer in reused]
        digests += [d for f, d in (plan.convert_files or {}).items() if f]
        pins.add(digests)
        for digest in digests:
            if not self.store.has_blob(digest):
                raise StoreError(
                    f"blob {digest} is missing: it was deleted while the model was being created"
                )

    def _small_layers(self, plan: _Plan, model: Layer, pins: BlobPins) -> list[Layer]:
        """Model, projector, adapter, template, system, license(s), params, messages."""
        store = self.store
        layers = [model, *plan.inherited, *plan.adapters]
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
        convert = _converter()
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

    # ---- pull -----------------------------------------------------------------------

    async def pull(self, request: Request) -> Response:
        req = await parse_body(request, PullRequest)
        raw = req.target
        insecure = req.insecure
        if raw.startswith("http://") and not insecure:
            raise BadRequestError("insecure protocol http")
        name = parse_name(raw)
        existing = await asyncio.to_thread(self.store.find, name)
        if existing is not None:
            name = existing
        bundled = find_bundled(name)
        if bundled is not None and _bundled_installed(bundled):
            events = self._bundled_events(name, bundled)
        else:
            events = self._registry_events(name, insecure, bundled)
        return await respond(events, stream=req.stream, merge=lambda items: items[-1])

    async def _bundled_events(
        self, name: Name, bundled: BundledModel
    ) -> AsyncGenerator[Event, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        def report(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        async def run() -> None:
            try:
                await asyncio.to_thread(pull_bundled, self.store, name, bundled, report)
            except BaseException as exc:
                queue.put_nowait(exc)
                raise
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(run())
        async for event in _coalesce(_drain(queue)):
            yield event
        with contextlib.suppress(BaseException):
            await task

    async def _registry_events(
        self, name: Name, insecure: bool, bundled: BundledModel | None
    ) -> AsyncGenerator[Event, None]:
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()
        options = PullOptions(insecure=insecure)
        key = name.casefold_key()
        task = self._pulls.get(key)
        if task is None or task.done():
            task = asyncio.create_task(self._shared_pull(name, options, key))
            self._pulls[key] = task
        listeners = self._listeners.setdefault(key, [])
        listeners.append(queue)
        try:
            async for event in _coalesce(_drain(queue)):
                yield event
        except RegistryError as exc:
            if bundled is not None and exc.unreachable:
                raise CatalogError(
                    f"{exc.message}; the bundled copy of {name.display_short} is not"
                    " installed either"
                ) from exc
            raise
        finally:
            with contextlib.suppress(ValueError):
                listeners.remove(queue)

    async def _shared_pull(self, name: Name, options: PullOptions, key: _Key) -> None:
        """One download per model however many clients ask; every listener sees events."""

        def broadcast(item: Event | BaseException | None) -> None:
            for queue in list(self._listeners.get(key, [])):
                queue.put_nowait(item)

        try:
            await pull_model(self.store, name, broadcast, options)
        except CorralError as exc:
            broadcast(exc)
        except Exception as exc:
            logger.exception("pull of %s failed", name.display_short)
            broadcast(StoreError(f"pull failed: {exc}"))
        finally:
            broadcast(None)
            if self._pulls.get(key) is asyncio.current_task():
                del self._pulls[key]

    # ---- push -----------------------------------------------------------------------

    async def push(self, request: Request) -> Response:
        req = await parse_body(request, PushRequest)
        if not req.target:
            raise BadRequestError("model is required")
        if req.target.startswith("http://") and not req.insecure:
            raise BadRequestError("insecure protocol http")
        name = parse_name(req.target)
        found = await asyncio.to_thread(self.store.find, name)
        if found is None:
            raise NotFoundError(f"model '{req.target}' not found")
        queue: asyncio.Queue[Event | BaseException | None] = asyncio.Queue()

        async def run() -> None:
            try:
                await push_model(self.store, found, queue.put_nowait, insecure=req.insecure)
            except BaseException as exc:
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        async def events() -> AsyncGenerator[Event, None]:
            task = asyncio.create_task(run())
            try:
                async for event in _coalesce(_drain(queue)):
                    yield event
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(BaseException):
                    await task

        return await respond(events(), stream=req.stream, merge=lambda items: items[-1])


# ---- helpers ----------------------------------------------------------------------------


async def _drain(
    queue: asyncio.Queue[Event | BaseException | None],
) -> AsyncIterator[Event]:
    while True:
        item = await queue.get()
        if item is None:
            return
        if isinstance(item, CorralError):
            raise item
        if isinstance(item, BaseException):
            raise StoreError(f"internal error: {item}") from item
        yield item


async def _coalesce(events: AsyncIterator[Event]) -> AsyncIterator[Event]:
    """At most one byte-progress event per status per 1% (and always the last one)."""
    last: dict[str, int] = {}
    async for event in events:
        total = event.get("total")
        status = event.get("status", "")
        if total and "completed" in event:
            percent = int(event["completed"] * 100 / total) if total else 100
            if last.get(status) == percent and event["completed"] < total:
                continue
            last[status] = percent
        yield event


def _fields_from_request(req: CreateRequest) -> CreateFields:
    """The Modelfile (if any) overlaid with the structured fields given explicitly."""
    if req.modelfile is not None:
        base = to_create_fields(parse_modelfile(req.modelfile))
    else:
        base = CreateFields(from_=req.from_ or "")
    parameters = dict(base.parameters)
    if req.parameters:
        parameters.update(_typed_parameters(req.parameters))
    license_given: tuple[str, ...] = base.license
    if req.license is not None:
        license_given = (req.license,) if isinstance(req.license, str) else tuple(req.license)
    messages = base.messages
    if req.messages is not None:
        messages = tuple(_message(m) for m in req.messages)
    return CreateFields(
        from_=req.from_ if req.from_ else base.from_,
        adapters=base.adapters,
        parameters=parameters,
        template=req.template if req.template is not None else base.template,
        system=req.system if req.system is not None else base.system,
        license=license_given,
        messages=messages,
    )


def _typed_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower()
        if name not in OPTION_KINDS:
            raise InvalidOptionError(f"unknown parameter '{key}'")
        if value is None:
            continue
        if isinstance(value, str) and OPTION_KINDS[name] != "strs":
            checked[name] = parse_parameter(name, value)
        else:
            checked[name] = _in_range(coerce_option(name, value), value)
    return checked


def _in_range(typed: Any, raw: Any) -> Any:
    """A JSON parameter must fit Ollama's types (int64, float32) as a Modelfile's must:
    a model saved with 1e30 as ``num_ctx`` would fail every load, far from its cause."""
    if isinstance(typed, int) and not isinstance(typed, bool):
        if not _INT64_MIN <= typed <= _INT64_MAX:
            raise InvalidOptionError(f"invalid int value [{raw}]")
    elif isinstance(typed, float) and not (math.isfinite(typed) and abs(typed) <= _FLOAT32_MAX):
        raise InvalidOptionError(f"invalid float value [{raw}]")
    return typed


def _message(raw: dict[str, Any]) -> dict[str, str]:
    role, content = raw.get("role"), raw.get("content", "")
    if role not in MESSAGE_ROLES:
        raise BadRequestError('message role must be one of "system", "user", or "assistant"')
    if not isinstance(content, str):
        raise BadRequestError("message content must be a string")
    return {"role": role, "content": content}


def _digest(raw: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise InvalidDigestError()
    return parse_digest(raw)


def _check_relative(filename: str) -> None:
    """A ``files`` key must be a clean relative path: it becomes a path in a temp folder."""
    parts = filename.split("/")
    if (
        not filename
        or filename.startswith("/")
        or "\\" in filename
        or "\x00" in filename
        or any(part in ("", ".", "..") for part in parts)
        or (len(filename) > 1 and filename[1] == ":")
    ):
        raise BadRequestError("file path must be relative")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", ".\\")) or source.lower().endswith(
        (".gguf", ".bin")
    )


def _blob_reference(store: ModelStore, source: str) -> str | None:
    """The digest ``source`` names: ``@sha256:<hex>``, ``sha256:<hex>``, or a blob file of
    this store (``show --modelfile`` prints those); None for anything else.

    Judged from the text alone, never the disk, so any client may use it: it tells no more
    than ``HEAD /api/blobs`` does.
    """
    if source.startswith(("@", "sha256")):
        return _digest(source.removeprefix("@"))
    path = os.path.expanduser(source)
    if not os.path.isabs(path):
        return None
    folder, _, name = os.path.normpath(path).rpartition("/")
    if Path(folder) != store.blobs_dir or not name.startswith("sha256-"):
        return None
    try:
        return parse_digest(name)
    except InvalidDigestError:
        return None


def _is_loopback(host: str | None) -> bool:
    """Whether a client address is this machine (127.0.0.0/8, ::1, IPv4-mapped loopback).

    Anything else, a name included (Starlette's test client says ``testclient``), is not.
    Behind a reverse proxy on the same machine every client looks local: such a setup must
    strip server paths itself.
    """
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _read_gguf_upload(path: Path) -> GGUFInfo:
    try:
        return read_gguf(path)
    except GGUFError as exc:
        raise BadRequestError(f"supplied file was not in GGUF format: {exc.message}") from exc
    except OSError as exc:
        raise BadRequestError(f"cannot read {path}: {exc.strerror}") from exc


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _path(store: ModelStore, layer: Layer) -> Path:
    return store.blob_path(layer.digest)


def _converter() -> Callable[..., Path]:
    """``corral.convert.convert_checkpoint`` when that package is there; 400 otherwise."""
    try:
        module = importlib.import_module("corral.convert")
    except ImportError:
        module = None
    convert = getattr(module, "convert_checkpoint", None)
    if convert is None:
        raise BadRequestError("safetensors conversion not available")
    return convert  # type: ignore[no-any-return]


def _bundled_installed(bundled: BundledModel) -> bool:
    try:
        bundled.paths()
    except CatalogError:
        return False
    return True
