"""The config blob's newest fields: written only when set, read back, inherited from a
FROM model unless the request gives its own; ``info`` checked as Ollama checks it."""

from __future__ import annotations

import json

import pytest

from corral.errors import BadRequestError
from corral.modelfile import CreateFields
from corral.server.create_info import config_extra
from corral.store import ModelConfig


def test_config_json_omits_empty_fields_and_round_trips() -> None:
    plain = json.loads(ModelConfig().to_json())
    assert not {"renderer", "parser", "requires", "capabilities"} & plain.keys()
    full = ModelConfig(renderer="r", parser="p", requires="0.14.0", capabilities=("vision",))
    data = json.loads(full.to_json())
    keys = list(data)
    assert keys.index("file_type") < keys.index("renderer") < keys.index("architecture")
    assert ModelConfig.from_json(full.to_json()) == full


def test_request_values_win_over_the_base() -> None:
    base = ModelConfig(renderer="old", parser="old-p", requires="0.1.0", capabilities=("a",))
    fields = CreateFields(from_="x", renderer="new")
    extra = config_extra(fields, {"capabilities": ["b", "a", 3]}, base)
    assert (extra.renderer, extra.parser, extra.requires) == ("new", "old-p", "0.1.0")
    assert extra.capabilities == ("a", "b")


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"model_family": 3}, 'info field "model_family" must be a string'),
        ({"context_length": "4k"}, 'info field "context_length" must be a number'),
        ({"context_length": -1}, 'info field "context_length" must be a non-negative integer'),
        ({"embedding_length": 1.5}, 'info field "embedding_length" must be a non-negative integer'),
    ],
)
def test_bad_info_is_a_400(info: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        config_extra(CreateFields(from_="x"), info, ModelConfig())
    assert caught.value.message == message
