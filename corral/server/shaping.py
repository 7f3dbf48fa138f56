"""From a model's raw text to an answer's parts: thinking, content and tool calls.

``OutputShaper`` chains the thinking parser (its tags from the template) and the tool-call
parser (the call format learned from the template) over the streamed text. ``ToolPlan``
turns a request's ``tools`` and ``tool_choice`` into what the template sees and, when a call
is required, the JSON schema and tags the runner's grammar forces.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from corral.errors import BadRequestError
from corral.templates.prompt import PromptTemplate
from corral.templates.thinking import ThinkingParser, think_tags
from corral.templates.tools import ToolCallParser, ToolFormat, tool_format, tool_names

__all__ = ["OutputShaper", "Parts", "ToolPlan", "plan_tools", "tool_call_id"]


@dataclass(slots=True)
class Parts:
    thinking: str = ""
    content: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.thinking or self.content or self.calls)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    tools: list[dict[str, Any]] | None  # what the template renders (None: no tools)
    fmt: ToolFormat
    forced_schema: dict[str, Any] | None = None  # a call the grammar forces
    wrap: tuple[str, str] = ("", "")

    def opens_call(self, prompt: str) -> bool:
        """The prompt ends with the call prefix: the template makes the model call a tool."""
        return bool(self.tools and self.fmt.prefix) and prompt.rstrip().endswith(self.fmt.prefix)


def tool_call_id() -> str:
    return "call_" + secrets.token_hex(4)


def _function(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
        raise BadRequestError("invalid tool definition: expected {type: function, function: {...}}")
    function: dict[str, Any] = tool["function"]
    if not isinstance(function.get("name"), str) or not function["name"]:
        raise BadRequestError("invalid tool definition: function.name is required")
    return function


def _choice_name(choice: Any) -> str | None:
    """The function a ``tool_choice`` names, if it names one."""
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
        if isinstance(choice.get("name"), str):
            return str(choice["name"])
        raise BadRequestError("invalid tool_choice: expected a function name")
    return None


def plan_tools(
    template: PromptTemplate, tools: list[dict[str, Any]] | None, choice: Any
) -> ToolPlan:
    """What to do with ``tools`` under ``tool_choice`` (``auto``/None, ``none``,
    ``required``/``any``, or a named function)."""
    if not tools:
        if choice not in (None, "auto", "none"):
            raise BadRequestError("tool_choice requires tools")
        return ToolPlan(None, ToolFormat())
    functions = [_function(t) for t in tools]
    if choice == "none":
        return ToolPlan(None, ToolFormat())
    fmt = tool_format(template)
    name = _choice_name(choice)
    if choice in (None, "auto"):
        return ToolPlan(tools, fmt)
    if name is None and choice not in ("required", "any"):
        raise BadRequestError(
            f'invalid tool_choice: "{choice}" (must be "none", "auto", "required" or a function)'
        )
    chosen = functions if name is None else [f for f in functions if f["name"] == name]
    if not chosen:
        raise BadRequestError(f'tool_choice names an unknown function "{name}"')
    variants = [_call_schema(f) for f in chosen]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    prefix = f"{fmt.prefix}\n" if fmt.prefix else ""
    suffix = f"\n{fmt.suffix}" if fmt.suffix else ""
    return ToolPlan(tools, fmt, schema, (prefix, suffix))


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        parameters = {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


class OutputShaper:
    """Feeds raw text through the thinking and tool-call parsers that apply."""

    def __init__(
        self,
        template: PromptTemplate,
        *,
        prompt: str,
        think: bool,
        plan: ToolPlan | None,
    ) -> None:
        self._thinking: ThinkingParser | None = None
        if think:
            tags = think_tags(template)
            opened = prompt.rstrip().endswith(tags.open)
            self._thinking = ThinkingParser(tags, opened=opened)
        self._tools: ToolCallParser | None = None
        if plan is not None and plan.tools:
            opened = plan.opens_call(prompt)
            self._tools = ToolCallParser(plan.fmt, tool_names(plan.tools), opened=opened)
        self.calls = 0

    @property
    def passthrough(self) -> bool:
        return self._thinking is None and self._tools is None

    def feed(self, text: str) -> Parts:
        return self._shape(text, final=False)

    def finish(self) -> Parts:
        return self._shape("", final=True)

    def _shape(self, text: str, *, final: bool) -> Parts:
        parts = Parts()
        content = text
        if self._thinking is not None:
            thinking, content = self._thinking.finish() if final else self._thinking.feed(text)
            parts.thinking = thinking
        if self._tools is not None:
            content, calls = self._tools.feed(content) if content else ("", [])
            if final:
                rest, more = self._tools.finish()
                content += rest
                calls.extend(more)
            parts.calls = calls
            self.calls += len(calls)
        parts.content = content
        return parts
