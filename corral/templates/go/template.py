"""``GoTemplate``: parse once, render many times; every failure is a ``TemplateError``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from corral.errors import TemplateError
from corral.templates.go.execute import Executor
from corral.templates.go.lexer import Lexer
from corral.templates.go.nodes import Node
from corral.templates.go.parser import Parser
from corral.templates.go.values import EvalError


class GoTemplate:
    """A parsed Go template; parse once, render many times (rendering keeps no state)."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            if not isinstance(source, str):
                raise TemplateError(f"template: source must be a string, not {type(source)}")
            parser = Parser(Lexer(source).run())
            self._root = parser.parse()
        except TemplateError:
            raise
        except RecursionError as exc:
            raise TemplateError("template: nesting too deep") from exc
        except Exception as exc:
            raise TemplateError(f"template: internal error: {type(exc).__name__}: {exc}") from exc
        self._defines: Mapping[str, tuple[Node, ...]] = dict(parser.defines)
        self._fields = frozenset(parser.fields)

    def __repr__(self) -> str:
        return f"GoTemplate({self.source[:60]!r})"

    def references(self, field: str) -> bool:
        """Whether any field chain names ``field`` (case-insensitively), in any definition.

        Ollama decides how to drive a template by what it mentions (``.Messages`` or the older
        ``.Prompt``, ``.Tools``, ``.Suffix``), so this looks at the syntax, not at one render.
        """
        return field.casefold() in self._fields

    def render(self, data: Mapping[str, Any]) -> str:
        """Execute against ``data``; any failure, whatever its cause, is a ``TemplateError``."""
        executor = Executor(self._defines)
        try:
            return executor.run(self._root, data)
        except TemplateError:
            raise
        except EvalError as exc:
            raise TemplateError(f"template: {executor.line}: {exc}") from None
        except RecursionError as exc:
            raise TemplateError(f"template: {executor.line}: nesting too deep") from exc
        except Exception as exc:
            message = f"internal error: {type(exc).__name__}: {exc}"
            raise TemplateError(f"template: {executor.line}: {message}") from exc
