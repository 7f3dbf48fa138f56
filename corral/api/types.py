"""Wire types of Ollama's API (requests), in the field order of Ollama's docs.

Only requests are pydantic models: they are where hostile input enters. Each has a method
that turns it into what the layers below use, so nothing under ``server/`` sees pydantic.
Responses are plain dicts built in ``server/`` (streamed chunk by chunk, cheaply).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from corral.config import FOREVER, parse_go_duration
from corral.errors import BadRequestError

__all__ = [
    "ChatRequest",
    "CopyRequest",
    "CreateRequest",
    "DeleteRequest",
    "DetokenizeRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "KeepAlive",
    "Message",
    "PullRequest",
    "PushRequest",
    "ShowRequest",
    "TokenizeRequest",
    "ToolCall",
    "check_top_logprobs",
    "keep_alive_seconds",
    "parse_duration",
    "think_from_effort",
]


def parse_duration(value: str | float | int) -> float:
    """Seconds from an API ``keep_alive``: a JSON number of seconds or a Go duration string.

    Strict as Ollama's ``Duration.UnmarshalJSON``: a string must be a Go duration, so
    ``"10"`` is refused (``time: missing unit in duration "10"``) although ``10`` is ten
    seconds. Negative → ``FOREVER``. Raises ``ValueError`` with Go's wording, which the API
    layer turns into a 400. ``corral.config`` reads environment variables
    (``OLLAMA_KEEP_ALIVE``) more leniently, with the same Go grammar (``parse_go_duration``).
    """
    if isinstance(value, bool):
        raise ValueError(f"Unsupported type: '{type(value).__name__}'")
    if isinstance(value, int | float):
        if isinstance(value, float) and math.isnan(value):
            raise ValueError('time: invalid duration "NaN"')
        if value < 0:
            return FOREVER
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range: as long as forever
            return FOREVER
    seconds = parse_go_duration(value)
    return FOREVER if seconds < 0 else seconds


def keep_alive_seconds(value: Any) -> float | None:
    """Ollama's ``keep_alive``: seconds (number) or a Go duration string; None = unset."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"Unsupported type: '{_go_type_name(value)}'")
    return parse_duration(value)


def _go_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def think_from_effort(effort: str | None) -> bool | str | None:
    """OpenAI's ``reasoning_effort`` / ``reasoning.effort`` as Ollama's ``think``, as newest
    Ollama maps it: ``none`` turns thinking off, ``minimal`` is ``low``, ``xhigh`` and
    ``ultra`` are ``max``; unset or empty leaves ``think`` unset. ``BadRequestError``
    (Ollama's words) for anything else."""
    match effort:
        case None | "":
            return None
        case "none":
            return False
        case "minimal":
            return "low"
        case "low" | "medium" | "high" | "max":
            return effort
        case "xhigh" | "ultra":
            return "max"
    raise BadRequestError(
        f'invalid reasoning value: {json.dumps(effort)} (must be "minimal", "low",'
        ' "medium", "high", "xhigh", "ultra", "max", or "none")'
    )


#: Ollama's bound on ``top_logprobs`` (OpenAI's too)
MAX_TOP_LOGPROBS = 20


def check_top_logprobs(value: int) -> int:
    """Ollama checks the range whether or not ``logprobs`` is set (400 with its words)."""
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise ValueError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return value


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ToolCallFunction(_Request):
    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Request):
    id: str | None = None
    function: ToolCallFunction


class Message(_Request):
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _null_content(cls, value: Any) -> Any:
        return "" if value is None else value

    def to_template(self) -> dict[str, Any]:
        """The message as Ollama's templates see it (``.Role``, ``.Content``, ...)."""
        return {
            "Role": self.role,
            "Content": self.content,
            "Thinking": self.thinking or "",
            "Images": self.images or [],
            "ToolCalls": [
                {
                    "ID": c.id or "",
                    "Function": {"Name": c.function.name, "Arguments": c.function.arguments},
                }
                for c in self.tool_calls or []
            ],
            "ToolName": self.tool_name or "",
            "ToolCallID": self.tool_call_id or "",
        }


class KeepAlive(BaseModel):
    """The ``keep_alive`` field of every request that holds a model, Ollama's and the other
    dialects' alike: seconds, ``None`` when unset (``keep_alive_seconds``). A mixin: it
    sets no model config, so each request keeps its own (Ollama's ignore unknown fields,
    OpenAI's keep them)."""

    keep_alive: float | None = None

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> float | None:
        return keep_alive_seconds(value)


class _Logprobs(_Request):
    """Newest Ollama's ``logprobs`` / ``top_logprobs`` on generate and chat."""

    logprobs: bool = False
    top_logprobs: int = 0

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, value: int) -> int:
        return check_top_logprobs(value)

    @property
    def logprobs_top(self) -> int | None:
        """What the runner is asked for: alternatives per token, None for no logprobs."""
        return self.top_logprobs if self.logprobs else None


class GenerateRequest(KeepAlive, _Logprobs):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    stream: bool = True
    raw: bool = False
    format: str | dict[str, Any] | None = None
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    #: false: a prompt longer than the context is a 400, not cut (unset: true)
    truncate: bool | None = None
    #: false: generation stops at a full context instead of shifting it (unset: true)
    shift: bool | None = None

    @field_validator("prompt", "suffix", mode="before")
    @classmethod
    def _null_text(cls, value: Any) -> Any:
        return "" if value is None else value


class ChatRequest(KeepAlive, _Logprobs):
    model: str = ""
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None  # beyond Ollama: auto, none, required, a name
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    #: false: the history is not cut to the context, and a prompt longer than it is a 400
    truncate: bool | None = None
    #: false: generation stops at a full context instead of shifting it (unset: true)
    shift: bool | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _null_messages(cls, value: Any) -> Any:
        return [] if value is None else value


class EmbedRequest(_Request, KeepAlive):
    model: str = ""
    input: str | list[str] | None = None
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None


class EmbeddingsRequest(_Request, KeepAlive):
    model: str = ""
    prompt: str = ""
    options: dict[str, Any] | None = None


class TokenizeRequest(_Request, KeepAlive):
    """``POST /api/tokenize``: ``content`` (llama-server's name) or ``text``."""

    model: str = ""
    content: str | None = None
    text: str | None = None
    add_special: bool = False
    parse_special: bool = True
    options: dict[str, Any] | None = None


class DetokenizeRequest(_Request, KeepAlive):
    """``POST /api/detokenize``: token ids back to text."""

    model: str = ""
    tokens: list[Any] = Field(default_factory=list)  # checked against the vocabulary
    options: dict[str, Any] | None = None


class ShowRequest(_Request):
    model: str = ""
    name: str = ""
    verbose: bool = False
    system: str | None = None
    template: str | None = None
    options: dict[str, Any] | None = None

    @property
    def target(self) -> str:
        return self.model or self.name


class CreateRequest(_Request):
    """``POST /api/create``: the old ``modelfile`` text or the structured fields."""

    model: str = ""
    name: str = ""
    modelfile: str | None = None
    from_: str | None = Field(default=None, alias="from")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str | None = None
    system: str | None = None
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None
    quantization: str | None = None
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None
    info: dict[str, Any] | None = None
    draft_files: dict[str, str] | None = None  # one GGUF: the draft model (DRAFT)
    draft_quantize: str | None = None
    draft: str | None = None  # corral: DRAFT naming a model, a blob or a server-side GGUF
    insecure: bool = False  # corral: pull a missing FROM base over plain HTTP
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


class PullRequest(_Request):
    """``POST /api/pull``."""

    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


class PushRequest(_Request):
    """``POST /api/push``."""

    model: str = ""
    name: str = ""
    insecure: bool = False
    stream: bool = True

    @property
    def target(self) -> str:
        return self.model or self.name


class DeleteRequest(_Request):
    model: str = ""
    name: str = ""

    @property
    def target(self) -> str:
        return self.model or self.name


class CopyRequest(_Request):
    source: str = ""
    destination: str = ""
