"""A model's draft is part of what a runner is loaded with: another draft, another runner."""

from __future__ import annotations

import argparse
from dataclasses import replace

from corral.runner.settings import LoadSettings, add_arguments, from_namespace
from corral.scheduler.decisions import reload_reason


def test_another_draft_needs_another_runner() -> None:
    loaded = LoadSettings(model_path="/m", draft_path="/d")
    assert reload_reason(loaded, loaded, frozenset()) == ""
    assert reload_reason(loaded, replace(loaded, draft_path=None), frozenset()) == (
        "the draft model changed"
    )
    assert reload_reason(loaded, replace(loaded, draft_path="/e"), frozenset()) != ""


def test_the_draft_travels_in_the_runner_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    settings = LoadSettings(model_path="/m", draft_path="/blobs/sha256-d")
    assert "--model-draft" in settings.argv()
    assert from_namespace(parser.parse_args(settings.argv())) == settings
    plain = LoadSettings(model_path="/m")
    assert from_namespace(parser.parse_args(plain.argv())).draft_path is None
