"""Wire types of Anthropic's Messages API (``POST /v1/messages``), as coding agents send it.

Fields follow the order of Anthropic's reference. Bodies are loose where agents are inventive
(unknown top-level fields, such as Claude Code's ``context_management``, are accepted and
ignored; ``cache_control`` on any block is ignored) and strict where a mistake would change
the answer: the required fields, the roles, the shape of each content block (checked where
the request is translated, ``server/anthropic.py``, so the error names the block).

Beyond Anthropic: ``options`` and ``keep_alive`` as on Ollama's routes (``num_ctx`` and the
rest reach the model), for clients that can add fields to the body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.api.types import keep_alive_seconds

__all__ = [
    "CountTokensRequest",
    "InputMessage",
    "MessagesRequest",
    "ThinkingConfig",
    "Tool",
    "ToolChoice",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class InputMessage(_Body):
    role: str
    #: a string, or content blocks: ``text``, ``image``, ``tool_use``, ``tool_result``,
    #: ``thinking``, ``redacted_thinking``
    content: str | list[dict[str, Any]]


class Tool(_Body):
    #: absent or ``custom`` for a client tool; Anthropic's own (``bash_20250124``,
    #: ``web_search_20250305``, ...) have a dated type
    type: str | None = None
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Body):
    type: str  # auto, any, tool, none
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(_Body):
    type: str  # enabled, adaptive, disabled
    budget_tokens: int | None = None


class _Conversation(_Body):
    model: str | None = None
    messages: list[InputMessage] | None = None
    system: str | list[dict[str, Any]] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(_Conversation):
    max_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None  # effort, format (structured output)
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's name
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    # Ollama's own
    options: dict[str, Any] | None = None
    keep_alive: float | None = Field(default=None)

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> float | None:
        return keep_alive_seconds(value)


class CountTokensRequest(_Conversation):
    """``POST /v1/messages/count_tokens``: a Messages request without the sampling fields."""
