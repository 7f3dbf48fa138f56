"""Structured output through the real server and the ``ollama`` client: five JSON schemas
(nested $ref, arrays of objects, enums, optional properties, numbers with bounds), each
answer complete (``done_reason == "stop"``) and valid under ``jsonschema``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import ollama
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested-ref": {
        "$defs": {
            "address": {
                "type": "object",
                "properties": {
                    "street": {"type": "string", "maxLength": 30},
                    "city": {"type": "string", "maxLength": 20},
                },
                "required": ["street", "city"],
            }
        },
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "home": {"$ref": "#/$defs/address"},
            "work": {"$ref": "#/$defs/address"},
        },
        "required": ["name", "home", "work"],
    },
    "array-of-objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "fruit": {"type": "string", "maxLength": 12},
                        "count": {"type": "integer", "minimum": 0, "maximum": 99},
                    },
                    "required": ["fruit", "count"],
                },
            }
        },
        "required": ["items"],
    },
    "enums": {
        "type": "object",
        "properties": {
            "mood": {"enum": ["happy", "sad", "calm"]},
            "level": {"enum": [1, 2, 3]},
            "ok": {"type": "boolean"},
        },
        "required": ["mood", "level", "ok"],
    },
    "optional-properties": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 25},
            "subtitle": {"type": "string", "maxLength": 25},
            "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        },
        "required": ["title"],
        "additionalProperties": False,
    },
    "numbers-and-anyof": {
        "type": "object",
        "properties": {
            "temperature": {"type": "number", "minimum": -50, "maximum": 60},
            "unit": {"anyOf": [{"const": "C"}, {"const": "F"}]},
            "note": {"type": ["string", "null"], "maxLength": 20},
        },
        "required": ["temperature", "unit", "note"],
    },
}

PROMPTS = {
    "nested-ref": "Make up a person with a home and a work address.",
    "array-of-objects": "List some fruit in a basket with their counts.",
    "enums": "How do you feel today?",
    "optional-properties": "Name a film.",
    "numbers-and-anyof": "What is the weather like?",
}


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[ollama.Client]:
    api = ollama.Client(host=server.url)
    yield api
    api._client.close()


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_schema_output_is_complete_and_valid(client: ollama.Client, name: str) -> None:
    schema = SCHEMAS[name]
    reply = client.chat(
        model="smollm2:135m",
        messages=[{"role": "user", "content": PROMPTS[name]}],
        format=schema,
        options={"temperature": 0, "num_predict": 400},
    )
    assert reply.done_reason == "stop", reply.message.content
    jsonschema.validate(json.loads(reply.message.content or ""), schema)


def test_schema_output_is_valid_when_sampled(client: ollama.Client) -> None:
    schema = SCHEMAS["array-of-objects"]
    for seed in (1, 2, 3):
        reply = client.chat(
            model="smollm2:135m",
            messages=[{"role": "user", "content": PROMPTS["array-of-objects"]}],
            format=schema,
            options={"temperature": 1.0, "seed": seed, "num_predict": 400},
        )
        assert reply.done_reason == "stop", reply.message.content
        jsonschema.validate(json.loads(reply.message.content or ""), schema)
