"""The ``keep_alive`` API field: Ollama's strict duration parsing (``parse_duration``) and the
one ``KeepAlive`` mixin every request that holds a model uses, whatever its dialect."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from corral.api.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from corral.api.types import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    KeepAlive,
    parse_duration,
)
from corral.config import FOREVER

# ---- parse_duration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
        ("0", 0.0),
        ("-0", 0.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("300ms", 0.3),
        ("1m30.5s", 90.5),
        ("+5s", 5.0),
        ("5.s", 5.0),
        (".5s", 0.5),
        ("2us", 2e-6),
        ("2µs", 2e-6),
        ("1000000ns", 1e-3),
    ],
)
def test_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, -0.001, "-1s", "-5m", "-1h30m", 10**400, float("inf")])
def test_negative_or_endless_duration_is_forever(value: str | float) -> None:
    assert parse_duration(value) == FOREVER


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", 'time: invalid duration "abc"'),
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("1h-5m", 'time: unknown unit "h-" in duration "1h-5m"'),  # Go's unit runs to a digit
        ("10x", 'time: unknown unit "x" in duration "10x"'),
        ("5 m", 'time: unknown unit " m" in duration "5 m"'),
        ("1h30", 'time: missing unit in duration "1h30"'),
        # a string is a Go duration even when it looks like a number (JSON numbers are seconds)
        ("10", 'time: missing unit in duration "10"'),
        ("2.5", 'time: missing unit in duration "2.5"'),
        ("-1", 'time: missing unit in duration "-1"'),
        (" 7s", 'time: invalid duration " 7s"'),
        ("1e3s", 'time: unknown unit "e" in duration "1e3s"'),
        (".", 'time: invalid duration "."'),
        ("3000000h", 'time: invalid duration "3000000h"'),  # beyond int64 nanoseconds
        ("nan", 'time: invalid duration "nan"'),
        (float("nan"), 'time: invalid duration "NaN"'),
        (True, "Unsupported type: 'bool'"),
    ],
)
def test_bad_duration_has_gos_wording(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(value)
    assert str(raised.value) == message


@given(st.text(max_size=30) | st.integers() | st.floats())
def test_duration_is_seconds_or_value_error(value: str | int | float) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert seconds >= 0
    assert not math.isnan(seconds)


REQUESTS: list[type[BaseModel]] = [
    GenerateRequest,
    ChatRequest,
    EmbedRequest,
    EmbeddingsRequest,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
]


@pytest.mark.parametrize("request_type", REQUESTS)
def test_every_request_reads_keep_alive_through_the_mixin(request_type: type[BaseModel]) -> None:
    assert issubclass(request_type, KeepAlive)
    assert request_type.model_validate({"keep_alive": "5m"}).keep_alive == 300.0
    assert request_type.model_validate({"keep_alive": -1}).keep_alive == FOREVER
    assert request_type.model_validate({}).keep_alive is None
    with pytest.raises(ValidationError, match='missing unit in duration "10"'):
        request_type.model_validate({"keep_alive": "10"})
    with pytest.raises(ValidationError, match="Unsupported type: 'bool'"):
        request_type.model_validate({"keep_alive": True})


def test_the_mixin_keeps_each_dialects_handling_of_unknown_fields() -> None:
    assert ChatCompletionRequest.model_validate({"keep_alive": 1, "x": 2}).model_extra == {"x": 2}
    assert ChatRequest.model_validate({"model": "m", "keep_alive": 1, "x": 2}).model_extra is None
