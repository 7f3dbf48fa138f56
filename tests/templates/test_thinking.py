"""Thinking tags from templates, and the streaming thinking parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.templates.prompt import PromptTemplate
from corral.templates.thinking import ThinkingParser, ThinkTags, think_tags


def run(parser: ThinkingParser, chunks: list[str]) -> tuple[str, str]:
    thinking: list[str] = []
    content: list[str] = []
    for chunk in chunks:
        a, b = parser.feed(chunk)
        thinking.append(a)
        content.append(b)
    a, b = parser.finish()
    return "".join(thinking) + a, "".join(content) + b


def test_tags_from_the_template() -> None:
    qwen = PromptTemplate.from_sources("{{ if .Think }}<think>{{ end }}{{ .Prompt }}</think>")
    assert think_tags(qwen) == ThinkTags("<think>", "</think>")
    other = PromptTemplate.from_sources("{{ if .Think }}<thinking>{{ end }}</thinking>")
    assert think_tags(other) == ThinkTags("<thinking>", "</thinking>")
    assert think_tags(PromptTemplate.from_sources("{{ .Prompt }}")) == ThinkTags()
    assert qwen.supports_thinking and not PromptTemplate.from_sources("x").supports_thinking


@pytest.mark.parametrize(
    ("text", "opened", "expected"),
    [
        ("<think>\nhmm, 2+2</think>\n\nFour.", False, ("hmm, 2+2", "Four.")),
        ("  <think>a</think>b", False, ("a", "b")),
        ("No tags at all.", False, ("", "No tags at all.")),
        ("reasoning here</think>The answer", True, ("reasoning here", "The answer")),
        ("never closed", True, ("never closed", "")),
        ("<thin", False, ("", "<thin")),
        ("Answer <think>not at start</think>", False, ("", "Answer <think>not at start</think>")),
    ],
)
def test_parser(text: str, opened: bool, expected: tuple[str, str]) -> None:
    assert run(ThinkingParser(ThinkTags(), opened=opened), list(text)) == expected
    assert run(ThinkingParser(ThinkTags(), opened=opened), [text]) == expected


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=10))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    text = "<think>\nLet me see: </thin no, </think>\n\nIt is 4 </think> done"
    points = sorted({c % (len(text) + 1) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    assert run(ThinkingParser(ThinkTags()), chunks) == run(ThinkingParser(ThinkTags()), [text])
