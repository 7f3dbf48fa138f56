"""``draft_num_predict``: typed as Ollama types it, sent to the runner with each request."""

from __future__ import annotations

import pytest

from corral.api.options import RUNNER_OPTIONS, Options, parse_parameter, validate_options
from corral.errors import InvalidOptionError


def test_draft_num_predict_is_an_integer_option_with_ollamas_default() -> None:
    assert Options().draft_num_predict == 4
    assert validate_options({"draft_num_predict": 2.0}) == {"draft_num_predict": 2}
    assert parse_parameter("draft_num_predict", "8") == 8
    with pytest.raises(InvalidOptionError):
        validate_options({"draft_num_predict": "many"})


def test_it_goes_with_the_request_and_never_reloads_a_runner() -> None:
    options = Options.merged({"draft_num_predict": 6}, {"draft_num_predict": 0})
    assert options.sampling()["draft_num_predict"] == 0
    assert "draft_num_predict" not in RUNNER_OPTIONS
    assert "draft_num_predict" not in options.runner_key()
