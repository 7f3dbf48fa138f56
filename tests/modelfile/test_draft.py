"""Modelfile ``DRAFT``: parsed, carried as a create field, written back unchanged."""

from __future__ import annotations

import pytest

from corral.errors import ModelfileError
from corral.modelfile import (
    Command,
    Modelfile,
    format_modelfile,
    parse_modelfile,
    to_create_fields,
)


def test_draft_is_a_create_field_and_the_last_one_wins() -> None:
    fields = to_create_fields(parse_modelfile("FROM a\ndraft ./one.gguf\nDRAFT smollm2:135m\n"))
    assert fields.draft == "smollm2:135m"
    assert to_create_fields(parse_modelfile("FROM a\n")).draft is None


def test_draft_round_trips_through_the_writer() -> None:
    modelfile = Modelfile(
        (Command("from", "/blobs/sha256-aa"), Command("draft", "/blobs/with space/sha256-bb"))
    )
    text = format_modelfile(modelfile)
    assert "DRAFT /blobs/with space/sha256-bb" in text.splitlines()
    assert parse_modelfile(text) == modelfile


def test_draft_without_a_value_is_an_error_with_its_line() -> None:
    with pytest.raises(ModelfileError, match="line 2"):
        parse_modelfile("FROM a\nDRAFT\n")
