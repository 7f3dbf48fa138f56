"""``corral launch claude|codex``: the configuration each agent gets, the printed
configuration when it is not installed, and a stand-in agent started against a real server."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from corral.cli.client import CliError
from corral.cli.launch import agent_launch, connectable_url
from corral.config import parse_host
from tests.conftest import ServerProcess

MODEL = "smollm2:135m"


def corral(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_claude_code_is_pointed_at_the_server() -> None:
    plan = agent_launch("claude", "http://127.0.0.1:11434", "qwen3:8b", ["-p", "hi"])
    assert plan.program == "claude"
    assert plan.args == ["--model", "qwen3:8b", "-p", "hi"]
    assert plan.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:11434"
    assert plan.env["ANTHROPIC_AUTH_TOKEN"] and plan.env["ANTHROPIC_API_KEY"] == ""
    for tier in ("OPUS", "SONNET", "HAIKU"):
        assert plan.env[f"ANTHROPIC_DEFAULT_{tier}_MODEL"] == "qwen3:8b"
    assert plan.env["CLAUDE_CODE_SUBAGENT_MODEL"] == "qwen3:8b"


def test_codex_gets_a_responses_provider() -> None:
    plan = agent_launch("codex", "http://127.0.0.1:11434", "qwen3:8b", ["exec", "hi"])
    assert plan.program == "codex" and plan.env == {}
    assert plan.args == [
        "-c",
        'model_provider="corral"',
        "-c",
        'model_providers.corral={name = "corral", base_url = "http://127.0.0.1:11434/v1",'
        ' wire_api = "responses"}',
        "-m",
        "qwen3:8b",
        "exec",
        "hi",
    ]
    assert 'wire_api = "responses"' in plan.profile
    assert 'base_url = "http://127.0.0.1:11434/v1"' in plan.profile


def test_unknown_agent() -> None:
    with pytest.raises(CliError, match="claude, codex"):
        agent_launch("cursor", "http://127.0.0.1:11434", MODEL, [])


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("example.internal:1234", "http://example.internal:1234"),
        ("", "http://127.0.0.1:11434"),
    ],
)
def test_the_url_an_agent_can_reach(raw: str, url: str) -> None:
    assert connectable_url(parse_host(raw)) == url


def test_config_only_prints(tmp_path: Path) -> None:
    env = {**os.environ, "OLLAMA_HOST": "0.0.0.0:9", "HOME": str(tmp_path)}
    result = corral("launch", "codex", "--config", "--model", "gemma3:270m", env=env)
    assert result.returncode == 0, result.stderr
    assert 'base_url = "http://127.0.0.1:9/v1"' in result.stdout
    assert 'model = "gemma3:270m"' in result.stdout
    assert "codex -c" in result.stdout
    claude = corral("launch", "claude", "--config", env=env)
    assert claude.returncode == 0
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:9\n" in claude.stdout
    assert f"claude --model {MODEL}" in claude.stdout
    assert not list(tmp_path.iterdir())  # nothing written


def test_an_agent_that_is_not_installed_gets_its_configuration_printed(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path), "OLLAMA_HOST": "127.0.0.1:9"}
    result = corral("launch", "claude", env=env)
    assert result.returncode == 1
    assert "export ANTHROPIC_BASE_URL=http://127.0.0.1:9" in result.stdout
    assert "claude is not installed" in result.stderr
    assert "npm install -g @anthropic-ai/claude-code" in result.stderr


def fake_agent(directory: Path, name: str, status: int) -> Path:
    """An executable named like the agent that records its arguments and environment."""
    record = directory / f"{name}.args"
    script = directory / name
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nenv > "{record}.env"\nexit {status}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.mark.model
def test_launch_starts_claude_against_the_server(
    server: ServerProcess, smollm2: str, tmp_path: Path
) -> None:
    record = fake_agent(tmp_path, "claude", 3)
    env = {**server.env(), "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = corral("launch", "claude", "--model", MODEL, "--", "-p", "Say hi", env=env)
    assert result.returncode == 3, result.stderr  # the agent's own exit status
    assert record.read_text().splitlines() == ["--model", MODEL, "-p", "Say hi"]
    environment = record.with_suffix(".args.env").read_text().splitlines()
    assert f"ANTHROPIC_BASE_URL={server.url}" in environment
    assert f"ANTHROPIC_DEFAULT_HAIKU_MODEL={MODEL}" in environment


@pytest.mark.model
def test_launch_pulls_a_missing_model_then_starts_codex(
    server: ServerProcess, tmp_path: Path
) -> None:
    httpx.request("DELETE", server.url + "/api/delete", json={"model": MODEL})
    record = fake_agent(tmp_path, "codex", 0)
    env = {**server.env(), "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    result = corral("launch", "codex", "-m", MODEL, "exec", "Say hi", env=env)
    assert result.returncode == 0, result.stderr
    assert f"pulling {MODEL}" in result.stderr
    args = record.read_text().splitlines()
    assert args[-4:] == ["-m", MODEL, "exec", "Say hi"]
    assert f'base_url = "{server.url}/v1"' in args[3]
    shown = httpx.post(server.url + "/api/show", json={"model": MODEL})
    assert shown.status_code == 200


def test_a_server_key_goes_to_the_agents_and_is_never_printed() -> None:
    claude = agent_launch("claude", "http://h:1", MODEL, [], api_key="s3cret")
    assert claude.env["ANTHROPIC_AUTH_TOKEN"] == "s3cret"
    assert "s3cret" not in claude.configuration()
    assert 'export ANTHROPIC_AUTH_TOKEN="$CORRAL_API_KEY"' in claude.configuration()
    codex = agent_launch("codex", "http://h:1", MODEL, [], api_key="s3cret")
    assert 'env_key = "CORRAL_API_KEY"' in codex.args[3]
    assert 'env_key = "CORRAL_API_KEY"' in codex.profile
    assert "s3cret" not in codex.configuration() + " ".join(codex.args)
