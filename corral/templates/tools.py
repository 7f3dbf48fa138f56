"""Tool calls: where a model's template says they start, and parsing them out of its output.

``tool_format(template)`` learns from the template itself how the model writes a call: it
renders a conversation whose last assistant turn holds one call with a sentinel name, and
reads the text around the JSON (``<tool_call>`` … ``</tool_call>`` for ChatML models). A
template that prints calls as bare JSON gives an empty prefix; then, as Ollama's parser does,
an answer that *starts* with ``{`` or ``[`` is taken as calls.

``ToolCallParser`` works on the stream: text that cannot be the start of a call is released
at once (so content streams as it is generated even when ``tools`` are present), text that
might be the prefix is held until it is decided, and a call is emitted as soon as its JSON
closes. Output that looked like a call but is not valid JSON, or names no known tool, is
given back as content: nothing the model wrote is lost.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from corral.templates.prompt import PromptTemplate

__all__ = ["ToolCallParser", "ToolFormat", "tool_format", "tool_names"]

_SENTINEL = "corral_sentinel_tool"
_CONTENT = "corral-sentinel-content"


@dataclass(frozen=True, slots=True)
class ToolFormat:
    prefix: str = ""  # the text before a call's JSON ("" = the JSON itself starts the call)
    suffix: str = ""  # the text after it, dropped from the content


@functools.lru_cache(maxsize=64)
def tool_format(template: PromptTemplate) -> ToolFormat:
    """How ``template`` writes an assistant tool call; a bare-JSON format when unsure.

    Learnt once per template (cached): the two renders are then never repeated per request,
    which matters for a template that runs into its bounds (``TemplateError``: bare JSON)."""
    user = _message("user", "x")
    call = {"Function": {"Name": _SENTINEL, "Arguments": {}}, "ID": ""}
    try:
        plain = template.render([user, _message("assistant", _CONTENT)])
        called = template.render([user, _message("assistant", "", [call])])
    except Exception:  # a template that cannot render this: bare JSON, as Ollama falls back
        return ToolFormat()
    header_end = plain.find(_CONTENT)
    at = called.find(_SENTINEL)
    if header_end < 0 or at < 0 or not called.startswith(plain[:header_end]):
        return ToolFormat()
    body = called[header_end:]
    at -= header_end
    start = body.rfind("{", 0, at)
    if start < 0:
        return ToolFormat()
    end = _json_end(body, start)
    prefix = body[:start].strip()
    if prefix.endswith("["):  # calls written as a JSON array
        prefix = prefix[:-1].rstrip()
    suffix = body[end:].strip() if end > 0 else ""
    suffix = suffix.removeprefix("]").strip()
    # Keep only the first line of what follows: the closing tag, not the turn's end marker.
    suffix = suffix.split("\n", 1)[0].strip()
    if suffix.startswith(("<|", "<end")):
        suffix = ""
    return ToolFormat(prefix=prefix, suffix=suffix)


def _message(role: str, content: str, calls: list[Any] | None = None) -> dict[str, Any]:
    return {
        "Role": role,
        "Content": content,
        "Thinking": "",
        "Images": [],
        "ToolCalls": calls or [],
        "ToolName": "",
        "ToolCallID": "",
    }


def tool_names(tools: Iterable[dict[str, Any]] | None) -> set[str]:
    names: set[str] = set()
    for tool in tools or ():
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def _json_end(text: str, start: int) -> int:
    """Index just past the JSON object or array opening at ``start``; -1 while incomplete,
    -2 when ``text[start]`` does not open one."""
    if start >= len(text) or text[start] not in "{[":
        return -2
    depth = 0
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _calls_from(value: Any, names: set[str]) -> list[dict[str, Any]] | None:
    """The calls a parsed JSON value holds, or None when it is not a (known) call."""
    items = value if isinstance(value, list) else [value]
    calls: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        if isinstance(item.get("function"), dict):  # {"type": "function", "function": {...}}
            item = item["function"]
        name = item.get("name")
        if not isinstance(name, str) or (names and name not in names):
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                return None
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return None
        calls.append({"name": name, "arguments": arguments})
    return calls or None


class ToolCallParser:
    """Splits a model's streamed output into content and tool calls.

    ``feed(text)`` and ``finish()`` return ``(content, calls)``: the content that can be
    shown now and the calls completed now, each ``{"name", "arguments"}``.
    """

    def __init__(self, fmt: ToolFormat, names: set[str], *, opened: bool = False) -> None:
        """``opened``: the prompt itself ends with the call's prefix (a template that makes
        the model call a tool), so the answer starts inside a call."""
        self._prefix = fmt.prefix
        self._suffix = fmt.suffix
        self._names = names
        self._buffer = ""
        self._in_call = opened and bool(fmt.prefix)
        self._seen_text = False  # bare-JSON formats: a call must open the answer
        self._done = False  # bare-JSON format and the answer is plain text
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        if self._done:
            return text, []
        self._buffer += text
        return self._drain(final=False)

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        if self._done:
            return "", []
        content, calls = self._drain(final=True)
        rest = self._buffer
        self._buffer = ""
        if self._in_call:
            rest = self._prefix + rest
            self._in_call = False
        content += rest
        if self.calls and not content.strip():
            content = ""  # the whitespace between and after calls is not an answer
        return content, calls

    def _drain(self, *, final: bool) -> tuple[str, list[dict[str, Any]]]:
        out: list[str] = []
        calls: list[dict[str, Any]] = []
        while True:
            if not self._in_call:
                released, found = self._look_for_call(final)
                out.append(released)
                if not found:
                    break
                self._in_call = True
            parsed = self._take_call()
            if parsed is None:  # incomplete: wait for more text
                break
            if parsed is False:  # not a call after all: the text is content
                out.append(self._prefix + self._buffer if self._prefix else self._buffer)
                self._buffer = ""
                self._in_call = False
                if not self._prefix:
                    self._done = True
                break
            calls.extend(parsed)
            self.calls += len(parsed)
            self._in_call = False
        content = "".join(out)
        if self.calls and not content.strip():
            content = ""
        return content, calls

    def _look_for_call(self, final: bool) -> tuple[str, bool]:
        """Release content up to a call's start; True when a call starts the buffer now."""
        buffer = self._buffer
        if self._suffix and self.calls:
            stripped = buffer.lstrip()
            if stripped.startswith(self._suffix):
                buffer = stripped[len(self._suffix) :]
            elif self._suffix.startswith(stripped) and stripped and not final:
                return "", False
            if not buffer.strip() and not final:
                self._buffer = buffer
                return "", False
        if not self._prefix:
            stripped = buffer.lstrip()
            if not stripped:
                self._buffer = buffer
                return "", False
            if stripped[0] in "{[" and (not self._seen_text or self.calls):
                self._buffer = stripped
                return "", True
            self._seen_text = True
            if not self.calls:
                self._done = True
            self._buffer = ""
            return buffer, False
        at = buffer.find(self._prefix)
        if at >= 0:
            # the blank text just before a call is layout, not part of the answer
            self._buffer = buffer[at + len(self._prefix) :]
            return buffer[:at].rstrip(), True
        if final:
            self._buffer = ""
            return buffer, False
        # Hold what may start a call (a partial tag) and the blank text before it.
        hold = _partial_suffix(buffer, self._prefix)
        body = buffer[: len(buffer) - hold]
        hold += len(body) - len(body.rstrip())
        self._buffer = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def _take_call(self) -> list[dict[str, Any]] | Literal[False] | None:
        text = self._buffer
        start = len(text) - len(text.lstrip())
        if start == len(text):
            return None
        end = _json_end(text, start)
        if end == -1:
            return None
        if end == -2:
            return False
        try:
            value = json.loads(text[start:end])
        except ValueError:
            return False
        calls = _calls_from(value, self._names)
        if calls is None:
            return False
        self._buffer = text[end:]
        return calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0
