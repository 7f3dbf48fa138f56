"""Prompt assembly: a model's template x a conversation → the text the runner tokenizes.

Two kinds of template, as in Ollama:
- a Go template (the model's ``template`` layer). If it uses ``.Messages`` it runs once with
  the whole conversation; otherwise (older templates) it runs once per
  (system, prompt, response) turn and the pieces are joined, the last turn cut right after
  ``{{ .Response }}`` so the model writes the answer;
- a GGUF Jinja ``tokenizer.chat_template``, used only when there is no Go template.

``fit_chat_prompt`` drops the oldest messages (never system messages, never the last one)
until the rendered prompt fits the context window, as Ollama's ``chatPrompt`` does. It renders
in a worker thread, so a slow template never stalls the server's event loop; every render is
bounded in steps, CPU time and size either way (``go/limits.py``, ``jinja.py``), and a
template past a bound is a ``TemplateError`` (400) naming it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from corral.templates.go import GoTemplate
from corral.templates.jinja import JinjaChatTemplate

__all__ = ["PromptTemplate", "ThinkValue", "fit_chat_prompt", "jinja_think_kwargs", "think_values"]

_SENTINEL = "\x00corral-response\x00"

TemplateMessage = dict[str, Any]
CountTokens = Callable[[str], Awaitable[int]]
#: a request's ``think``: None (not set), a bool, or a level ("low", "medium", "high", "max")
ThinkValue = bool | str | None


def think_values(think: ThinkValue) -> dict[str, Any]:
    """``.Think``, ``.ThinkLevel`` and ``.IsThinkSet`` as Ollama's Go templates see them.

    A level thinks; ``true`` is the level "medium" (Ollama's default level), ``false`` and
    unset have no level."""
    if isinstance(think, str):
        return {"Think": bool(think), "ThinkLevel": think, "IsThinkSet": True}
    return {
        "Think": bool(think),
        "ThinkLevel": "medium" if think else "",
        "IsThinkSet": think is not None,
    }


def jinja_think_kwargs(think: ThinkValue) -> dict[str, Any]:
    """The variables a GGUF Jinja template reads for thinking (llama.cpp's
    ``chat_template_kwargs`` as Ollama fills them): ``enable_thinking`` when ``think`` is set,
    and ``reasoning_effort`` when it is a level. Unset: the template's own default."""
    if think is None:
        return {}
    kwargs: dict[str, Any] = {"enable_thinking": bool(think)}
    if isinstance(think, str) and think:
        kwargs["reasoning_effort"] = think
    return kwargs


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A model's prompt format; build with ``PromptTemplate.from_sources``."""

    go: GoTemplate | None = None
    jinja: JinjaChatTemplate | None = None
    bos_token: str = ""
    eos_token: str = ""

    @classmethod
    def from_sources(
        cls,
        go_source: str | None,
        jinja_source: str | None = None,
        *,
        bos_token: str = "",
        eos_token: str = "",
    ) -> PromptTemplate:
        if go_source:
            return cls(go=GoTemplate(go_source))
        if jinja_source:
            return cls(
                jinja=JinjaChatTemplate(jinja_source), bos_token=bos_token, eos_token=eos_token
            )
        return cls(go=GoTemplate("{{ .Prompt }}"))

    @property
    def source(self) -> str:
        if self.go is not None:
            return self.go.source
        return self.jinja.source if self.jinja is not None else ""

    def uses(self, field: str) -> bool:
        return self.go.references(field) if self.go is not None else False

    @property
    def supports_tools(self) -> bool:
        if self.go is not None:
            return self.go.references("Tools")
        return self.jinja is not None and "tools" in self.jinja.source

    @property
    def supports_thinking(self) -> bool:
        if self.go is not None:
            return self.go.references("Think")
        source = self.jinja.source if self.jinja is not None else ""
        return "enable_thinking" in source or "<think>" in source

    def render(
        self,
        messages: Sequence[TemplateMessage],
        tools: list[dict[str, Any]] | None = None,
        think: ThinkValue = None,
    ) -> str:
        """Render the conversation and leave the prompt open for the assistant's answer.

        ``think`` is the request's choice (None: not set), seen by Go templates as
        ``.Think``, ``.ThinkLevel`` and ``.IsThinkSet`` and by Jinja templates as
        ``enable_thinking`` and ``reasoning_effort`` (``think_values``,
        ``jinja_think_kwargs``)."""
        if self.go is None:
            assert self.jinja is not None
            extra = jinja_think_kwargs(think)
            return self.jinja.render(
                [_jinja_message(m) for m in messages],
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        if self.go.references("Messages"):
            return self._render_messages(self.go, messages, tools, think)
        return self._render_turns(self.go, messages, think)

    @staticmethod
    def _render_messages(
        go: GoTemplate,
        messages: Sequence[TemplateMessage],
        tools: list[dict[str, Any]] | None,
        think: ThinkValue,
    ) -> str:
        system = "\n\n".join(m["Content"] for m in messages if m["Role"] == "system")
        data = {
            "System": system,
            "Messages": _merge_consecutive(messages),
            "Tools": [_go_tool(t) for t in tools or []],
            "Prompt": "",
            "Response": "",
            "Suffix": "",
            **think_values(think),
        }
        return go.render(data)

    @staticmethod
    def _render_turns(
        go: GoTemplate, messages: Sequence[TemplateMessage], think: ThinkValue = None
    ) -> str:
        pieces: list[str] = []
        system = prompt = response = ""

        def flush(final: bool) -> None:
            data = {
                "System": system,
                "Prompt": prompt,
                "Response": response + _SENTINEL if final else response,
                "Messages": [],
                **think_values(think),
            }
            text = go.render(data)
            if final:
                cut = text.find(_SENTINEL)
                text = text if cut == -1 else text[:cut]
            pieces.append(text)

        for message in messages:
            role, content = message["Role"], message["Content"]
            if role == "system":
                if prompt or response:
                    flush(False)
                    system = prompt = response = ""
                system = f"{system}\n\n{content}" if system else content
            elif role == "user":
                if prompt or response:
                    flush(False)
                    system = prompt = response = ""
                prompt = content
            elif role == "assistant":
                response = content
        # The last turn is cut right after its response: an empty one for the model to write,
        # or a final assistant message for it to continue (as Ollama does).
        flush(True)
        return "".join(pieces)


def _merge_consecutive(messages: Sequence[TemplateMessage]) -> list[TemplateMessage]:
    """Consecutive messages of one role become one (blank line between), except ``tool``."""
    merged: list[TemplateMessage] = []
    for message in messages:
        if (
            merged
            and merged[-1]["Role"] == message["Role"]
            and message["Role"] not in {"tool", "system"}
            and not merged[-1].get("ToolCalls")
            and not message.get("ToolCalls")
        ):
            previous = dict(merged[-1])
            previous["Content"] = f"{previous['Content']}\n\n{message['Content']}"
            merged[-1] = previous
        else:
            merged.append(message)
    return merged


def _go_tool(tool: dict[str, Any]) -> _GoView:
    """A tool definition keyed both ways: JSON names print, Go field names resolve."""
    return _GoView(tool)


class _GoView(Mapping[str, Any]):
    """A JSON object as Ollama's Go structs show it to a template.

    ``.Function.Name`` finds ``function`` → ``name`` (Go field names are the JSON names
    capitalised), while printing it gives JSON with the object's own keys, as Go's
    ``json.Marshal`` of the struct does. A plain dict holding both spellings printed both.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        if key not in self._data and key[:1].isupper():
            key = key[:1].lower() + key[1:]
        value = self._data[key]
        return _GoView(value) if isinstance(value, Mapping) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _jinja_message(message: TemplateMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message["Role"], "content": message["Content"]}
    if message.get("ToolCalls"):
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {
                    "name": c["Function"]["Name"],
                    "arguments": c["Function"]["Arguments"],
                },
            }
            for c in message["ToolCalls"]
        ]
    if message.get("ToolName"):
        out["name"] = message["ToolName"]
    return out


async def fit_chat_prompt(
    template: PromptTemplate,
    messages: Sequence[TemplateMessage],
    tools: list[dict[str, Any]] | None,
    num_ctx: int,
    count_tokens: CountTokens,
    think: ThinkValue = None,
    *,
    dropped: Callable[[int], None] | None = None,
) -> str:
    """Render, dropping the oldest non-system messages until the prompt fits ``num_ctx``;
    ``dropped`` hears how many were dropped when any were.

    Each render runs in a worker thread (``asyncio.to_thread``): off the event loop."""

    async def render(window: Sequence[TemplateMessage]) -> str:
        return await asyncio.to_thread(template.render, window, tools, think)

    if not messages:
        return await render([])
    full = await render(messages)
    if await count_tokens(full) <= num_ctx:
        return full
    systems = [i for i, m in enumerate(messages) if m["Role"] == "system"]
    last = len(messages) - 1

    def window(start: int) -> list[TemplateMessage]:
        return [m for i, m in enumerate(messages) if i >= start or i in systems]

    # The prompt only shrinks as ``start`` grows: binary search the earliest start that fits.
    low, high = 1, last
    best = last
    while low <= high:
        middle = (low + high) // 2
        if await count_tokens(await render(window(middle))) <= num_ctx:
            best = middle
            high = middle - 1
        else:
            low = middle + 1
    if dropped is not None:
        dropped(sum(1 for i in range(best) if i not in systems))
    return await render(window(best))
