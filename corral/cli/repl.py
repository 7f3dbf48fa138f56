"""The interactive ``corral run MODEL`` session: Ollama's ``>>>`` prompt and slash commands.

Behaviour follows Ollama's ``cmd/interactive.go``: one message per line, or several lines
between ``\"\"\"`` marks; ``/set`` changes how the next turns are sent, ``/show`` what the
model is, ``/load`` and ``/save`` switch and store sessions; Ctrl+C clears the line being
typed or stops the answer being streamed, Ctrl+D on an empty line or ``/bye`` leaves.

The parts that decide something are pure and tested without a terminal: the ``\"\"\"``
reader (:class:`MultilineReader`) and the history file (:class:`OllamaHistory`) in
:mod:`corral.cli.repl_input`, the ``/set`` parser (:func:`parse_set`) with the other slash
commands in :mod:`corral.cli.repl_commands` (their help in :mod:`corral.cli.repl_help`).
:class:`Repl`, here, is the prompt loop that ties them to prompt_toolkit and the server.

What could go wrong: every server error in a turn or a command is one ``Error:`` line on
stderr and the session goes on (the server may be back for the next turn); a turn stopped
with Ctrl+C or failed leaves no trace in the messages, so the next turn does not send a
question without its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from corral.cli import _output as output
from corral.cli.chat import ChatSettings, chat
from corral.cli.client import CliError, ServerClient
from corral.cli.images import model_sees_images, user_message
from corral.cli.repl_commands import (
    ReplError,
    SessionState,
    SetCommand,
    SlashCommands,
    parse_set,
    preload,
)
from corral.cli.repl_input import (
    CONTINUATION,
    EXIT_HINT,
    PROMPT,
    Entry,
    MultilineReader,
    OllamaHistory,
    history_path,
)

__all__ = [
    "Entry",
    "MultilineReader",
    "OllamaHistory",
    "Repl",
    "ReplError",
    "SetCommand",
    "history_path",
    "parse_set",
    "preload",
]


class Repl:
    """The prompt loop. ``pull`` fetches a missing model for ``/load`` (with the CLI's
    progress display); the prompt session is built on first use, so the class can be
    driven without a terminal."""

    def __init__(
        self,
        client: ServerClient,
        settings: ChatSettings,
        *,
        history: OllamaHistory,
        pull: Callable[[str], None],
    ) -> None:
        self.client = client
        self.state = SessionState(settings)
        self.history = history
        self.reader = MultilineReader()
        self.commands = SlashCommands(
            client, self.state, history=history, reader=self.reader, pull=pull
        )
        self._session: PromptSession[str] | None = None
        self._typed_before_interrupt = ""

    @property
    def settings(self) -> ChatSettings:
        return self.state.settings

    def start(self) -> None:
        """Show the model's saved conversation, then loop until Ctrl+D or /bye."""
        self.commands.refresh_model(self.commands.show(self.settings.model))
        preload(self.client, self.settings)
        self.commands.print_loaded_messages()
        self.loop()

    def loop(self) -> None:
        while True:
            try:
                line = self._read_line()
            except EOFError:
                output.out()
                return
            except KeyboardInterrupt:
                self._interrupted()
                continue
            entry = self.reader.feed(line)
            if entry is not None and not self._handle(entry):
                return

    # ---- input ------------------------------------------------------------------------

    def _prompt_session(self) -> PromptSession[str]:
        if self._session is None:
            bindings = KeyBindings()

            @bindings.add("c-c")
            def _interrupt(event: KeyPressEvent) -> None:
                self._typed_before_interrupt = event.app.current_buffer.text
                event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

            self._session = PromptSession(
                history=self.history,
                key_bindings=bindings,
                style=Style.from_dict({"placeholder": "#808080"}),
                enable_history_search=False,
            )
        return self._session

    def _read_line(self) -> str:
        session = self._prompt_session()
        self._typed_before_interrupt = ""
        if self.reader.continuing:
            return session.prompt(CONTINUATION, placeholder="")
        return session.prompt(PROMPT, placeholder="Send a message (/? for help)")

    def _interrupted(self) -> None:
        if not self._typed_before_interrupt:
            output.out(EXIT_HINT)
        self.reader.cancel()

    # ---- entries ----------------------------------------------------------------------

    def _handle(self, entry: Entry) -> bool:
        """Act on one entry; False to leave the session."""
        if entry.kind in {"system", "template"}:
            self.commands.apply_block(entry)
        elif entry.kind == "prompt":
            self._turn(entry.text)
        elif entry.text.startswith("/"):
            return self.commands.run(entry.text)
        else:
            self._turn(entry.text)
        return True

    def _turn(self, text: str) -> None:
        if not text.strip():
            return
        messages = self.state.messages
        try:  # image paths in the prompt are attached for a vision model (images.py)
            vision = model_sees_images(self.client, self.settings.model)
            messages.append(user_message(text, vision=vision))
        except CliError as exc:
            output.err(f"Error: {exc.message}")
            return
        try:
            answer = chat(self.client, self.settings, messages)
        except KeyboardInterrupt:
            messages.pop()
            return
        except CliError as exc:
            messages.pop()
            output.err(f"Error: {exc.message}")
            return
        messages.append(answer)
        output.out()

    def save_request(self, name: str) -> dict[str, Any]:
        """The ``/api/create`` body ``/save name`` sends; see
        :meth:`SlashCommands.save_request`."""
        return self.commands.save_request(name)
