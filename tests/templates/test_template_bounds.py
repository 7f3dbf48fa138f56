"""Untrusted templates are bounded in work, CPU time and size, and a chat's prompt is
rendered off the event loop: a hostile GGUF chat template (the campaign's loops 2x10^8
times: 12.5 s, the server frozen meanwhile) is a 400 naming the limit, fast."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from corral.errors import TemplateError
from corral.templates import jinja
from corral.templates.go import GoTemplate
from corral.templates.jinja import JinjaChatTemplate
from corral.templates.prompt import PromptTemplate, fit_chat_prompt

MESSAGES = [{"role": "user", "content": "hi"}]

#: the campaign's template: two nested loops, 2x10^8 iterations with nothing in them
CAMPAIGN = "{% for i in range(20000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"


def _render(source: str) -> tuple[str, float]:
    started = time.thread_time()
    try:
        JinjaChatTemplate(source).render(MESSAGES)
    except TemplateError as exc:
        return exc.message, time.thread_time() - started
    raise AssertionError("rendered within every bound")


def test_the_campaigns_template_stops_at_the_step_limit() -> None:
    message, cpu = _render(CAMPAIGN)
    assert message == (
        "chat template: more than 1000000 loop iterations and calls in one render (the limit)"
    )
    assert cpu < 1.0  # about 0.15 s; 12.5 s (and a frozen server) before


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "{% for i in range(100000) %}{% for j in range(100000) %}"
            "{% for k in range(100000) %}{% endfor %}{% endfor %}{% endfor %}",
            id="three-loops",
        ),
        pytest.param(
            "{% for m in messages %}{% for i in range(100000) %}{% for j in range(100000) %}"
            "{{ '' }}{% endfor %}{% endfor %}{% endfor %}",
            id="loops-with-bodies",
        ),
    ],
)
def test_loops_count(source: str) -> None:
    message, _ = _render(source)
    assert "loop iterations and calls" in message


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
            "{{ f(40) }}",
            id="macro-fan-out",
        ),
        pytest.param(
            "{% for x in range(2) recursive %}{% if loop.depth < 4 %}"
            "{{ loop(range(100000)) }}{% endif %}{% endfor %}",
            id="recursive-loop",
        ),
    ],
)
def test_calls_count_and_cpu_time_is_bounded(source: str) -> None:
    message, cpu = _render(source)
    assert message.endswith("(the limit)"), message
    assert "CPU time" in message or "loop iterations and calls" in message
    assert cpu < jinja.MAX_CPU_SECONDS + 0.5


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("{% set a = 10 %}{{ a ** 100000000 }}", id="power"),
        pytest.param(
            "{% set ns = namespace(x=3) %}{% for i in range(40) %}"
            "{% set ns.x = ns.x * ns.x %}{% endfor %}",
            id="squaring",
        ),
        pytest.param("{{ ('x' * 1000000) * 1000 }}", id="string-times"),
        pytest.param("{{ 'x'|center(1000000000) }}", id="center"),
        pytest.param("{{ 'x'.ljust(1000000000) }}", id="ljust"),
        pytest.param("{{ '{:>1000000000}'.format(1) }}", id="format-width"),
        pytest.param("{{ '%*d' % (1000000000, 1) }}", id="percent-width"),
        pytest.param("{{ 'ab'|indent(100000000, true) }}", id="indent"),
        pytest.param("{{ ('x' * 100000).replace('', 'y' * 1000) }}", id="replace"),
        pytest.param("{% set s = 'x' * 10000000 %}{{ [s] * 100 }}", id="shared-list"),
        pytest.param(
            "{% set s = 'x' * 10000 %}{{ range(10000)|map('string')|join(s) }}", id="join"
        ),
        pytest.param(
            "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}"
            "{{ f('x', 40) }}",
            id="doubling-concat",
        ),
        pytest.param(
            "{% set ns = namespace(s='x') %}{% for i in range(60) %}"
            "{% set ns.s = ns.s + ns.s %}{% endfor %}",
            id="doubling-plus",
        ),
        pytest.param(
            "{{ range(100000)|map('string')|map('center', 10000000)|list|length }}",
            id="many-medium-strings",
        ),
        pytest.param("{{ {'a': 1}|tojson(indent=100000000) }}", id="tojson-indent"),
        pytest.param("{{ lipsum(1000000) }}", id="lipsum"),
        pytest.param("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", id="output"),
    ],
)
def test_sizes_are_bounded(source: str) -> None:
    message, cpu = _render(source)
    assert message.startswith("chat template"), message
    assert cpu < 1.0


def test_real_templates_render_as_before() -> None:
    chatml = (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    messages = [{"role": "user", "content": f"m{i} " + "word " * 20} for i in range(3000)]
    started = time.thread_time()
    text = JinjaChatTemplate(chatml).render(messages)
    assert time.thread_time() - started < 1.0
    assert text.count("<|im_start|>") == 3001
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    tooled = JinjaChatTemplate(
        "{% for t in tools %}{{ t | tojson(indent=2) }}{% endfor %}"
        "{{ '%s-%d' % ('a', 3) }}{{ 'x'.center(5) }}{{ [1, 2] ~ '' }}{{ (messages|length) * 2 }}"
    ).render(MESSAGES, tools=tools)
    assert tooled.endswith("a-3  x  [1, 2]2")


def test_go_templates_are_bounded_in_cpu_time() -> None:
    # within the iteration and step counts, but about 4 s of work before
    source = "{{range $i := 1000}}{{range $j := 999}}{{if eq $i $j}}{{end}}{{end}}{{end}}"
    started = time.thread_time()
    with pytest.raises(TemplateError, match=r"more than 1 s of CPU time \(the limit\)"):
        GoTemplate(source).render({})
    assert time.thread_time() - started < 2.0


@pytest.mark.timeout(60)
async def test_a_chat_prompt_is_rendered_off_the_event_loop() -> None:
    # the render runs into the CPU bound (1 s); the event loop must keep turning meanwhile
    hostile = PromptTemplate.from_sources(
        None,
        "{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
    )
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def count(text: str) -> int:
        return len(text)

    ticking = asyncio.create_task(ticker())
    messages: list[dict[str, Any]] = [
        {"Role": "user", "Content": "hi", "ToolCalls": [], "ToolName": ""}
    ]
    try:
        with pytest.raises(TemplateError, match="the limit"):
            await fit_chat_prompt(hostile, messages, None, 4096, count)
    finally:
        ticking.cancel()
    assert len(gaps) > 20
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f} s"
