"""The interactive ``corral run`` as a person uses it: a real pseudo-terminal (pexpect), the
real command, a real server with smollm2:135m. Every step waits for what the session prints
(``expect`` with a deadline), never for a fixed time."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pexpect
import pytest

from corral.store import ModelStore
from tests.cli.test_cli import corral, write_greedy_model
from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"
PROMPT = ">>> "
# The placeholder is drawn only on a fresh, empty prompt: unlike ">>> ", which prompt_toolkit
# may draw again while it renders the line being typed, it marks "ready for the next line".
READY = "Send a message"
# "... " without its space: prompt_toolkit moves the cursor past a trailing blank instead
CONTINUATION = re.escape("...")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|[\r\u2800-\u28ff]")


def plain(text: str) -> str:
    """What a person reads: escape codes, carriage returns and spinner frames removed."""
    return _ANSI.sub("", text)


class Session:
    """``corral run MODEL`` on a pseudo-terminal, 100 columns wide."""

    def __init__(self, server: ServerProcess, home: Path, **env: str) -> None:
        full_env = {
            **server.env(),
            "HOME": str(home),
            "TERM": "xterm-256color",
            # nothing answers prompt_toolkit's cursor-position queries on a bare pty
            "PROMPT_TOOLKIT_NO_CPR": "1",
            # SIGABRT makes the session print every thread's stack (see _stuck)
            "PYTHONFAULTHANDLER": "1",
            **env,
        }
        self.server = server
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "corral", "run", MODEL],
            env=full_env,
            encoding="utf-8",
            codec_errors="replace",
            timeout=90,
            dimensions=(24, 100),
        )
        self.expect(READY)

    def expect(self, pattern: str, timeout: float = 90) -> str:
        """Wait for ``pattern`` (a regex); return the plain text seen before it."""
        try:
            self.child.expect(pattern, timeout=timeout)
        except pexpect.TIMEOUT:
            raise AssertionError(self._stuck(pattern, timeout)) from None
        return plain(self.child.before)

    def _stuck(self, pattern: str, timeout: float) -> str:
        """What a failed wait shows: the screen's last text, where the session's threads
        were (faulthandler's dump on SIGABRT), and what the server had loaded."""
        seen = str(self.child.before)
        if self.child.isalive():
            os.kill(self.child.pid, signal.SIGABRT)
            with contextlib.suppress(pexpect.TIMEOUT, pexpect.EOF):
                self.child.expect(pexpect.EOF, timeout=5)
            seen += str(self.child.before)
        try:
            loaded = httpx.get(f"{self.server.url}/api/ps", timeout=5).text
        except httpx.HTTPError as exc:
            loaded = f"/api/ps failed: {exc!r}"
        return (
            f"no {pattern!r} within {timeout} s; the session printed (last 4000 characters):\n"
            f"{plain(seen)[-4000:]}\n--- /api/ps: {loaded}\n"
            f"--- server log:\n{self.server.log_tail(30)}"
        )

    def type(self, line: str) -> None:
        self.child.send(line + "\r")  # Enter, as a terminal in raw mode sends it

    def command(self, line: str, answer: str) -> str:
        """A slash command and the text it prints, up to the next prompt."""
        self.type(line)
        self.expect(re.escape(answer))
        return plain(self.child.after) + self.expect(READY)

    def ask(self, question: str) -> str:
        """One turn: the answer text, without the echoed question."""
        self.type(question)
        seen = self.expect(READY)
        return seen.rsplit(question, 1)[-1].rsplit(PROMPT, 1)[0].strip()

    def deterministic(self) -> None:
        self.command("/set parameter temperature 0", "Set parameter 'temperature'")
        self.command("/set parameter seed 42", "Set parameter 'seed' to '42'")
        self.command("/set parameter num_predict 64", "Set parameter 'num_predict' to '64'")
        # greedy, the 135M model answers factual questions far better with a plain system
        # prompt than with its authors' default one, which the bundled model carries
        self.command("/set system You are a helpful assistant.", "Set system message.")

    def exit_status(self) -> int | None:
        self.child.expect(pexpect.EOF, timeout=30)
        self.child.close()
        status: int | None = self.child.exitstatus
        return status

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)


@pytest.fixture
def session(server: ServerProcess, smollm2: str, tmp_path: Path) -> Iterator[Session]:
    opened = Session(server, tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def saved_messages(server: ServerProcess, model: str) -> list[dict[str, str]]:
    shown = httpx.post(f"{server.url}/api/show", json={"model": model}, timeout=30)
    assert shown.status_code == 200, shown.text
    messages: list[dict[str, str]] = shown.json().get("messages", [])
    return messages


def test_chat_commands_save_and_bye(
    session: Session, server: ServerProcess, tmp_path: Path
) -> None:
    session.deterministic()
    assert "Paris" in session.ask("What is the capital of France?")

    # a bad parameter is one line, and the session goes on
    error = session.command("/set parameter num_predict lots", "invalid int value [lots]")
    assert "Traceback" not in error
    assert "unknown parameter 'colour'" in session.command(
        "/set parameter colour blue", "unknown parameter"
    )

    session.command("/set parameter num_predict 5", "Set parameter 'num_predict' to '5'")
    short = session.ask("Tell me a long story about a brave knight and a dragon.")
    assert short and len(short.split()) <= 6, short
    parameters = session.command("/show parameters", "User defined parameters:")
    assert re.search(r"num_predict\s+5\b", parameters), parameters
    assert "Model defined parameters:" in session.command("/show parameters", "Model defined")

    # """ collects several lines into one message
    session.command("/set parameter num_predict 20", "Set parameter 'num_predict' to '20'")
    session.type('"""Repeat these two words:')
    session.expect(CONTINUATION)
    session.type('apple banana"""')
    session.expect(READY)

    assert "Unknown command '/frobnicate'. Type /? for help" in session.command(
        "/frobnicate", "Unknown command"
    )
    assert "/show" in session.command("/?", "Commands:")

    session.command("/save mine/test", "Created new model 'mine/test'")
    listed = corral("list", env=server.env())
    assert "mine/test:latest" in listed.stdout
    messages = saved_messages(server, "mine/test")
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == [
        "What is the capital of France?",
        "Tell me a long story about a brave knight and a dragon.",
        "Repeat these two words:\napple banana",
    ]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3

    session.command("/clear", "Cleared session context")
    session.command("/save mine/cleared", "Created new model 'mine/cleared'")
    assert saved_messages(server, "mine/cleared") == []

    # /load shows the saved conversation; a model that cannot be had leaves the session as is
    loaded = session.command("/load mine/test", "Loading model 'mine/test'")
    assert ">>> What is the capital of France?" in loaded
    assert "Error: " in session.command("/load no-such-model", "Error: ")
    assert "thinking" in session.command("/set think", "does not support thinking")

    session.type("/bye")
    assert session.exit_status() == 0

    history = (tmp_path / ".ollama" / "history").read_text()
    assert "What is the capital of France?" in history
    assert "/set parameter num_predict 5" in history


def test_ctrl_c_stops_an_answer_and_ctrl_d_leaves(session: Session, server: ServerProcess) -> None:
    # Ctrl+C while typing clears the line; on an empty line it says how to leave
    session.child.send("half a thought")
    session.child.sendintr()
    session.expect(READY)
    session.child.sendintr()
    session.expect(re.escape("Use Ctrl + d or /bye to exit."))
    session.expect(READY)

    session.deterministic()
    session.command("/set parameter num_predict 2000", "Set parameter 'num_predict' to '2000'")
    session.type("Write a very long story about a dragon who learns to bake bread.")
    # prompt_toolkit turns bracketed paste off as it leaves the prompt (and the terminal's raw
    # mode); words after that are the answer streaming, and Ctrl+C is a signal again
    session.expect(re.escape("\x1b[?2004l"))
    session.expect(r"\w+ \w+ \w+ \w+ \w+ \w+")
    session.child.sendintr()
    session.expect(READY, timeout=20)

    session.command("/set parameter num_predict 5", "Set parameter 'num_predict' to '5'")
    assert session.ask("Say hello.")
    session.command("/save mine/interrupted", "Created new model 'mine/interrupted'")
    messages = saved_messages(server, "mine/interrupted")
    assert [m["content"] for m in messages if m["role"] == "user"] == ["Say hello."]

    session.child.sendcontrol("d")
    assert session.exit_status() == 0


def test_system_message_and_show(session: Session) -> None:
    session.deterministic()
    session.command("/set parameter num_predict 30", "Set parameter 'num_predict'")
    session.type('/set system """You are a pirate.')
    session.expect(CONTINUATION)
    session.type('Always say Arr."""')
    session.expect("Set system message.")
    session.expect(READY)
    shown = session.command("/show system", "You are a pirate.")
    assert "Always say Arr." in shown
    assert "SYSTEM" in session.command("/show modelfile", "FROM")
    assert "architecture" in session.command("/show info", "Model")
    assert "<|im_start|>" in session.command("/show template", "<|im_start|>")
    assert session.ask("Who are you?")
    session.type("/exit")
    assert session.exit_status() == 0


def test_no_history_when_asked(server: ServerProcess, smollm2: str, tmp_path: Path) -> None:
    session = Session(server, tmp_path, OLLAMA_NOHISTORY="1")
    try:
        session.command("/show license", "")
        session.type("/bye")
        assert session.exit_status() == 0
    finally:
        session.close()
    history = tmp_path / ".ollama" / "history"
    assert not history.exists() or "/show license" not in history.read_text()


def test_set_nohistory_at_run_time(server: ServerProcess, smollm2: str, tmp_path: Path) -> None:
    session = Session(server, tmp_path)
    try:
        session.command("/set nohistory", "Set 'nohistory' mode.")
        session.command("/show license", "")
        session.command("/set history", "Set 'history' mode.")
        session.command("/clear", "Cleared session context")
        session.type("/bye")
        assert session.exit_status() == 0
    finally:
        session.close()
    history = (tmp_path / ".ollama" / "history").read_text()
    assert "/show license" not in history
    assert "/clear" in history


def test_piped_output_has_no_escape_codes(server: ServerProcess, smollm2: str) -> None:
    greedy = write_greedy_model(ModelStore(server.models_dir))  # a bounded, repeatable answer
    result = corral("run", greedy, "--think", "Say hi.", env=server.env())
    # smollm2 cannot think: asking it to is one clear line, exit 1
    assert result.returncode == 1
    assert "does not support thinking" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = corral("run", greedy, "Say hi.", "--hidethinking", env=server.env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "\x1b" not in result.stdout + result.stderr


def test_unknown_models_say_what_to_do(server: ServerProcess, smollm2: str) -> None:
    shown = corral("show", "no-such-model-here", env=server.env())
    assert shown.returncode == 1
    assert shown.stderr.strip() == (
        "Error: model 'no-such-model-here' not found; try: corral pull no-such-model-here"
    )
    # run pulls a missing model first; without a network the pull fails in one line
    ran = corral("run", "no-such-model-here", "hi", env=server.env())
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith("Error: "), ran.stderr
