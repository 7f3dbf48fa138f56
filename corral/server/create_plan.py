"""The plan of a create: every check that can be made before the first byte of the answer.

A bad name or digest, a Modelfile that does not parse, a file that is not GGUF, a base that
cannot be used: each is found here, so it gets its real status (400/404) rather than an error
line inside a 200 stream. The result is a :class:`Plan` that :mod:`corral.server.create`
builds.

Every name, digest, path and byte from the client is hostile: names go through the name
grammar, digests through :func:`parse_digest`, file names in ``files`` must be clean relative
paths. Server-side paths (``FROM /abs/path``, ``ADAPTER /abs/path``, a checkpoint folder) are
accepted only from a loopback client: from anyone else they would let a client import any
file the server can read, and probe which paths exist; such a request gets a 400 decided
before the path is looked at. The CLI uploads local files through ``/api/blobs`` and never
needs them.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from starlette.requests import Request

from corral.api.options import OPTION_KINDS, typed_option
from corral.api.types import CreateRequest
from corral.catalog import find_bundled, pull_bundled
from corral.catalog.bundled import BundledModel
from corral.errors import (
    BadRequestError,
    CatalogError,
    GGUFError,
    InvalidDigestError,
    InvalidNameError,
    InvalidOptionError,
    ModelNotFoundError,
)
from corral.gguf import GGUFInfo, read_gguf
from corral.modelfile import MESSAGE_ROLES, CreateFields, parse_modelfile, to_create_fields
from corral.server.create_draft import (
    DraftSource,
    check_draft_quantizable,
    check_same_vocabulary,
)
from corral.server.create_info import config_extra
from corral.server.create_vision import split_file_projectors, split_from_projectors
from corral.server.models import ModelCatalog, parse_name
from corral.store import (
    MEDIA_TYPE_ADAPTER,
    MEDIA_TYPE_DRAFT,
    MEDIA_TYPE_LICENSE,
    MEDIA_TYPE_MESSAGES,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_PROJECTOR,
    MEDIA_TYPE_SYSTEM,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    ModelConfig,
    ModelStore,
    Name,
    parse_digest,
)
from corral.store.quantize import QUANTIZABLE_FROM, normalize_quant_type
from corral.templates.prompt import PromptTemplate

__all__ = ["Client", "Plan", "Planner", "converter"]


@dataclass(slots=True)
class Plan:
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
    #: the config blob's RENDERER, PARSER, REQUIRES and info capabilities (see
    #: ``create_info``): the request's, else the base model's
    config_extra: ModelConfig = field(default_factory=ModelConfig)
    pull_base: Name | None = None  # FROM a model not here: pulled when the stream starts
    insecure: bool = False
    #: the draft model (``create_draft``): the request's, else the base model's
    draft: Layer | None = None
    draft_quantize: str | None = None
    draft_checked: bool = False  # its vocabulary was compared with the model's


@dataclass(frozen=True, slots=True)
class Client:
    """What a create may do for this client: server paths only from the server's machine."""

    local: bool

    @classmethod
    def of(cls, request: Request) -> Client:
        return cls(local=_is_loopback(request.client.host if request.client else None))

    def check_server_path(self, what: str, source: str) -> None:
        """Refuse a server path from a remote client, before anything looks at the path."""
        if not self.local:
            raise BadRequestError(
                f"invalid {what} reference: {source} (server paths are accepted only from"
                " the server's own machine: upload the file with POST /api/blobs and name"
                " its digest instead)"
            )


class Planner:
    """Checks create requests against one store and resolves their bases."""

    def __init__(
        self, store: ModelStore, models: ModelCatalog, *, bf16: Callable[[], bool] = lambda: False
    ) -> None:
        self.store = store
        self.models = models
        self.bf16 = bf16  # whether a bundled checkpoint imports as BF16 (see Transfers)

    def plan(self, name: Name, req: CreateRequest, client: Client) -> Plan:
        """Check the request and resolve its base; blocking (store and GGUF reads)."""
        existing = self.store.find(name)
        plan = Plan(name=existing or name, insecure=req.insecure)
        fields = _fields_from_request(req)
        quantize = req.quantize or req.quantization
        if quantize:
            plan.quantize = normalize_quant_type(quantize)
        files = dict(req.files or {})
        projectors = split_file_projectors(self.store, files)  # clip GGUFs (create_vision)
        source, named = split_from_projectors(
            self.store,
            fields.from_all or ((fields.from_,) if fields.from_ else ()),
            blob_reference=lambda raw: _blob_reference(self.store, raw),
            check_server_path=lambda raw: client.check_server_path("model", raw),
        )
        projectors += named
        if source and files:
            raise BadRequestError("specify either 'from' or 'files', not both")
        if files:
            self._plan_files(plan, files)
        elif source:
            self._plan_from(plan, source.strip(), client)
        elif projectors:
            raise BadRequestError("no model to go with the projector: add the model's GGUF")
        else:
            raise BadRequestError("neither 'from' or 'files' was specified")
        if projectors:  # the request's projector replaces a base model's
            plan.inherited = projectors
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
        plan.config_extra = config_extra(fields, req.info, plan.config_extra)
        if plan.quantize:
            self.check_quantizable(plan)
        self._plan_draft(plan, req, fields.draft, client)
        return plan

    def _plan_draft(
        self, plan: Plan, req: CreateRequest, reference: str | None, client: Client
    ) -> None:
        """The draft model (``create_draft``): checked against the model where it is known."""
        source = DraftSource(
            self.store,
            blob_reference=lambda raw: _blob_reference(self.store, raw),
            check_server_path=client.check_server_path,
            model_digest=self._model_digest,
            parse_name=parse_name,
        )
        if req.draft_files is not None:
            for filename in req.draft_files:
                _check_relative(filename)
            plan.draft = source.from_files(req.draft_files, _digest)
        elif reference is not None:
            plan.draft = source.from_reference(reference)
        if req.draft_quantize:
            if plan.draft is None:
                raise BadRequestError("--draft-quantize requires a DRAFT model")
            plan.draft_quantize = check_draft_quantizable(
                self.store.blob_path(plan.draft.digest), req.draft_quantize
            )
        self.check_draft(plan)

    def check_draft(self, plan: Plan, model_path: Path | None = None) -> None:
        """400 when the draft does not share the model's vocabulary; once, as soon as the
        model's file is known (a pulled or converted model: when the stream has it)."""
        if plan.draft is None or plan.draft_checked:
            return
        if model_path is None:
            model_path = (
                plan.model_source
                if plan.model_source is not None
                else self.store.blob_path(plan.model.digest)
                if plan.model is not None
                else None
            )
        if model_path is None:
            return
        check_same_vocabulary(model_path, self.store.blob_path(plan.draft.digest))
        plan.draft_checked = True

    def _model_digest(self, name: Name) -> str:
        """The weights blob of a model in the store (a bundled one is imported first)."""
        found = self.store.find(name)
        if found is None:
            bundled = find_bundled(name)
            if bundled is None:
                raise BadRequestError(
                    f"draft model '{name.display_short}' not found: pull it first"
                )
            self._import_bundled(name, bundled)
            found = name
        layer = self.models.resolve(found.display_long).manifest.layer(MEDIA_TYPE_MODEL)
        if layer is None:
            raise BadRequestError(f"{found.display_short} has no model layer to draft with")
        return layer.digest

    def _plan_from(self, plan: Plan, source: str, client: Client) -> None:
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

    def _plan_path(self, plan: Plan, source: str, client: Client) -> None:
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
            converter()  # 400 now if conversion is not available
            plan.convert_files = {"": str(path)}
            return
        if not path.is_file():
            raise BadRequestError(f"invalid model reference: {path} (no such file)")
        _read_gguf_upload(path)
        plan.model_source = path

    def _plan_base_model(self, plan: Plan, raw: str, base_name: Name) -> None:
        """A local or bundled base is used now; any other is pulled once streaming starts."""
        found = self.store.find(base_name)
        if found is None:
            bundled = find_bundled(base_name)
            if bundled is None:
                plan.pull_base = base_name
                return
            self._import_bundled(base_name, bundled)
            found = base_name
        self.use_base(plan, found)

    def use_base(self, plan: Plan, found: Name) -> None:
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
        if plan.draft is None:
            plan.draft = manifest.layer(MEDIA_TYPE_DRAFT)
        plan.config_extra = base.config
        plan.params = {**base.params, **plan.params}
        if plan.model is None:
            raise BadRequestError(f"{found.display_short} has no model layer to build on")

    def _import_bundled(self, name: Name, bundled: BundledModel) -> None:
        try:
            pull_bundled(self.store, name, bundled, lambda _event: None, bf16=self.bf16())
        except CatalogError as exc:
            raise ModelNotFoundError(name.display_short, hint=False) from exc

    def _plan_files(self, plan: Plan, files: dict[str, str]) -> None:
        if not files:
            raise BadRequestError("no files provided to convert")
        checked: dict[str, str] = {}
        for filename, raw_digest in files.items():
            _check_relative(filename)
            checked[filename] = _digest(raw_digest)
            self._existing_blob(checked[filename])
        if any(PurePosixPath(f).name == "config.json" for f in checked):
            converter()
            plan.convert_files = checked
            return
        ggufs = [f for f in checked if f.lower().endswith(".gguf")] or list(checked)
        if len(ggufs) != 1:
            raise BadRequestError("only one GGUF file is supported")
        digest = checked[ggufs[0]]
        path = self.store.blob_path(digest)
        _read_gguf_upload(path)
        plan.model = Layer(MEDIA_TYPE_MODEL, digest, path.stat().st_size)

    def _adapter_digest(self, raw: str, client: Client) -> str:
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

    def check_quantizable(self, plan: Plan) -> None:
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
        from_all=() if req.from_ else base.from_all,
        adapters=base.adapters,
        draft=req.draft if req.draft is not None else base.draft,
        parameters=parameters,
        template=req.template if req.template is not None else base.template,
        system=req.system if req.system is not None else base.system,
        license=license_given,
        messages=messages,
        renderer=req.renderer if req.renderer is not None else base.renderer,
        parser=req.parser if req.parser is not None else base.parser,
        requires=req.requires if req.requires is not None else base.requires,
    )


def _typed_parameters(raw: dict[str, Any]) -> dict[str, Any]:
    """A create's JSON ``parameters``, typed as they will be saved with the model."""
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.lower()
        if name not in OPTION_KINDS:
            raise InvalidOptionError(f"unknown parameter '{key}'")
        if value is not None:
            checked[name] = typed_option(key, value, source="parameters")
    return checked


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


def converter() -> Callable[..., Path]:
    """``corral.convert.convert_checkpoint`` when that package is there; 400 otherwise."""
    try:
        module = importlib.import_module("corral.convert")
    except ImportError:
        module = None
    convert = getattr(module, "convert_checkpoint", None)
    if convert is None:
        raise BadRequestError("safetensors conversion not available")
    return convert  # type: ignore[no-any-return]
