"""``think`` levels reach templates as newest Ollama passes them: ``.ThinkLevel`` in Go
templates, ``enable_thinking``/``reasoning_effort`` in GGUF Jinja templates."""

from __future__ import annotations

import pytest

from corral.api.types import think_from_effort
from corral.errors import BadRequestError
from corral.templates.prompt import PromptTemplate, jinja_think_kwargs, think_values

GO = (
    "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}"
    "[think={{ .Think }} level={{ .ThinkLevel }} set={{ .IsThinkSet }}]"
)
JINJA = (
    "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    "[enable={{ enable_thinking | default('unset') }}"
    " effort={{ reasoning_effort | default('unset') }}]"
)
USER = [{"Role": "user", "Content": "hi"}]


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        (None, "[think=false level= set=false]"),
        (False, "[think=false level= set=true]"),
        (True, "[think=true level=medium set=true]"),
        ("low", "[think=true level=low set=true]"),
        ("high", "[think=true level=high set=true]"),
        ("max", "[think=true level=max set=true]"),
    ],
)
def test_go_template_sees_the_level(think: bool | str | None, expected: str) -> None:
    rendered = PromptTemplate.from_sources(GO).render(USER, None, think)
    assert rendered == f"user: hi\n{expected}"


def test_go_turn_template_sees_the_level() -> None:
    template = PromptTemplate.from_sources("{{ .Prompt }} ({{ .ThinkLevel }})")
    assert template.render(USER, None, "low") == "hi (low)"


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        (None, "[enable=unset effort=unset]"),
        (False, "[enable=False effort=unset]"),
        (True, "[enable=True effort=unset]"),
        ("high", "[enable=True effort=high]"),
    ],
)
def test_jinja_template_sees_enable_thinking_and_effort(
    think: bool | str | None, expected: str
) -> None:
    rendered = PromptTemplate.from_sources(None, JINJA).render(USER, None, think)
    assert rendered == f"user: hi\n{expected}"


def test_values_tables() -> None:
    assert think_values("medium") == {"Think": True, "ThinkLevel": "medium", "IsThinkSet": True}
    assert jinja_think_kwargs(None) == {}
    assert jinja_think_kwargs("low") == {"enable_thinking": True, "reasoning_effort": "low"}


@pytest.mark.parametrize(
    ("effort", "think"),
    [
        (None, None),
        ("", None),
        ("none", False),
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("max", "max"),
        ("xhigh", "max"),
        ("ultra", "max"),
    ],
)
def test_reasoning_effort_maps_as_newest_ollama(effort: str | None, think: object) -> None:
    assert think_from_effort(effort) == think


def test_unknown_effort_is_refused_with_ollamas_words() -> None:
    with pytest.raises(BadRequestError) as caught:
        think_from_effort("extreme")
    assert caught.value.message == (
        'invalid reasoning value: "extreme" (must be "minimal", "low", "medium", "high",'
        ' "xhigh", "ultra", "max", or "none")'
    )
