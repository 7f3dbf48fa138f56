"""A parsed Modelfile as the fields of Ollama's structured create request.

Why: since Ollama 0.5.5 the client parses the Modelfile and sends JSON (``from``, ``files``,
``adapters``, ``parameters``, ``template``, ``system``, ``license``, ``messages``); the old
``modelfile`` text field still reaches the server from older clients. Both go through
:func:`to_create_fields`, so there is one meaning for each instruction. What FROM and
ADAPTER name (a model, a blob, a file) is decided by the caller, which knows where it runs.
"""

from __future__ import annotations

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
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: tuple[str, ...] = ()
    messages: tuple[dict[str, str], ...] = ()

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
    return CreateFields(
        from_=froms[-1].value,
        adapters=tuple(c.value for c in modelfile.of("adapter")),
        parameters=parameters,
        template=templates[-1].value if templates else None,
        system=systems[-1].value if systems else None,
        license=tuple(c.value for c in modelfile.of("license")),
        messages=tuple({"role": c.key, "content": c.value} for c in modelfile.of("message")),
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
