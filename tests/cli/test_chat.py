"""How a streamed answer is drawn when stdout is not a terminal (pytest captures it): plain
text, Ollama's thinking headings, no escape codes, no spinner, nothing wrapped.

The chunks come from a stand-in for the HTTP stream; the real stream is exercised by the
``model`` tests in ``test_repl.py`` and ``test_cli.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral.cli.chat import ChatSettings, chat
from corral.cli.client import ServerClient


class _Chunks:
    """Answers ``/api/chat`` with fixed chunks, and remembers the request body."""

    def __init__(self, *pieces: tuple[str, str]) -> None:
        self.pieces = pieces
        self.body: dict[str, Any] = {}

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        assert path == "/api/chat"
        self.body = body
        for thinking, content in self.pieces:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            yield {"message": message, "done": False}
        yield {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 3}


def run_chat(chunks: _Chunks, settings: ChatSettings) -> dict[str, Any]:
    client: ServerClient = chunks  # type: ignore[assignment]
    return chat(client, settings, [{"role": "user", "content": "hi"}])


def test_thinking_under_its_headings_then_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    chunks = _Chunks(("Let me ", ""), ("think.", ""), ("", "The answer"), ("", " is 4."))
    message = run_chat(chunks, ChatSettings(model="m", think=True))
    out = capsys.readouterr()
    assert out.out == "Thinking...\nLet me think.\n...done thinking.\n\nThe answer is 4.\n"
    assert out.err == ""
    assert message == {"role": "assistant", "content": "The answer is 4."}
    assert chunks.body["think"] is True


def test_hidden_thinking_is_not_shown(capsys: pytest.CaptureFixture[str]) -> None:
    chunks = _Chunks(("secret plan", ""), ("", "Done."))
    run_chat(chunks, ChatSettings(model="m", hide_thinking=True))
    assert capsys.readouterr().out == "Done.\n"


def test_long_lines_are_not_wrapped_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    long_line = " ".join(["word"] * 100)
    run_chat(_Chunks(("", long_line)), ChatSettings(model="m", word_wrap=True))
    assert capsys.readouterr().out == long_line + "\n"


def test_verbose_prints_timings_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    run_chat(_Chunks(("", "ok")), ChatSettings(model="m", verbose=True))
    out = capsys.readouterr()
    assert out.out == "ok\n"
    assert "eval count:           3 token(s)" in out.err
