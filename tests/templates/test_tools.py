"""Tool-call formats learned from templates, and the streaming tool-call parser."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.catalog.bundled import BUNDLED
from corral.templates.prompt import PromptTemplate
from corral.templates.tools import ToolCallParser, ToolFormat, tool_format

CHATML = PromptTemplate.from_sources(BUNDLED[0].template())
GEMMA = PromptTemplate.from_sources(BUNDLED[1].template())
NAMES = {"get_weather", "get_time"}


def run(parser: ToolCallParser, chunks: list[str]) -> tuple[str, list[dict[str, Any]]]:
    content: list[str] = []
    calls: list[dict[str, Any]] = []
    for chunk in chunks:
        text, found = parser.feed(chunk)
        content.append(text)
        calls.extend(found)
    text, found = parser.finish()
    content.append(text)
    calls.extend(found)
    return "".join(content), calls


def by_char(text: str) -> list[str]:
    return list(text)


def test_formats_learned_from_the_bundled_templates() -> None:
    assert tool_format(CHATML) == ToolFormat("<tool_call>", "</tool_call>")
    assert tool_format(GEMMA) == ToolFormat("<tool_call>", "</tool_call>")


def test_bare_json_template_and_a_template_without_calls() -> None:
    bare = PromptTemplate.from_sources(
        "{{ range .Messages }}{{ .Role }}: {{ .Content }}"
        "{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}\n{{ end }}"
    )
    assert tool_format(bare) == ToolFormat("", "")
    plain = PromptTemplate.from_sources("{{ .Prompt }}")
    assert tool_format(plain) == ToolFormat("", "")


def test_mistral_style_prefix_with_a_json_array() -> None:
    mistral = PromptTemplate.from_sources(
        '{{- range .Messages }}{{ if eq .Role "user" }}[INST] {{ .Content }}[/INST]'
        '{{ else if eq .Role "assistant" }}{{ if .Content }}{{ .Content }}'
        "{{ else if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}"
        '{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}'
        "{{ end }}]{{ end }}</s>{{ end }}{{ end }}"
    )
    fmt = tool_format(mistral)
    assert fmt.prefix == "[TOOL_CALLS]"
    content, calls = run(
        ToolCallParser(fmt, NAMES),
        by_char('[TOOL_CALLS] [{"name": "get_time", "arguments": {"zone": "UTC"}}]'),
    )
    assert content == ""
    assert calls == [{"name": "get_time", "arguments": {"zone": "UTC"}}]


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa}r\\"is"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("text", "content", "calls"),
    [
        ("Just an answer.", "Just an answer.", []),
        (CALL, "", [{"name": "get_weather", "arguments": {"city": 'Pa}r"is'}}]),
        (
            "Let me check. " + CALL + "\n" + CALL.replace('Pa}r\\"is', "Rome") + "\n",
            "Let me check.",
            [
                {"name": "get_weather", "arguments": {"city": 'Pa}r"is'}},
                {"name": "get_weather", "arguments": {"city": "Rome"}},
            ],
        ),
        # an unknown tool, broken JSON, or a call cut short are content, never lost
        (
            '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
            '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>',
            [],
        ),
        ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
        ('<tool_call>{"name": "get_we', '<tool_call>{"name": "get_we', []),
        ("a <tool_ca", "a <tool_ca", []),
        # arguments as a JSON string, "parameters", and the OpenAI-style nesting
        (
            '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"CET\\"}"}',
            "",
            [{"name": "get_time", "arguments": {"zone": "CET"}}],
        ),
        (
            '<tool_call>{"type": "function", "function": {"name": "get_time",'
            ' "parameters": {"zone": "X"}}}',
            "",
            [{"name": "get_time", "arguments": {"zone": "X"}}],
        ),
    ],
)
def test_parser(text: str, content: str, calls: list[dict[str, Any]]) -> None:
    fmt = ToolFormat("<tool_call>", "</tool_call>")
    assert run(ToolCallParser(fmt, NAMES), by_char(text)) == (content, calls)
    assert run(ToolCallParser(fmt, NAMES), [text]) == (content, calls)


def test_content_streams_before_a_call_is_decided() -> None:
    parser = ToolCallParser(ToolFormat("<tool_call>", "</tool_call>"), NAMES)
    assert parser.feed("Hello there") == ("Hello there", [])
    assert parser.feed(" <tool") == ("", [])  # the possible tag is held back
    assert parser.feed("box>") == (" <toolbox>", [])  # ...and released once it is not one


def test_bare_json_calls_only_at_the_start() -> None:
    fmt = ToolFormat()
    assert run(ToolCallParser(fmt, NAMES), by_char(' {"name": "get_time"}')) == (
        "",
        [{"name": "get_time", "arguments": {}}],
    )
    assert run(
        ToolCallParser(fmt, NAMES), by_char('[{"name": "get_time"}, {"name": "get_weather"}]')
    )[1] == [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {}}]
    text = 'Use {"name": "get_time"} like this'
    assert run(ToolCallParser(fmt, NAMES), by_char(text)) == (text, [])
    assert run(ToolCallParser(fmt, NAMES), by_char('{"a": 1}')) == ('{"a": 1}', [])


@given(st.lists(st.integers(min_value=1, max_value=len(CALL) + 20), max_size=12), st.text())
def test_any_chunking_gives_the_same_result(cuts: list[int], prose: str) -> None:
    text = prose.replace("<", "") + " " + CALL
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    fmt = ToolFormat("<tool_call>", "</tool_call>")
    assert run(ToolCallParser(fmt, NAMES), chunks) == run(ToolCallParser(fmt, NAMES), [text])


def test_a_prompt_that_opens_the_call() -> None:
    fmt = ToolFormat("<tool_call>", "</tool_call>")
    parser = ToolCallParser(fmt, NAMES, opened=True)
    assert run(parser, by_char('\n{"name": "get_time", "arguments": {}}\n</tool_call>')) == (
        "",
        [{"name": "get_time", "arguments": {}}],
    )
    parser = ToolCallParser(fmt, NAMES, opened=True)
    assert run(parser, ["not a call"]) == ("<tool_call>not a call", [])
