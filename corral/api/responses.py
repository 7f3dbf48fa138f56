"""Wire types of OpenAI's Responses API (``POST /v1/responses``), as Codex and the SDK send it.

Fields in the order of OpenAI's reference. Input items and tools stay plain objects here:
their kinds are many and growing (Codex sends ``namespace`` tool groups and a hosted
``web_search`` it does not need), so ``server/responses.py`` reads each by its ``type`` and
names the one it refuses. Unknown top-level fields (``client_metadata``,
``prompt_cache_key``, ``include`` values beyond ``reasoning.encrypted_content``) are accepted
and ignored.

Beyond OpenAI: ``options`` and ``keep_alive`` as on Ollama's routes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from corral.api.types import keep_alive_seconds

__all__ = ["Reasoning", "ResponsesRequest", "TextConfig"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Reasoning(_Body):
    effort: str | None = None  # none, minimal, low, medium, high, xhigh
    summary: str | None = None  # auto, concise, detailed: thinking is returned as it is


class TextConfig(_Body):
    #: ``{"type": "text"}``, ``{"type": "json_object"}`` or
    #: ``{"type": "json_schema", "name", "schema", "strict"}``
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ResponsesRequest(_Body):
    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    background: bool | None = None
    conversation: Any = None
    include: list[str] | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    reasoning: Reasoning | None = None
    store: bool | None = None
    stream: bool = False
    temperature: float | None = None
    text: TextConfig | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_p: float | None = None
    truncation: str | None = None
    user: str | None = None
    # Ollama's own
    options: dict[str, Any] | None = None
    keep_alive: float | None = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> float | None:
        return keep_alive_seconds(value)
