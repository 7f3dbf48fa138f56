"""RENDERER, PARSER and REQUIRES (newest Ollama's Modelfile commands): parsed, written back,
turned into create fields; REQUIRES must be a semantic version."""

from __future__ import annotations

import pytest

from corral.errors import ModelfileError
from corral.modelfile import format_modelfile, parse_modelfile, to_create_fields

TEXT = "FROM base\nRENDERER qwen3-coder\nPARSER qwen3-coder\nREQUIRES 0.14.0\n"


def test_parsed_into_create_fields_and_the_request_body() -> None:
    fields = to_create_fields(parse_modelfile(TEXT))
    assert (fields.renderer, fields.parser, fields.requires) == (
        "qwen3-coder",
        "qwen3-coder",
        "0.14.0",
    )
    body = fields.request_body()
    assert body["renderer"] == "qwen3-coder" and body["requires"] == "0.14.0"


def test_round_trip_and_case_insensitive() -> None:
    parsed = parse_modelfile(TEXT.lower().replace("from base", "FROM base"))
    assert parse_modelfile(format_modelfile(parsed)) == parsed
    assert [c.name for c in parsed.commands] == ["from", "renderer", "parser", "requires"]


@pytest.mark.parametrize(
    ("written", "stored"),
    [
        ("0.14.0", "0.14.0"),
        ("v0.14.0", "0.14.0"),
        ("1", "1"),
        ("1.2", "1.2"),
        ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
    ],
)
def test_requires_versions(written: str, stored: str) -> None:
    fields = to_create_fields(parse_modelfile(f"FROM base\nREQUIRES {written}\n"))
    assert fields.requires == stored


@pytest.mark.parametrize("written", ["latest", "01.2.3", "1.2.3.4", "1.2-rc1", "v", "1.0.0-01"])
def test_requires_must_be_semver(written: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        to_create_fields(parse_modelfile(f"FROM base\nREQUIRES {written}\n"))
    assert caught.value.message == "line 2: requires must be a valid semver (e.g. 0.14.0)"


def test_unknown_command_lists_newest_commands() -> None:
    with pytest.raises(ModelfileError) as caught:
        parse_modelfile("FROM x\nBOGUS y\n")
    assert '"renderer", "parser", "parameter", "message", or "requires"' in caught.value.message
