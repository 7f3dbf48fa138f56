"""Modelfile parser and writer: every instruction, quoting, errors, parse ∘ format = id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.api.options import OPTION_KINDS
from corral.errors import ModelfileError
from corral.modelfile import (
    Command,
    Modelfile,
    decode_modelfile,
    format_modelfile,
    parse_modelfile,
    quote,
    to_create_fields,
)

FULL = '''# a comment
  # an indented comment

from ./model.gguf
ADAPTER /tmp/lora.gguf
PARAMETER temperature 0.7
PARAMETER num_ctx 4096
PARAMETER Stop "<|im_end|>"
PARAMETER stop <|im_start|>
PARAMETER use_mmap false
TEMPLATE """{{ if .System }}<|system|>{{ .System }}{{ end }}
{{ .Prompt }}"""
SYSTEM "You are \\"helpful\\"."
LICENSE """MIT License
Copyright"""
LICENSE Apache-2.0
MESSAGE user Is the sky blue?
MESSAGE assistant """Yes,
it is."""
'''


def test_every_instruction() -> None:
    mf = parse_modelfile(FULL)
    names = [c.name for c in mf.commands]
    assert names == [
        "from",
        "adapter",
        *["parameter"] * 5,
        "template",
        "system",
        "license",
        "license",
        "message",
        "message",
    ]
    assert mf.commands[0].line == 4
    fields = to_create_fields(mf)
    assert fields.from_ == "./model.gguf"
    assert fields.adapters == ("/tmp/lora.gguf",)
    assert fields.parameters == {
        "temperature": 0.7,
        "num_ctx": 4096,
        "stop": ["<|im_end|>", "<|im_start|>"],
        "use_mmap": False,
    }
    assert fields.template == "{{ if .System }}<|system|>{{ .System }}{{ end }}\n{{ .Prompt }}"
    assert fields.system == 'You are "helpful".'
    assert fields.license == ("MIT License\nCopyright", "Apache-2.0")
    assert fields.messages == (
        {"role": "user", "content": "Is the sky blue?"},
        {"role": "assistant", "content": "Yes,\nit is."},
    )


def test_format_reads_back() -> None:
    mf = parse_modelfile(FULL)
    assert parse_modelfile(format_modelfile(mf, header="made by a test\n\nsecond")) == mf


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no FROM line"),
        ("SYSTEM hi", "no FROM line"),
        ("FROM", "line 1: missing value for FROM"),
        ("FROM x\nBOGUS y", 'line 2: command must be one of "from", "license", "template"'),
        ("FROM x\nPARAMETER nope 1", "line 2: unknown parameter 'nope'"),
        ("FROM x\n\nPARAMETER num_ctx big", "line 3: invalid int value [big]"),
        ("FROM x\nPARAMETER temperature warm", "line 2: invalid float value [warm]"),
        (
            "FROM x\nPARAMETER num_ctx 99999999999999999999999",
            "line 2: invalid int value [99999999999999999999999]",
        ),
        ("FROM x\nPARAMETER seed 9223372036854775808", "line 2: invalid int value"),
        ("FROM x\nPARAMETER seed -9223372036854775809", "line 2: invalid int value"),
        ("FROM x\nPARAMETER num_ctx 1_000", "line 2: invalid int value [1_000]"),
        ("FROM x\nPARAMETER num_ctx 4096.0", "line 2: invalid int value [4096.0]"),
        ("FROM x\nPARAMETER temperature nan", "line 2: invalid float value [nan]"),
        ("FROM x\nPARAMETER temperature -inf", "line 2: invalid float value [-inf]"),
        ("FROM x\nPARAMETER top_p 1e39", "line 2: invalid float value [1e39]"),
        ("FROM x\nPARAMETER use_mmap maybe", "line 2: invalid bool value [maybe]"),
        ("FROM x\nPARAMETER temperature", "line 2: missing parameter value"),
        ("FROM x\nMESSAGE robot hi", 'line 2: message role must be one of "system", "user"'),
        ("FROM x\nMESSAGE user", "line 2: missing message content"),
        ('FROM x\nTEMPLATE """abc\n\n', 'line 2: unexpected EOF: unterminated """ string'),
        ('FROM x\nSYSTEM "abc', 'line 2: unexpected EOF: unterminated " string'),
        ('FROM x\nSYSTEM "a" b', "line 2: unexpected text after the closing quote"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text)
    assert info.value.message.startswith(message)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("PARAMETER seed 9223372036854775807", 9223372036854775807),
        ("PARAMETER seed -9223372036854775808", -9223372036854775808),
        ("PARAMETER num_ctx +8192", 8192),
        ("PARAMETER temperature 3.4e38", 3.4e38),
    ],
)
def test_parameters_at_the_edges_of_their_types(line: str, value: object) -> None:
    fields = to_create_fields(parse_modelfile(f"FROM x\n{line}\n"))
    assert list(fields.parameters.values()) == [value]


def test_bom_and_utf16() -> None:
    text = "FROM x\nSYSTEM héllo\n"
    assert decode_modelfile(b"\xef\xbb\xbf" + text.encode()) == text
    assert decode_modelfile(text.encode("utf-16")) == text
    with pytest.raises(ModelfileError):
        decode_modelfile(b"\xff\x00\xfe")
    assert parse_modelfile("\ufeff" + text).commands[1].value == "héllo"


@pytest.mark.parametrize(
    "value",
    ["plain", " lead", "trail ", "", "multi\nline", 'ends"', 'has """ inside', '"start', "a\\b"],
)
def test_quote_round_trips(value: str) -> None:
    assert parse_modelfile(f"FROM x\nSYSTEM {quote(value)}").commands[1].value == value


_values = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)
_keys = st.sampled_from(sorted(k for k, kind in OPTION_KINDS.items() if kind == "strs"))


@st.composite
def _commands(draw: st.DrawFn) -> Command:
    name = draw(st.sampled_from(["from", "license", "template", "system", "adapter", "p", "m"]))
    if name == "p":
        return Command("parameter", draw(_values), draw(_keys))
    if name == "m":
        role = draw(st.sampled_from(["system", "user", "assistant"]))
        return Command("message", draw(_values), role)
    return Command(name, draw(_values))


@settings(max_examples=300, deadline=None)
@given(st.lists(_commands(), max_size=8))
def test_parse_format_is_identity(commands: list[Command]) -> None:
    mf = Modelfile((Command("from", "base"), *commands))
    assert parse_modelfile(format_modelfile(mf)) == mf


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_only_raises_modelfile_error(text: str) -> None:
    try:
        mf = parse_modelfile(text, require_from=False)
    except ModelfileError:
        return
    assert parse_modelfile(format_modelfile(mf), require_from=False) == mf
