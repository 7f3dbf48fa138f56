"""``corral launch claude|codex``: a coding agent, configured against this server, started.

As ``ollama launch``: the agent's own configuration points it at ``OLLAMA_HOST`` and one
model, for this run only (environment variables and command-line overrides; no file of the
agent's is written):

- Claude Code speaks Anthropic's Messages API (``/v1/messages``): ``ANTHROPIC_BASE_URL``
  is the server, ``ANTHROPIC_AUTH_TOKEN`` the server's ``CORRAL_API_KEY`` (any token where
  it has none), and every model tier Claude Code picks from (opus, sonnet, haiku,
  sub-agents) is the chosen model.
- Codex speaks OpenAI's Responses API (``/v1/responses``): a ``corral`` model provider with
  ``base_url = "http://<host>/v1"`` and ``wire_api = "responses"`` (and
  ``env_key = "CORRAL_API_KEY"`` where a key is set), given with ``-c``.

A key is never printed: the printed configuration names ``$CORRAL_API_KEY`` instead.

Before the agent starts, the server is started if none answers and the model pulled if the
store lacks it (over HTTP, as every command). An agent that is not on PATH is not installed
for you: the configuration is printed instead, with the command that installs it.
``--config`` only prints the configuration. Arguments after the agent's name that corral does
not know go to the agent (``corral launch claude -- -p "Say hi"``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from corral.cli import _output as output
from corral.cli.client import CliError, ServerClient, env_settings
from corral.config import HostPort

__all__ = ["CONTEXT", "AgentLaunch", "agent_launch", "connectable_url", "launch"]

#: typer's settings for the command: unknown options and extra arguments go to the agent
CONTEXT: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}

DEFAULT_MODEL = "smollm2:135m"
AGENTS = ("claude", "codex")
_PROVIDER = "corral"
_TOKEN = "corral"  # the server asks for no key; the agents want one to be set


@dataclass(frozen=True, slots=True)
class AgentLaunch:
    """How to start one agent against the server."""

    name: str  # what the agent is called
    program: str  # the executable looked up on PATH
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    install: str = ""  # the command that installs it
    profile: str = ""  # a config-file equivalent, where the agent has one
    shown: dict[str, str] = field(default_factory=dict)  # env values printed otherwise

    def command_line(self) -> str:
        return shlex.join([self.program, *self.args])

    def configuration(self) -> str:
        """The exact configuration, as shell lines (and the config file, where one fits)."""
        lines = [
            f"export {key}={self.shown[key] if key in self.shown else shlex.quote(value)}"
            for key, value in self.env.items()
        ]
        lines.append(self.command_line())
        if self.profile:
            lines += ["", "# or, once, in the agent's config file:", self.profile.rstrip()]
        return "\n".join(lines)


def connectable_url(host: HostPort) -> str:
    """The server's URL as a client reaches it: a server listening on every address
    (``0.0.0.0``, ``::``) is reached on loopback."""
    name = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.host, host.host)
    return HostPort(host.scheme, name, host.port).url


def agent_launch(
    agent: str, base_url: str, model: str, extra: list[str], *, api_key: str = ""
) -> AgentLaunch:
    """``agent``'s launch against the server at ``base_url``; ``api_key``: the server's
    ``CORRAL_API_KEY``, if it has one (the agent inherits that variable)."""
    if agent == "claude":
        env = {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_AUTH_TOKEN": api_key or _TOKEN,
            "ANTHROPIC_API_KEY": "",
            "ANTHROPIC_DEFAULT_OPUS_MODEL": model,
            "ANTHROPIC_DEFAULT_SONNET_MODEL": model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
            "CLAUDE_CODE_SUBAGENT_MODEL": model,
        }
        return AgentLaunch(
            "Claude Code",
            "claude",
            ["--model", model, *extra],
            env,
            install="npm install -g @anthropic-ai/claude-code",
            shown={"ANTHROPIC_AUTH_TOKEN": '"$CORRAL_API_KEY"'} if api_key else {},
        )
    if agent == "codex":
        key = ', env_key = "CORRAL_API_KEY"' if api_key else ""
        provider = (
            f'{{name = "{_PROVIDER}", base_url = "{base_url}/v1", wire_api = "responses"{key}}}'
        )
        args = [
            "-c",
            f'model_provider="{_PROVIDER}"',
            "-c",
            f"model_providers.{_PROVIDER}={provider}",
            "-m",
            model,
            *extra,
        ]
        profile = "\n".join(
            [
                "# ~/.codex/config.toml; then: codex --profile corral",
                f"[profiles.{_PROVIDER}]",
                f'model = "{model}"',
                f'model_provider = "{_PROVIDER}"',
                "",
                f"[model_providers.{_PROVIDER}]",
                f'name = "{_PROVIDER}"',
                f'base_url = "{base_url}/v1"',
                'wire_api = "responses"',
                *(['env_key = "CORRAL_API_KEY"'] if api_key else []),
            ]
        )
        return AgentLaunch(
            "Codex", "codex", args, install="npm install -g @openai/codex", profile=profile
        )
    raise CliError(f'unknown agent "{agent}": choose one of {", ".join(AGENTS)}')


def _ensure_ready(client: ServerClient, model: str) -> None:
    """A server that answers, with ``model`` in its store."""
    if not client.is_up():
        log = client.start_background_server()
        output.err(f"started a corral server in the background at {client.base_url} (log: {log})")
    try:
        client.request("POST", "/api/show", {"model": model})
        return
    except CliError as exc:
        if exc.status != 404:
            raise
    output.err(f"pulling {model} ...")
    for event in client.stream("/api/pull", {"model": model, "stream": True}):
        if event.get("status") == "success":
            output.err(f"pulled {model}")


def launch(
    ctx: typer.Context,
    agent: Annotated[str, typer.Argument(help="The agent: claude or codex")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="The model the agent uses")
    ] = DEFAULT_MODEL,
    config: Annotated[
        bool, typer.Option("--config", help="Only print the agent's configuration")
    ] = False,
) -> None:
    """Start a coding agent (Claude Code, Codex) configured to use this server.

    Examples: corral launch claude --model qwen3:8b; corral launch codex --config;
    corral launch claude -- -p "Say hi"
    """
    settings = env_settings()
    url = connectable_url(settings.host)
    plan = agent_launch(agent, url, model, list(ctx.args), api_key=settings.api_key)
    if config:
        output.out(plan.configuration())
        return
    program = shutil.which(plan.program)
    if program is None:
        output.out(plan.configuration())
        raise CliError(
            f"{plan.program} is not installed (install it with: {plan.install}); the lines"
            " above configure it for this server"
        )
    client = ServerClient(settings)
    try:
        _ensure_ready(client, model)
    finally:
        client.close()
    environment = {**os.environ, **plan.env}
    code = subprocess.call([program, *plan.args], env=environment)
    raise typer.Exit(code)
