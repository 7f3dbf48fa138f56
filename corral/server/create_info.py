"""What a create stores in the config blob beside the GGUF header's facts: the Modelfile's
RENDERER, PARSER and REQUIRES (or the request's ``renderer``, ``parser``, ``requires``) and
the capabilities a request's ``info`` adds, as newest Ollama stores them.

Corral renders with the template whatever RENDERER names, and parses output with its own
shaping whatever PARSER names: both are kept so that ``show`` reports them and a push
carries them to a real Ollama, which uses them. REQUIRES is a semantic version (checked
when the Modelfile is read); newest Ollama compares it with nothing, and neither do we.

``info`` is checked as Ollama checks it (a 400 naming the field): ``capabilities`` a list of
strings (added to the model's), ``model_family``, ``base_name``, ``quantization_level``,
``parameter_size`` strings, ``context_length`` and ``embedding_length`` non-negative
integers. Those last ones describe remote models in Ollama; for a local GGUF the header
says them, so they are checked but not stored.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from corral.errors import BadRequestError
from corral.modelfile import CreateFields
from corral.store import ModelConfig

__all__ = ["config_extra"]

_INFO_STRINGS = ("model_family", "base_name", "quantization_level", "parameter_size")
_INFO_INTEGERS = ("context_length", "embedding_length")
_MAX_INFO_INT = 2**31 - 1


def config_extra(
    fields: CreateFields, info: dict[str, Any] | None, base: ModelConfig
) -> ModelConfig:
    """``base``'s renderer, parser, requires and capabilities (a FROM model's, or empty),
    each replaced where the request gives one; ``info``'s capabilities added."""
    capabilities = list(base.capabilities)
    for capability in _info_capabilities(info or {}):
        if capability not in capabilities:
            capabilities.append(capability)
    return replace(
        ModelConfig(),
        renderer=fields.renderer or base.renderer,
        parser=fields.parser or base.parser,
        requires=fields.requires or base.requires,
        capabilities=tuple(capabilities),
    )


def _info_capabilities(info: dict[str, Any]) -> list[str]:
    for key in _INFO_STRINGS:
        if key in info and not isinstance(info[key], str):
            raise BadRequestError(f'info field "{key}" must be a string')
    for key in _INFO_INTEGERS:
        if key not in info:
            continue
        value = info[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequestError(f'info field "{key}" must be a number')
        if (
            not math.isfinite(value)
            or value < 0
            or math.trunc(value) != value
            or value > _MAX_INFO_INT
        ):
            raise BadRequestError(f'info field "{key}" must be a non-negative integer')
    raw = info.get("capabilities")
    if not isinstance(raw, list):
        return []
    return [c for c in raw if isinstance(c, str) and c]
