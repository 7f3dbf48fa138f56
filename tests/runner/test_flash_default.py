"""Flash attention is on ``auto`` unless OLLAMA_FLASH_ATTENTION says otherwise, from the
environment through the scheduler's record to the runner's argv."""

from __future__ import annotations

import argparse

import pytest

from corral.config import Settings
from corral.runner.settings import LoadSettings, add_arguments, from_namespace


def _runner_reads(settings: LoadSettings) -> LoadSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(settings.argv()))


@pytest.mark.parametrize(
    ("env", "expected", "flag"),
    [({}, None, "auto"), ({"OLLAMA_FLASH_ATTENTION": "1"}, True, "on"),
     ({"OLLAMA_FLASH_ATTENTION": "false"}, False, "off")],
)  # fmt: skip
def test_the_variable_reaches_the_runner(
    env: dict[str, str], expected: bool | None, flag: str
) -> None:
    settings = LoadSettings("/m.gguf", flash_attention=Settings.from_env(env).flash_attention)
    argv = settings.argv()
    assert argv[argv.index("--flash-attn") + 1] == flag
    assert _runner_reads(settings).flash_attention is expected


def test_a_runner_started_without_the_flag_lets_llama_cpp_decide() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert from_namespace(parser.parse_args(["--model", "/m.gguf"])).flash_attention is None
    assert LoadSettings("/m.gguf").flash_attention is None
