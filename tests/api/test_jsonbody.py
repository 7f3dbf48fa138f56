"""Hostile JSON (too deep, lone surrogates) is a 400 at parse time, valid JSON passes."""

from __future__ import annotations

import json

import pytest

from corral.api.jsonbody import MAX_JSON_DEPTH, check_json_text, load_json
from corral.errors import BadRequestError

DEEP = "invalid JSON: nesting deeper than 128 levels"
SURROGATE = "invalid JSON: lone surrogate"


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


HOSTILE = [
    pytest.param(_nested(10_000), DEEP, id="arrays-10000"),
    pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, DEEP, id="objects-10000"),
    pytest.param(_nested(MAX_JSON_DEPTH + 1), DEEP, id="arrays-129"),
    pytest.param(
        b'{"model":"m","format":' + b'{"a":' * 200 + b"1" + b"}" * 201, DEEP, id="format-200"
    ),
    pytest.param(b'{"model":"smollm2:135m","prompt":"\\ud800"}', SURROGATE, id="prompt"),
    pytest.param(b'{"model":"m","system":"x\\uDC00y"}', SURROGATE, id="system-low"),
    pytest.param(b'{"model":"m","options":{"stop":["\\udbff"]}}', SURROGATE, id="stop"),
    pytest.param(b'{"\\ud800":1}', SURROGATE, id="key"),
    pytest.param(b'{"input":["ok","\\ud83d"]}', SURROGATE, id="high-without-low"),
    pytest.param(b'{"p":"\\ude00\\ud83d"}', SURROGATE, id="pair-reversed"),
    pytest.param(b'{"p":"\xed\xa0\x80"}', SURROGATE, id="raw-utf8-surrogate"),
]


@pytest.mark.parametrize(("body", "message"), HOSTILE)
def test_load_json_refuses(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        load_json(body)
    assert caught.value.status == 400
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(("body", "message"), HOSTILE)
def test_check_json_text_refuses_without_parsing(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_json_text(body)
    assert caught.value.message.startswith(message)


VALID = [
    pytest.param(_nested(MAX_JSON_DEPTH), id="arrays-128"),
    pytest.param(b'{"p":"\\ud83d\\ude00"}', id="surrogate-pair"),
    pytest.param(b'{"p":"\\\\ud800"}', id="escaped-backslash-then-text"),
    pytest.param(b'{"p":"' + b"[" * 5000 + b'"}', id="brackets-inside-a-string"),
    pytest.param(b'{"p":"\\"' + b"{" * 500 + b'"}', id="escaped-quote-then-brackets"),
    pytest.param(
        json.dumps({"messages": [{"role": "user", "content": "hi"}] * 2000}).encode(),
        id="2000-messages",
    ),
    pytest.param('{"p": "caf\u00e9 \U0001f600"}'.encode(), id="utf8"),
]


@pytest.mark.parametrize("body", VALID)
def test_valid_json_passes(body: bytes) -> None:
    check_json_text(body)
    assert load_json(body) == json.loads(body)


def test_brackets_after_an_escaped_backslash_count() -> None:
    # "\\" ends with an escaped backslash: the quote after it closes the string
    body = b'{"s":"\\\\","t":' + _nested(200) + b"}"
    with pytest.raises(BadRequestError):
        check_json_text(body)


def test_text_that_is_not_json_is_left_to_the_parser() -> None:
    check_json_text(b"{oops")
    with pytest.raises(BadRequestError, match="invalid JSON"):
        load_json(b"{oops")


def test_load_json_takes_text_too() -> None:
    assert load_json('{"a": [1, 2]}') == {"a": [1, 2]}
    with pytest.raises(BadRequestError, match="lone surrogate"):
        load_json('{"a": "\\ud800"}')
