"""A parsed Modelfile as the fields of Ollama's structured create request.

Why: since Ollama 0.5.5 the client parses the Modelfile and sends JSON (``from``, ``files``,
``adapters``, ``parameters``, ``template``, ``system``, ``license``, ``messages``); the old
``modelfile`` text field still reaches the server from older clients. Both go through
:func:`to_create_fields`, so there is one meaning for each instruction. What FROM and
ADAPTER name (a model, a blob, a file) is decided by the caller, which knows where it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from corral.api.options import OPTION_KINDS, typed_option
from corral.errors import InvalidOptionError, ModelfileError
from corral.modelfile.parser import Command, Modelfile

__all__ = ["CreateFields", "to_create_fields"]


@dataclass(frozen=True, slots=True)
class CreateFields:
    """What a Modelfile asks for. ``None`` means "not given: inherit"."""

    from_: str
    adapters: tuple[str, ...] = ()
    #: DRAFT: a draft model for speculative decoding (a model name, a blob or a GGUF file)
    draft: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: tuple[str, ...] = ()
    messages: tuple[dict[str, str], ...] = ()
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None  # a semantic version, without a leading "v"
    #: every FROM in order (a vision model has two: the model and its projector)
    from_all: tuple[str, ...] = ()

    def request_body(self) -> dict[str, Any]:
        """The JSON fields of a create request, ``from`` left as written."""
        body: dict[str, Any] = {"from": self.from_}
        if self.parameters:
            body["parameters"] = self.parameters
        if self.template is not None:
            body["template"] = self.template
        if self.system is not None:
            body["system"] = self.system
        if self.license:
            body["license"] = list(self.license)
        if self.messages:
            body["messages"] = [dict(m) for m in self.messages]
        for key in ("renderer", "parser", "requires"):
            value = getattr(self, key)
            if value:
                body[key] = value
        return body


def to_create_fields(modelfile: Modelfile) -> CreateFields:
    """Typed create fields; ModelfileError (with the line) for a bad PARAMETER value.

    The last FROM, TEMPLATE and SYSTEM win; PARAMETERs of list type (``stop``) accumulate,
    others take their last value; LICENSE, MESSAGE and ADAPTER keep every occurrence.
    """
    froms = modelfile.of("from")
    if not froms:
        raise ModelfileError("no FROM line")
    parameters: dict[str, Any] = {}
    for command in modelfile.of("parameter"):
        _add_parameter(parameters, command)
    templates = modelfile.of("template")
    systems = modelfile.of("system")
    renderers = modelfile.of("renderer")
    parsers = modelfile.of("parser")
    requires = modelfile.of("requires")
    drafts = modelfile.of("draft")
    return CreateFields(
        from_=froms[-1].value,
        adapters=tuple(c.value for c in modelfile.of("adapter")),
        draft=drafts[-1].value if drafts else None,
        parameters=parameters,
        template=templates[-1].value if templates else None,
        system=systems[-1].value if systems else None,
        license=tuple(c.value for c in modelfile.of("license")),
        messages=tuple({"role": c.key, "content": c.value} for c in modelfile.of("message")),
        renderer=renderers[-1].value if renderers else None,
        parser=parsers[-1].value if parsers else None,
        requires=_version(requires[-1]) if requires else None,
        from_all=tuple(c.value for c in froms),
    )


#: Go's ``golang.org/x/mod/semver`` grammar (which Ollama checks REQUIRES with): ``vMAJOR``,
#: ``vMAJOR.MINOR`` or ``vMAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]``, no leading zeros
_NUMBER = r"(?:0|[1-9][0-9]*)"
_IDENT = r"(?:[0-9A-Za-z-]+)"
_SEMVER = re.compile(
    rf"v{_NUMBER}(?:\.{_NUMBER}(?:\.{_NUMBER}(?:-{_IDENT}(?:\.{_IDENT})*)?"
    rf"(?:\+{_IDENT}(?:\.{_IDENT})*)?)?)?"
)


def _version(command: Command) -> str:
    """REQUIRES' value: a semantic version (``v`` optional), stored without the ``v``.

    Newest Ollama checks only that it is one; it compares it with no running version."""
    value = command.value if command.value.startswith("v") else "v" + command.value
    if not _SEMVER.fullmatch(value) or _bad_prerelease(value):
        raise ModelfileError(f"line {command.line}: requires must be a valid semver (e.g. 0.14.0)")
    return value[1:]


def _bad_prerelease(value: str) -> bool:
    """A numeric prerelease identifier with a leading zero is not semver (``1.0.0-01``)."""
    prerelease = value.partition("+")[0].partition("-")[2]
    return any(
        part.isdigit() and len(part) > 1 and part.startswith("0")
        for part in prerelease.split(".")
        if prerelease
    )


def _add_parameter(parameters: dict[str, Any], command: Command) -> None:
    key = command.key
    if key not in OPTION_KINDS:
        raise ModelfileError(f"line {command.line}: unknown parameter '{key}'")
    if OPTION_KINDS[key] == "strs":
        parameters.setdefault(key, []).append(command.value)
        return
    try:
        parameters[key] = typed_option(key, command.value, source="modelfile")
    except InvalidOptionError as exc:
        raise ModelfileError(f"line {command.line}: {exc.message}") from None
