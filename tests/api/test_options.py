"""Option checking with Ollama's rules and messages, and the typed ``Options``."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.api.options import (
    OPTION_KINDS,
    RUNNER_OPTIONS,
    Options,
    parse_parameter,
    validate_options,
)
from corral.errors import InvalidOptionError

# ---- validate_options ---------------------------------------------------------------------


def test_valid_options_pass_through() -> None:
    raw = {
        "num_ctx": 2048,
        "temperature": 0.2,
        "top_k": 10,
        "use_mmap": False,
        "stop": ["</s>", "\n\n"],
        "seed": -1,
    }
    assert validate_options(raw) == raw


@pytest.mark.parametrize("raw", [None, {}])
def test_no_options(raw: dict[str, Any] | None) -> None:
    assert validate_options(raw) == {}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num_ctx", 2048.0, 2048),
        ("num_ctx", 2048.9, 2048),  # truncated, as Go's int64(float64)
        ("num_predict", -1.5, -1),
        ("temperature", 1, 1.0),
        ("top_p", 0, 0.0),
    ],
)
def test_numbers_are_converted(key: str, value: float, expected: float) -> None:
    checked = validate_options({key: value})
    assert checked == {key: expected}
    assert type(checked[key]) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_ctx", "2048", 'option "num_ctx" must be of type integer'),
        ("num_ctx", True, 'option "num_ctx" must be of type integer'),
        ("num_ctx", [1], 'option "num_ctx" must be of type integer'),
        ("seed", float("inf"), 'option "seed" must be of type integer'),
        ("seed", float("nan"), 'option "seed" must be of type integer'),
        ("temperature", "hot", 'option "temperature" must be of type float32'),
        ("temperature", False, 'option "temperature" must be of type float32'),
        ("top_p", {"a": 1}, 'option "top_p" must be of type float32'),
        ("temperature", float("inf"), 'option "temperature" must be a finite number'),
        pytest.param(
            "temperature", 10**400, 'option "temperature" must be a finite number', id="huge"
        ),
        ("use_mmap", 1, 'option "use_mmap" must be of type boolean'),
        ("use_mmap", "true", 'option "use_mmap" must be of type boolean'),
        ("stop", ["a", 1], 'option "stop" must be of an array of strings'),
        ("stop", 5, 'option "stop" must be of an array of strings'),
        ("stop", {"a": "b"}, 'option "stop" must be of an array of strings'),
    ],
)
def test_wrong_type_has_ollamas_message(key: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidOptionError) as raised:
        validate_options({key: value})
    assert str(raised.value) == message
    assert raised.value.status == 400


def test_stop_string_becomes_a_list() -> None:
    assert validate_options({"stop": "</s>"}) == {"stop": ["</s>"]}


def test_unknown_keys_are_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.api.options"):
        checked = validate_options({"num_ctx": 8, "bogus": 1, "Temperature": 0.1})
    assert checked == {"num_ctx": 8}
    assert "bogus" in caplog.text
    assert "Temperature" in caplog.text


def test_none_values_are_skipped() -> None:
    assert validate_options({"num_ctx": None, "stop": None, "top_k": 3}) == {"top_k": 3}


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.sampled_from(sorted(OPTION_KINDS)) | st.text(max_size=8), JSON))
def test_any_json_gives_options_or_invalid_option_error(raw: dict[str, Any]) -> None:
    try:
        checked = validate_options(raw)
    except InvalidOptionError as exc:
        assert str(exc).startswith("option ")
        return
    assert set(checked) <= set(OPTION_KINDS)
    for key, value in checked.items():
        kind = OPTION_KINDS[key]
        if kind == "int":
            assert type(value) is int
        elif kind == "float":
            assert type(value) is float
        elif kind == "bool":
            assert type(value) is bool
        else:
            assert isinstance(value, list)
            assert all(isinstance(s, str) for s in value)


# ---- parse_parameter ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("num_ctx", "4096", 4096),
        ("NUM_CTX", " 4096 ", 4096),
        ("seed", "-1", -1),
        ("temperature", "0.7", 0.7),
        ("temperature", "1", 1.0),
        ("use_mmap", "true", True),
        ("use_mmap", "1", True),
        ("use_mmap", "F", False),
        ("use_mmap", "false", False),
        ("stop", '"<|im_end|>"', ["<|im_end|>"]),
        ("stop", "</s>", ["</s>"]),
        ("stop", '"', ['"']),
    ],
)
def test_parameter(key: str, text: str, expected: Any) -> None:
    value = parse_parameter(key, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [
        ("x", "1", "unknown parameter 'x'"),
        ("Bogus", "1", "unknown parameter 'Bogus'"),
        ("num_ctx", "x", "invalid int value [x]"),
        ("num_ctx", "3.0", "invalid int value [3.0]"),
        ("num_ctx", "", "invalid int value []"),
        ("temperature", "x", "invalid float value [x]"),
        ("temperature", "nan", "invalid float value [nan]"),
        ("temperature", "inf", "invalid float value [inf]"),
        ("use_mmap", "x", "invalid bool value [x]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
    ],
)
def test_bad_parameter_has_ollamas_message(key: str, text: str, message: str) -> None:
    with pytest.raises(InvalidOptionError) as raised:
        parse_parameter(key, text)
    assert str(raised.value) == message


# ---- Options ---------------------------------------------------------------------------------


def test_defaults() -> None:
    options = Options.merged()
    assert options == Options()
    assert options.num_ctx == 4096
    assert options.stop == ()
    assert Options.merged(num_ctx_default=8192).num_ctx == 8192


def test_later_layers_win() -> None:
    model_params = {"temperature": 0.5, "top_k": 20, "num_ctx": 2048, "stop": ["a"]}
    request = {"temperature": 0.1, "stop": ["b", "c"], "top_k": None}
    options = Options.merged(model_params, request, num_ctx_default=8192)
    assert options.temperature == 0.1
    assert options.top_k == 20  # None in a later layer does not erase an earlier value
    assert options.num_ctx == 2048
    assert options.stop == ("b", "c")
    assert isinstance(options.stop, tuple)


def test_merged_ignores_keys_it_does_not_hold() -> None:
    options = Options.merged({"penalize_newline": True, "use_mlock": True, "bogus": 1})
    assert options == Options()


def test_merged_options_are_hashable() -> None:
    assert hash(Options.merged({"stop": ["x"]})) == hash(Options.merged({"stop": ("x",)}))


def test_runner_key_and_sampling_split_every_option() -> None:
    options = Options.merged({"num_ctx": 1024, "num_thread": 3, "temperature": 0.3})
    runner, sampling = options.runner_key(), options.sampling()
    assert set(runner) == RUNNER_OPTIONS
    assert not set(runner) & set(sampling)
    assert set(runner) | set(sampling) == {f.name for f in fields(Options)} - {"given"}
    assert runner["num_ctx"] == 1024
    assert runner["num_thread"] == 3
    assert sampling["temperature"] == 0.3
    assert "stop" in sampling


def test_sampling_change_keeps_the_runner_key() -> None:
    hot = Options.merged({"temperature": 1.5, "stop": ["x"]})
    cold = Options.merged({"temperature": 0.0})
    assert hot.runner_key() == cold.runner_key()
    assert Options.merged({"num_ctx": 8192}).runner_key() != cold.runner_key()


def test_every_option_kind_is_known_to_ollama_names() -> None:
    assert RUNNER_OPTIONS.issubset(OPTION_KINDS)
    assert {f.name for f in fields(Options)} - {"given"} <= set(OPTION_KINDS)


def test_given_names_the_load_time_options_a_layer_set() -> None:
    model_params = {"num_ctx": 2048, "temperature": 0.5}
    request = {"num_batch": 256, "num_gpu": None, "top_k": 3}
    options = Options.merged(model_params, request, num_ctx_default=8192)
    assert options.given == {"num_ctx", "num_batch"}
    assert options.is_set("num_ctx")
    assert not options.is_set("num_gpu")  # None in a layer is not a value
    assert not options.is_set("temperature")  # only load-time options are tracked


def test_defaults_are_not_given() -> None:
    options = Options.merged(num_ctx_default=8192)
    assert options.num_ctx == 8192
    assert options.given == frozenset()
    assert "given" not in options.sampling()
    assert "given" not in options.runner_key()
