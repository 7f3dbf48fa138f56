"""GGUF ``tokenizer.chat_template`` (Jinja) rendered in a sandbox.

Used when a model has no Go template layer (a GGUF imported without ``TEMPLATE``). The
template comes from a file a user or registry gave us, so it runs in Jinja's immutable
sandbox with a bounded output; any failure becomes ``TemplateError``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from corral.errors import TemplateError

__all__ = ["JinjaChatTemplate"]

_MAX_OUTPUT = 10 * 1024 * 1024


def _raise(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


class JinjaChatTemplate:
    def __init__(self, source: str) -> None:
        self.source = source
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"invalid chat template: {exc}") from exc

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        bos_token: str = "",
        eos_token: str = "",
        **extra: Any,
    ) -> str:
        # Streamed and counted as it goes: rendering first and measuring after would let a
        # nested loop build gigabytes (or run for hours) before the check.
        pieces: list[str] = []
        size = 0
        try:
            for piece in self._template.generate(
                messages=messages,
                tools=tools or None,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
                **extra,
            ):
                size += len(piece)
                if size > _MAX_OUTPUT:
                    raise TemplateError("chat template output is too large")
                pieces.append(piece)
        except TemplateError:
            raise
        except Exception as exc:  # sandbox violations, type errors in hostile templates
            raise TemplateError(f"chat template failed: {exc}") from exc
        return "".join(pieces)
