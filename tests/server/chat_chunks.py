"""Ollama chat chunks as ``open_chat`` yields them, for the dialect encoders' unit tests."""

from __future__ import annotations

from typing import Any

__all__ = ["chunk", "done"]


def done(reason: str = "stop", **extra: Any) -> dict[str, Any]:
    """The final chunk: counts 7 prompt tokens and 3 generated."""
    return {
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": reason,
        "prompt_eval_count": 7,
        "eval_count": 3,
        **extra,
    }


def chunk(content: str = "", thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    return {"message": message, "done": False}
