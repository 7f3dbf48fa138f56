"""The Go text/template interpreter: each construct, real model templates, errors, limits."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import TemplateError
from corral.templates.go import GoTemplate, functions, limits

Case = tuple[str, Any, str]


def render(source: str, data: Any = None) -> str:
    return GoTemplate(source).render({} if data is None else data)


# ---------------------------------------------------------------------------------------------
# Constructs

TEXT_AND_TRIM: list[Case] = [
    ("hello", {}, "hello"),
    ("", {}, ""),
    ("a {{- ` b` }} c", {}, "a b c"),
    ("a \n\t{{- 1 -}}\n\t b", {}, "a1b"),
    ("{{ 3 -}}   x", {}, "3x"),
    ("x \n {{- 3 }}", {}, "x3"),
    ("{{-3}}", {}, "-3"),
    ("a {{/* comment */}} b", {}, "a  b"),
    ("a {{- /* comment */ -}} b", {}, "ab"),
    ("a {{- /* multi\nline */}} b", {}, "a b"),
    ("{{/* only */}}", {}, ""),
    ("a}}b{", {}, "a}}b{"),
    ("{{ .A\n}}", {"A": "multi-line action"}, "multi-line action"),
]

FIELDS: list[Case] = [
    ("{{ .Name }}", {"Name": "Ann"}, "Ann"),
    ("{{ .A.B.C }}", {"A": {"B": {"C": 1}}}, "1"),
    ("[{{ .Missing }}]", {}, "[]"),
    ("[{{ .Missing.Deeper }}]", {}, "[]"),
    ("[{{ .N }}]", {"N": None}, "[]"),
    ("{{ $.A }}{{ with .B }}{{ $.A }}{{ . }}{{ end }}", {"A": "a", "B": "b"}, "aab"),
    ("{{ (index .L 0).Name }}", {"L": [{"Name": "x"}]}, "x"),
    ("{{ $m := .M }}{{ $m.K }}", {"M": {"K": "v"}}, "v"),
    ("{{ . }}", {"a": 1, "b": [1, "é", None]}, '{"a":1,"b":[1,"é",null]}'),
    ("{{ .lower }}", {"lower": "ok"}, "ok"),
]

PRINTING: list[Case] = [
    ("{{ true }} {{ false }}", {}, "true false"),
    ("{{ .T }} {{ .F }}", {"T": True, "F": False}, "true false"),
    ("{{ 42 }} {{ .I }}", {"I": -7}, "42 -7"),
    ("{{ .L }}", {"L": []}, "[]"),
    ("{{ .D }}", {"D": {}}, "{}"),
    ("{{ .S }}", {"S": 'quote " and ü'}, 'quote " and ü'),
]

LITERALS: list[Case] = [
    (r'{{ "a\tb\n\"q\"\\" }}', {}, 'a\tb\n"q"\\'),
    (r'{{ "\u00e9\x41\101\U0001F600" }}', {}, "éAA😀"),
    (r"{{ `raw \n` }}", {}, r"raw \n"),
    ("{{ `multi\nline` }}", {}, "multi\nline"),
    (
        "{{ 42 }} {{ -7 }} {{ +3 }} {{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 1_000 }} {{ 017 }}",
        {},
        "42 -7 3 31 15 5 1000 15",
    ),
    ("{{ 1.5 }} {{ -0.25 }} {{ 1e3 }} {{ .5 }} {{ 1.0 }}", {}, "1.5 -0.25 1000 0.5 1"),
    ("{{ 'a' }} {{ '\\n' }}", {}, "97 10"),
    ("[{{ print nil }}]", {}, "[]"),
]

FLOATS = [
    (0.5, "0.5"),
    (1.0, "1"),
    (1e21, "1e+21"),
    (1e6, "1e+06"),
    (123456.0, "123456"),
    (1234567.0, "1.234567e+06"),
    (0.0001, "0.0001"),
    (0.00001, "1e-05"),
    (-2.5, "-2.5"),
    (1.5e-7, "1.5e-07"),
    (3.14159, "3.14159"),
    (100.0, "100"),
    (0.1 + 0.2, "0.30000000000000004"),
    (-0.0, "-0"),
    (float("inf"), "+Inf"),
    (float("-inf"), "-Inf"),
    (float("nan"), "NaN"),
]

PIPELINES: list[Case] = [
    ('{{ "x" | printf "%s-%s" "a" }}', {}, "a-x"),
    ("{{ .L | len }}", {"L": [1, 2, 3]}, "3"),
    ('{{ .A | eq "a" }}', {"A": "a"}, "true"),
    ('{{ "a" | print "b" | print "c" }}', {}, "cba"),
    ("{{ len (index .L 1) }}", {"L": ["x", "yy"]}, "2"),
    ('{{ (print "a" "b") }}', {}, "ab"),
    ("{{ (len .L) }}", {"L": [1]}, "1"),
    ("{{ not (eq (len .L) 0) }}", {"L": [1]}, "true"),
]

VARIABLES: list[Case] = [
    ("{{ $x := 1 }}{{ $x }}", {}, "1"),
    ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", {}, "2"),
    ("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", {}, "21"),
    ("{{ $x := 0 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": [1, 2, 3]}, "3"),
    ("{{ with $v := .A }}{{ $v }}{{ . }}{{ end }}", {"A": "z"}, "zz"),
    ("{{ if $v := .A }}{{ $v }}{{ else }}no{{ $v }}{{ end }}", {"A": 0}, "no0"),
    ("{{ $ }}", {"A": 1}, '{"A":1}'),
    ("{{ ($x := 5) }}{{ $x }}", {}, "55"),
]

CONDITIONALS: list[Case] = [
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": 1}, "a"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"B": 1}, "b"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {}, "c"),
    ("{{ if .A }}a{{ else if .B }}b{{ else if .C }}c{{ end }}", {"C": 1}, "c"),
    ("{{ if .A }}a{{ end }}", {}, ""),
    ("{{ with .A }}{{ . }}{{ else with .B }}b{{ . }}{{ else }}none{{ end }}", {"A": 1}, "1"),
    ("{{ with .A }}{{ . }}{{ else with .B }}b{{ . }}{{ else }}none{{ end }}", {"B": 2}, "b2"),
    ("{{ with .A }}{{ . }}{{ else with .B }}b{{ . }}{{ else }}none{{ end }}", {}, "none"),
    ("{{ with .A }}{{ .B }}{{ end }}", {"A": {"B": "inner"}}, "inner"),
]

RANGES: list[Case] = [
    ("{{ range .L }}{{ . }},{{ end }}", {"L": [1, 2]}, "1,2,"),
    ("{{ range $i, $v := .L }}{{ $i }}={{ $v }} {{ end }}", {"L": ["a", "b"]}, "0=a 1=b "),
    ("{{ range $v := .L }}{{ $v }}{{ end }}", {"L": ["a", "b"]}, "ab"),
    ("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", {"M": {"b": 2, "a": 1}}, "a1b2"),
    ("{{ range .M }}{{ . }}{{ end }}", {"M": {"b": 2, "a": 1}}, "12"),
    ("{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("{{ range $i := 2 }}{{ $i }}{{ end }}", {}, "01"),
    ("{{ range 0 }}x{{ else }}empty{{ end }}", {}, "empty"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {}, "empty"),
    ("{{ range .M }}x{{ else }}empty{{ end }}", {"M": {}}, "empty"),
    (
        "{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}"
        "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}",
        {"L": [1, 2, 3, 4, 5]},
        "13",
    ),
    (
        "{{ range .A }}{{ range $.B }}{{ . }}{{ end }}{{ end }}",
        {"A": [1, 2], "B": ["x", "y"]},
        "xyxy",
    ),
    (
        "{{ $i := 0 }}{{ $v := 0 }}{{ range $i, $v = .L }}{{ end }}{{ $i }}{{ $v }}",
        {"L": ["a", "b"]},
        "1b",
    ),
    (
        "{{ range $i, $m := .L }}{{ range $m }}{{ $i }}{{ . }}{{ end }}{{ end }}",
        {"L": [[1], [2, 3]]},
        "011213",
    ),
    (
        "{{ range $x := ($y := .L) }}{{ $x }}{{ $y }};{{ end }}",
        {"L": [1, 2]},
        "1[1,2];2[1,2];",
    ),
]

TEMPLATES: list[Case] = [
    (
        '{{ define "T" }}<{{ . }}>{{ end }}{{ template "T" .A }}{{ template "T" "x" }}',
        {"A": 1},
        "<1><x>",
    ),
    ('{{ template "T" }}{{ define "T" }}[{{ . }}]{{ end }}', {}, "[]"),
    ('{{ block "B" .A }}default {{ . }}{{ end }}', {"A": "x"}, "default x"),
    (
        '{{ define "T" }}{{ $.N }}{{ end }}{{ template "T" .Sub }}',
        {"N": "r", "Sub": {"N": "s"}},
        "s",
    ),
    ('{{ define "E" }}   {{ end }}{{ define "E" }}full{{ end }}{{ template "E" }}', {}, "full"),
    (
        '{{ define "tree" }}{{ .Name }}{{ range .Kids }}({{ template "tree" . }}){{ end }}{{ end }}'
        '{{ template "tree" . }}',
        {"Name": "a", "Kids": [{"Name": "b", "Kids": [{"Name": "d"}]}, {"Name": "c"}]},
        "a(b(d))(c)",
    ),
]

FUNCTIONS: list[Case] = [
    ("{{ and 1 0 2 }}", {}, "0"),
    ("{{ and 1 2 }}", {}, "2"),
    ('[{{ or 0 "" }}]', {}, "[]"),
    ('{{ or 0 "x" 3 }}', {}, "x"),
    ("{{ or .A (index .L 5) }}", {"A": "a", "L": []}, "a"),
    ("[{{ and .Missing (index .Missing 3) }}]", {}, "[]"),
    ('{{ not 0 }} {{ not "x" }}', {}, "true false"),
    ("{{ eq 1 1 }} {{ eq 1 2 }}", {}, "true false"),
    ('{{ eq .R "a" "b" "c" }}', {"R": "c"}, "true"),
    ('{{ eq .Missing "x" }} {{ eq nil nil }} {{ eq .Missing nil }}', {}, "false true true"),
    ("{{ eq 1 1.0 }} {{ ne 1 2 }} {{ ne .A .A }}", {"A": "x"}, "true true false"),
    ("{{ lt 1 2 }} {{ le 2 2 }} {{ gt 3 2 }} {{ ge 1 2 }}", {}, "true true true false"),
    ('{{ lt "a" "b" }} {{ gt "a" "b" }} {{ lt 1.5 2 }}', {}, "true false true"),
    ('{{ len "héllo" }} {{ len .L }} {{ len .M }}', {"L": [1, 2], "M": {"a": 1}}, "5 2 1"),
    (
        '{{ index .L 1 }} {{ index .M "k" }} {{ index .N 0 1 }}',
        {"L": [1, 2], "M": {"k": "v"}, "N": [[1, 2]]},
        "2 v 2",
    ),
    ('[{{ index .M "missing" }}] {{ index .L }}', {"M": {}, "L": [1]}, "[] [1]"),
    ('{{ slice "hello" 1 3 }} {{ slice "hello" 2 }} {{ slice "hello" }}', {}, "el llo hello"),
    ("{{ slice .L 1 }} {{ slice .L 1 2 }} {{ slice .L 3 }}", {"L": [1, 2, 3]}, "[2,3] [2] []"),
    ('{{ print 1 2 "a" "b" 3 }}', {}, "1 2ab3"),
    ('{{ print "a" .L }}', {"L": [1]}, "a[1]"),
    ('{{ println "a" 1 }}', {}, "a 1\n"),
    (r"""{{ html "<a href=\"x\">&'" }}""", {}, "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"),
    (r"""{{ js "it's <b>\"q\"\n" }}""", {}, r"""it\'s \u003Cb\u003E\"q\"\u000A"""),
    ('{{ urlquery "a b&c=d/é" }}', {}, "a+b%26c%3Dd%2F%C3%A9"),
    ('{{ html "a" 1 }}', {}, "a1"),
    ("{{ json .V }}", {"V": {"a": [1, "é", None, True, 0.5]}}, '{"a":[1,"é",null,true,0.5]}'),
    (r'{{ json "a\"b" }} {{ json 3 }}', {}, r'"a\"b" 3'),
    ("{{ .P | toTypeScriptType }}", {"P": {"type": "integer"}}, "number"),
    ("{{ toTypeScriptType .P }}", {"P": {"type": ["string", "null"]}}, "string | null"),
    ("{{ toTypeScriptType .P }}", {"P": {"type": "object"}}, "Record<string, any>"),
    ("{{ toTypeScriptType .P }}", {"P": {}}, "any"),
]

PRINTF: list[Case] = [
    ('{{ printf "%d items" 3 }}', {}, "3 items"),
    ('{{ printf "%5d|%-5d|%05d|%+d" 42 42 42 5 }}', {}, "   42|42   |00042|+5"),
    ('{{ printf "%.2f %f %8.3f|" 3.14159 1.5 3.14159 }}', {}, "3.14 1.500000    3.142|"),
    ('{{ printf "%v %v %v %v" 1.0 true .L .M }}', {"L": [1], "M": {"a": 1}}, '1 true [1] {"a":1}'),
    ('{{ printf "%s|%5s|%-5s|%.2s" "x" "ab" "ab" "abcdef" }}', {}, "x|   ab|ab   |ab"),
    (r'{{ printf "%q" "hi\n" }}', {}, r'"hi\n"'),
    ('{{ printf "100%%" }}', {}, "100%"),
    ('{{ printf "%d" "x" }}', {}, "%!d(string=x)"),
    ('{{ printf "%s" 5 }}', {}, "%!s(int=5)"),
    ('{{ printf "%d" }}', {}, "%!d(MISSING)"),
    ('{{ printf "a" 1 "b" }}', {}, "a%!(EXTRA int=1, string=b)"),
    ('{{ printf "%" }}', {}, "%!(NOVERB)"),
    ('{{ printf "%x %X %o %b %#x" 255 255 8 5 255 }}', {}, "ff FF 10 101 0xff"),
    ('{{ printf "%t %c %T %T" true 65 1.5 "s" }}', {}, "true A float64 string"),
    (
        '{{ printf "%e %g %g %.3g" 1234.5678 0.000001 2.5 1234.5678 }}',
        {},
        "1.234568e+03 1e-06 2.5 1.23e+03",
    ),
    ('{{ printf "%v|%s" .N .N }}', {}, "|"),
    ('{{ printf "%f" 2 }}', {}, "2.000000"),
]


def _cases(*tables: list[Case]) -> list[Case]:
    return [case for table in tables for case in table]


@pytest.mark.parametrize(
    ("source", "data", "expected"),
    _cases(
        TEXT_AND_TRIM,
        FIELDS,
        PRINTING,
        LITERALS,
        PIPELINES,
        VARIABLES,
        CONDITIONALS,
        RANGES,
        TEMPLATES,
        FUNCTIONS,
        PRINTF,
    ),
)
def test_renders(source: str, data: Any, expected: str) -> None:
    assert render(source, data) == expected


@pytest.mark.parametrize(("value", "expected"), FLOATS)
def test_floats_print_like_go(value: float, expected: str) -> None:
    assert render("{{ .V }}", {"V": value}) == expected


@pytest.mark.parametrize("value", [False, 0, 0.0, None, "", [], {}], ids=lambda v: f"falsy-{v!r}")
def test_falsy_values(value: Any) -> None:
    assert render("{{ if .V }}T{{ else }}F{{ end }}", {"V": value}) == "F"


@pytest.mark.parametrize(
    "value", [True, 1, -1, 0.1, "x", [0], {"a": None}, object()], ids=lambda v: f"truthy-{v!r}"
)
def test_truthy_values(value: Any) -> None:
    assert render("{{ if .V }}T{{ else }}F{{ end }}", {"V": value}) == "T"


def test_dates() -> None:
    before = datetime.date.today()
    today, yesterday = render("{{ currentDate }} {{ yesterdayDate }}").split()
    after = datetime.date.today()
    assert today in {before.isoformat(), after.isoformat()}
    assert yesterday in {(day - datetime.timedelta(days=1)).isoformat() for day in (before, after)}


class _Record:
    def __init__(self) -> None:
        self.Name = "rec"
        self._secret = "hidden"

    def Method(self) -> str:
        return "called"


def test_object_attributes_but_not_private_ones_or_methods() -> None:
    data = {"O": _Record()}
    assert render("{{ .O.Name }}|{{ .O.Absent }}|", data) == "rec||"
    with pytest.raises(TemplateError, match="private"):
        render("{{ .O._secret }}", data)
    with pytest.raises(TemplateError, match="method calls are not supported"):
        render("{{ .O.Method }}", data)
    with pytest.raises(TemplateError, match="private"):
        render("{{ .O.__class__ }}", data)


def test_source_and_reuse() -> None:
    template = GoTemplate("{{ .A }}")
    assert template.source == "{{ .A }}"
    assert template.render({"A": 1}) == "1"
    assert template.render({"A": 2}) == "2"


@pytest.mark.parametrize(
    ("source", "field", "expected"),
    [
        ("{{ range .Messages }}{{ end }}", "Messages", True),
        ("{{ range .Messages }}{{ end }}", "messages", True),
        ("{{ .Prompt }}", "Messages", False),
        ('{{ define "t" }}{{ .Tools }}{{ end }}', "Tools", True),
        ("{{ if (len $.Suffix) }}{{ end }}", "Suffix", True),
        ("{{ range $m := .L }}{{ $m.Response }}{{ end }}", "Response", True),
        ("{{ .Function.Arguments }}", "Arguments", True),
        ("{{ (index .L 0).ToolCalls }}", "ToolCalls", True),
        ('{{ block "b" . }}{{ .System }}{{ end }}', "System", True),
        ('{{ index . "Messages" }}', "Messages", False),
        ("Messages {{/* .Messages */}}", "Messages", False),
    ],
)
def test_references(source: str, field: str, expected: bool) -> None:
    assert GoTemplate(source).references(field) is expected


# ---------------------------------------------------------------------------------------------
# Real model templates

CHATML = """\
{{- if .Messages }}{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}{{- if and (eq .Role "user") $last }}<|im_end|>
<|im_start|>assistant
{{ end }}{{- end }}{{- else }}{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""


def test_chatml_with_messages() -> None:
    data = {
        "Messages": [
            {"Role": "system", "Content": "You are terse."},
            {"Role": "user", "Content": "Hi"},
            {"Role": "assistant", "Content": "Hello."},
            {"Role": "user", "Content": "Bye"},
        ]
    }
    assert GoTemplate(CHATML).render(data) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chatml_last_message_from_assistant_stays_open() -> None:
    data = {"Messages": [{"Role": "user", "Content": "Hi"}, {"Role": "assistant", "Content": "He"}]}
    assert GoTemplate(CHATML).render(data) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHe"
    )


def test_chatml_legacy_prompt_and_response() -> None:
    template = GoTemplate(CHATML)
    assert template.render({"System": "S", "Prompt": "P"}) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.render({"Prompt": "P", "Response": "R"}) == (
        "<|im_start|>user\nP<|im_end|>\n<|im_start|>assistant\nR<|im_end|>"
    )
    assert template.references("Messages")
    assert template.references("Response")
    assert not template.references("Tools")


LLAMA3 = """\
{{- range .Messages }}
{{- if eq .Role "system" }}<|start_header_id|>system<|end_header_id|>

{{ .Content }}
{{- if $.Tools }}

Tools: {{ $.Tools }}
{{- end }}<|eot_id|>
{{- else if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>

{{- if .ToolCalls }}
{{range .ToolCalls}}{"name": "{{.Function.Name}}", "parameters": {{.Function.Arguments}}}{{end}}
{{- else }}

{{ .Content }}
{{- end }}<|eot_id|>
{{- end }}
{{- end }}<|start_header_id|>assistant<|end_header_id|>

"""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_llama3_with_tools_and_tool_calls() -> None:
    data = {
        "Tools": TOOLS,
        "Messages": [
            {"Role": "system", "Content": "You are helpful."},
            {"Role": "user", "Content": "Weather in Paris?"},
            {
                "Role": "assistant",
                "Content": "",
                "ToolCalls": [
                    {"Function": {"Name": "get_weather", "Arguments": {"city": "Paris"}}}
                ],
            },
            {"Role": "user", "Content": "Thanks"},
        ],
    }
    tools_json = (
        '[{"type":"function","function":{"name":"get_weather","parameters":'
        '{"type":"object","properties":{"city":{"type":"string"}}}}}]'
    )
    assert GoTemplate(LLAMA3).render(data) == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are helpful.\n\n"
        f"Tools: {tools_json}<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n"
        '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>'
        "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_without_tools() -> None:
    data = {
        "Messages": [
            {"Role": "system", "Content": "Sys"},
            {"Role": "user", "Content": "Q"},
            {"Role": "assistant", "Content": "A"},
        ]
    }
    assert GoTemplate(LLAMA3).render(data) == (
        "<|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_legacy_instruction_template() -> None:
    source = "[INST] {{ if .System }}{{ .System }} {{ end }}{{ .Prompt }} [/INST]"
    template = GoTemplate(source)
    assert template.render({"Prompt": "hi"}) == "[INST] hi [/INST]"
    assert template.render({"System": "be brief", "Prompt": "hi"}) == "[INST] be brief hi [/INST]"


# ---------------------------------------------------------------------------------------------
# Errors

PARSE_ERRORS = [
    ("{{ .X ", "template: 1: unclosed action"),
    ("a\nb\n{{ end }}", "template: 3: unexpected {{end}}"),
    ("{{ else }}", "unexpected {{else}}"),
    ("x\n{{ foo 1 }}", 'template: 2: function "foo" not defined'),
    ("{{ if .X }}", "unexpected EOF: {{if}} on line 1 has no {{end}}"),
    ("{{ range .X }}{{ else }}{{ else }}{{ end }}", "expected {{end}}; found {{else}}"),
    ("{{ with 1 }}{{ else if 1 }}{{ end }}", 'unexpected "if" in else'),
    ("{{ $x }}", 'undefined variable "$x"'),
    ("{{ $x = 1 }}", 'undefined variable "$x"'),
    ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", 'undefined variable "$y"'),
    ("{{ range .L }}{{ end }}{{ break }}", "{{break}} outside {{range}}"),
    ("{{ continue }}", "{{continue}} outside {{range}}"),
    ('{{ "unterminated }}', "unterminated quoted string"),
    ("{{ `raw }}", "unterminated raw quoted string"),
    ("{{ 'ab' }}", "malformed character constant"),
    (r'{{ "\q" }}', "unknown escape"),
    (r'{{ "\ud800" }}', "invalid Unicode"),
    ("{{ /* x */ }}", "unexpected '/'"),
    ("{{/* unclosed }}", "unclosed comment"),
    ("{{/* x */ .X }}", "comment ends before closing delimiter"),
    ("{{ ( .X }}", "unclosed left paren"),
    ("{{ .X ) }}", "unexpected right paren"),
    ("{{ }}", "missing value for command"),
    ("{{ () }}", "missing value for parenthesized pipeline"),
    ("{{ .X | }}", "missing command"),
    ("{{ .X | 1 }}", "non executable command in pipeline stage 2"),
    ('{{ define "a" }}x{{ end }}{{ define "a" }}y{{ end }}', 'multiple definition of template "a"'),
    (
        '{{ define "B" }}x{{ end }}{{ block "B" . }}y{{ end }}',
        'multiple definition of template "B"',
    ),
    ('{{ if true }}{{ define "a" }}{{ end }}{{ end }}', "only allowed at top level"),
    ("{{ template .X }}", 'unexpected ".X" in template clause'),
    ("{{ $a, $b := 1 }}", "too many declarations in command"),
    ("{{ 1abc }}", "bad number syntax"),
    ("{{ 1e999 }}", "bad number syntax"),
    ("{{ 99999999999999999999999 }}", "out of range"),
    ("{{ 3i }}", "complex numbers are not supported"),
    ("{{ print .X-1 }}", "bad character '-'"),
    ('{{ print "a""b" }}', 'unexpected ""b"" in operand'),
    ("{{ print 1 ; }}", "unexpected ';' in action"),
    ("{{ 1.Field }}", "bad number syntax"),
    ('{{ "s".Field }}', "unexpected . after term"),
    ("{{ a:b }}", "expected :="),
    ("{{ if }}{{ end }}", "missing value for if"),
    ("{{ end x }}", 'unexpected "x" in end'),
]


@pytest.mark.parametrize(("source", "message"), PARSE_ERRORS)
def test_parse_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        GoTemplate(source)
    assert message in str(caught.value)
    assert str(caught.value).startswith("template: ")


EXEC_ERRORS = [
    ("{{ index .L 5 }}", {"L": [1]}, "template: 1: error calling index: index out of range: 5"),
    ("{{ index .L -1 }}", {"L": [1]}, "index out of range: -1"),
    ('{{ index .L "a" }}', {"L": [1]}, "cannot index slice/array with type string"),
    ("{{ index nil 1 }}", {}, "index of untyped nil"),
    ("line\n{{ len 3 }}", {}, "template: 2: error calling len: len of type int"),
    ("{{ len .Missing }}", {}, "len of type <nil>"),
    ('{{ lt 1 "a" }}', {}, "incompatible types for comparison"),
    ('{{ eq 1 "a" }}', {}, "incompatible types for comparison"),
    ("{{ lt true false }}", {}, "invalid type for comparison"),
    ("{{ eq .L .L }}", {"L": [1]}, "non-comparable type"),
    ('{{ slice "abc" 2 1 }}', {}, "invalid slice index: 2 > 1"),
    ("{{ slice .L 0 5 }}", {"L": [1]}, "index out of range: 5"),
    ("{{ slice .L 0 1 1 }}", {"L": [1]}, "too many slice indexes"),
    ('{{ "a" "b" }}', {}, 'can\'t give argument to non-function "a"'),
    ("{{ .X 1 }}", {"X": 1}, "can't give argument to non-function .X"),
    ("{{ 1 | len }}", {}, "len of type int"),
    ("{{ nil }}", {}, "nil is not a command"),
    ('{{ template "nope" }}', {}, 'no such template "nope"'),
    ("{{ not 1 2 }}", {}, "wrong number of args for not: want 1 got 2"),
    ("{{ eq 1 }}", {}, "wrong number of args for eq: want at least 2 got 1"),
    ("{{ json }}", {}, "wrong number of args for json: want 1 got 0"),
    ("{{ printf 1 }}", {}, "expected string; got int"),
    ("{{ range .S }}{{ end }}", {"S": "str"}, "range can't iterate over str"),
    ("{{ range .B }}{{ end }}", {"B": True}, "range can't iterate over true"),
    ("{{ range $i, $v := 3 }}{{ end }}", {}, "can't use 3 to iterate over more than one variable"),
    ("{{ .X.Y }}", {"X": 3}, "can't evaluate field Y in type int"),
    ("{{ .L.Y }}", {"L": []}, "can't evaluate field Y in type []interface {}"),
    (
        '{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}',
        {},
        "exceeded maximum template depth (100)",
    ),
]


@pytest.mark.parametrize(("source", "data", "message"), EXEC_ERRORS)
def test_execution_errors(source: str, data: Any, message: str) -> None:
    template = GoTemplate(source)
    with pytest.raises(TemplateError) as caught:
        template.render(data)
    assert message in str(caught.value)


def test_unprintable_data_is_a_template_error() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(TemplateError, match="JSON"):
        render("{{ .L }}", {"L": cycle})
    with pytest.raises(TemplateError, match="cannot print integer"):
        render("{{ .N }}", {"N": 10**5000})
    with pytest.raises(TemplateError, match="JSON"):
        render("{{ json .O }}", {"O": object()})


def test_non_string_source() -> None:
    with pytest.raises(TemplateError):
        GoTemplate(b"{{ .X }}")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Limits


def _chain(depth: int) -> dict[str, Any]:
    data: dict[str, Any] = {"Leaf": True}
    for _ in range(depth):
        data = {"Child": data}
    return data


RECURSIVE = (
    '{{ define "d" }}{{ if .Child }}+{{ range $x := 1 }}{{ template "d" $.Child }}{{ end }}'
    '{{ end }}{{ end }}{{ template "d" . }}'
)


def test_template_recursion_up_to_the_depth_limit() -> None:
    template = GoTemplate(RECURSIVE)
    assert template.render(_chain(limits.MAX_TEMPLATE_DEPTH - 1)) == "+" * 99
    with pytest.raises(TemplateError, match="maximum template depth"):
        template.render(_chain(limits.MAX_TEMPLATE_DEPTH))


def test_nesting_limit() -> None:
    depth = limits.MAX_NESTING
    nested = "{{ if 1 }}" * depth + "x" + "{{ end }}" * depth
    assert render(nested) == "x"
    too_deep = "{{ if 1 }}" * (depth + 1) + "x" + "{{ end }}" * (depth + 1)
    with pytest.raises(TemplateError, match="nesting deeper than"):
        GoTemplate(too_deep)
    with pytest.raises(TemplateError, match="nesting deeper than"):
        GoTemplate("{{ " + "(" * 500 + "1" + ")" * 500 + " }}")


def test_long_else_if_chains_cost_no_depth() -> None:
    branches = "".join(f"{{{{ else if eq . {n} }}}}{n}" for n in range(1, 500))
    template = GoTemplate("{{ range . }}{{ if eq . 0 }}zero" + branches + "{{ end }}{{ end }}")
    assert template.render([0, 250, 499]) == "zero250499"  # type: ignore[arg-type]


def test_output_limit() -> None:
    source = "{{ range 2000 }}" + "x" * 10_000 + "{{ end }}"
    with pytest.raises(TemplateError, match="output larger than"):
        render(source)


def test_string_doubling_is_stopped() -> None:
    source = '{{ $x := "ab" }}{{ range 100 }}{{ $x = print $x $x }}{{ end }}'
    with pytest.raises(TemplateError, match="larger than"):
        render(source)


def test_built_characters_limit() -> None:
    source = '{{ range 1000 }}{{ $y := printf "%999999d" 1 }}{{ end }}'
    with pytest.raises(TemplateError, match="functions built more than"):
        render(source)


def test_iteration_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_ITERATIONS", 1000)
    assert render("{{ range 1000 }}{{ end }}") == ""
    with pytest.raises(TemplateError, match="more than 1000 iterations"):
        render("{{ range 10 }}{{ range 10 }}{{ range 11 }}{{ end }}{{ end }}{{ end }}")
    with pytest.raises(TemplateError, match="iterations"):
        render("{{ range 1000000000000 }}{{ end }}")


def test_step_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_STEPS", 10_000)
    source = (
        '{{ define "a" }}{{ template "b" }}{{ template "b" }}{{ end }}'
        '{{ define "b" }}{{ template "c" }}{{ template "c" }}{{ end }}'
        '{{ define "c" }}'
        + "{{ 1 }}" * 1000
        + '{{ end }}{{ template "a" }}{{ template "a" }}'
        + '{{ template "a" }}'
    )
    with pytest.raises(TemplateError, match="more than 10000 steps"):
        render(source)


# ---------------------------------------------------------------------------------------------
# Properties: only TemplateError ever escapes

FRAGMENTS = [
    "{{", "}}", "{{- ", " -}}", " ", "\n", "if ", "else ", "end", "range ", "with ", "define ",
    "template ", "block ", "break", "continue", ".X", ".Messages", ".", "$", "$x", "$i", ":=",
    "=", "|", "(", ")", '"', '"a"', "`", "'", "'c'", "1", "-1", "0.5", "0x", "true", "nil",
    "eq ", "len ", "index ", "slice ", "print ", "printf ", '"%d %s %v"', "and ", "or ", "not ",
    "/*", "*/", ",", "text", "json ", "\\", "}}{{", "$.X", "lt ", "html ", "{{end}}",
]  # fmt: skip

EXPRESSIONS = [
    ".", ".X", ".Y.Z", ".L", ".M", ".Messages", "$", "$.X", "1", "0", "-2", "1.5", '"s"', '""',
    "true", "nil", "(len .L)", "(index .L 0)", "(slice .L 1)", "(eq .X 1)", "(print .X .Y)",
    "(json .)", '(printf "%d|%s|%v|%q|%5.2f" .X .Y .Z .L .M)', '(index .M "k")', "(.X)",
]  # fmt: skip

FUNCTION_NAMES = sorted(functions.FUNCTIONS)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-20, max_value=20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
keys = st.one_of(st.sampled_from(["X", "Y", "Z", "L", "M", "k", "Role", "Messages"]), st.text())
data_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=12,
)
documents = st.dictionaries(keys, data_values, max_size=6)

expressions = st.sampled_from(EXPRESSIONS)
calls = st.builds(
    lambda name, args: " ".join([name, *args]),
    st.sampled_from(FUNCTION_NAMES),
    st.lists(expressions, max_size=3),
)
pipelines = st.one_of(
    expressions,
    calls,
    st.builds(lambda a, b: f"{a} | {b}", expressions, calls),
)
leaves = st.one_of(
    st.sampled_from(["text ", "\n", " ", "{{/* c */}}", "{{- /* c */ -}}"]),
    pipelines.map(lambda p: "{{ " + p + " }}"),
    pipelines.map(lambda p: "{{- $v := " + p + " -}}{{ $v }}"),
)
bodies = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda p, a: f"{{{{ if {p} }}}}{a}{{{{ end }}}}", pipelines, inner),
        st.builds(
            lambda p, q, a, b, c: (
                f"{{{{ if {p} }}}}{a}{{{{ else if {q} }}}}{b}{{{{ else }}}}{c}{{{{ end }}}}"
            ),
            pipelines,
            pipelines,
            inner,
            inner,
            inner,
        ),
        st.builds(lambda p, a: f"{{{{ with {p} }}}}{a}{{{{ end }}}}", pipelines, inner),
        st.builds(
            lambda p, a, b: f"{{{{ range $i, $e := {p} }}}}{a}{{{{ else }}}}{b}{{{{ end }}}}",
            pipelines,
            inner,
            inner,
        ),
        st.builds(
            lambda p, a: (
                f"{{{{ range {p} }}}}{a}{{{{ if . }}}}{{{{ break }}}}{{{{ end }}}}{{{{ end }}}}"
            ),
            pipelines,
            inner,
        ),
        st.builds(
            lambda a, p: f'{{{{ define "t" }}}}{a}{{{{ end }}}}{{{{ template "t" {p} }}}}',
            inner,
            pipelines,
        ),
        st.lists(inner, max_size=3).map("".join),
    ),
    max_leaves=8,
)

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _parse_and_render(source: str, data: Any) -> None:
    try:
        template = GoTemplate(source)
    except TemplateError as exc:
        assert "internal error" not in str(exc)
        return
    try:
        assert isinstance(template.render(data), str)
    except TemplateError as exc:
        # a deliberate error, not a Python exception that the wrapper turned into one
        assert "internal error" not in str(exc)
        assert "Error: " not in str(exc)


@PROPERTY_SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_template_error(source: str) -> None:
    _parse_and_render(source, {})


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join), documents)
def test_fragment_soup_raises_only_template_error(source: str, data: dict[str, Any]) -> None:
    _parse_and_render(source, data)


@PROPERTY_SETTINGS
@given(bodies, documents)
def test_grammar_templates_render_or_raise_template_error(
    source: str, data: dict[str, Any]
) -> None:
    _parse_and_render(source, data)


@PROPERTY_SETTINGS
@given(st.sampled_from(EXPRESSIONS), data_values)
def test_any_value_prints_or_raises_template_error(expression: str, value: Any) -> None:
    data = {"X": value, "Y": value, "Z": value, "L": value, "M": value, "Messages": value}
    for source in (
        "{{ " + expression + " }}",
        "{{ range " + expression + " }}{{ . }}{{ end }}",
        '{{ printf "%v %d %s %q %x %.1f" ' + expression + " . . . . . }}",
        "{{ eq " + expression + " .X }}{{ lt " + expression + " .Y }}",
    ):
        _parse_and_render(source, data)
