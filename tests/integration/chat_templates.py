"""ChatML variants that make a tiny model's tool and thinking paths testable, and the SSE
frame reader the dialect tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

__all__ = ["CHATML", "THINKER", "TOOLCALLER", "sse_events"]

CHATML = (Path(__file__).parents[2] / "corral" / "catalog" / "chatml.gotmpl").read_text()
_OPEN = '{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant\n{{ end }}'
# ChatML whose assistant turn opens a tool call whenever tools are offered to a user turn:
# the model must call (the grammar keeps the call valid), which makes tool paths testable
# with a model too small to choose to call on its own.
TOOLCALLER = CHATML.replace(
    _OPEN,
    '{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant\n'
    '{{ if and $.Tools (eq .Role "user") }}<tool_call>\n{{ end }}{{ end }}',
)
# ChatML that opens <think> when asked to think: a thinking template for a tiny model
THINKER = CHATML.replace(
    _OPEN,
    '{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant\n'
    "{{ if $.Think }}<think>\n{{ end }}{{ end }}",
)


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """``event:``/``data:`` frames, each ended by a blank line, as the SSE spec frames them
    (the Anthropic and Responses dialects name every event)."""
    events = []
    for frame in response.text.split("\n\n"):
        if not frame.strip():
            continue
        lines = frame.split("\n")
        assert len(lines) == 2, frame
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        events.append((lines[0][7:], json.loads(lines[1][6:])))
    assert response.text.endswith("\n\n")
    return events
