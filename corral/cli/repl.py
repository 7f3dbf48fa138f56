"""The interactive ``corral run MODEL`` session: Ollama's ``>>>`` prompt and slash commands.

Behaviour follows Ollama's ``cmd/interactive.go``: one message per line, or several lines
between ``\"\"\"`` marks; ``/set`` changes how the next turns are sent, ``/show`` what the
model is, ``/load`` and ``/save`` switch and store sessions; Ctrl+C clears the line being
typed or stops the answer being streamed, Ctrl+D on an empty line or ``/bye`` leaves.

The parts that decide something are pure and tested without a terminal: the ``\"\"\"``
reader (:class:`MultilineReader`), the ``/set`` parser (:func:`parse_set`) and the history
file (:class:`OllamaHistory`). :class:`Repl` ties them to prompt_toolkit and the server.

What could go wrong: every server error in a turn or a command is one ``Error:`` line on
stderr and the session goes on (the server may be back for the next turn); a turn stopped
with Ctrl+C or failed leaves no trace in the messages, so the next turn does not send a
question without its answer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from prompt_toolkit import PromptSession
from prompt_toolkit.history import History
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.styles import Style

from corral.api.options import OPTION_KINDS, parse_parameter
from corral.cli import _output as output
from corral.cli.chat import ChatSettings, chat, parse_think, spinner
from corral.cli.client import CliError, ServerClient
from corral.cli.show import show_summary
from corral.errors import InvalidOptionError

__all__ = [
    "Entry",
    "MultilineReader",
    "OllamaHistory",
    "Repl",
    "ReplError",
    "SetCommand",
    "parse_set",
    "preload",
]

TRIPLE: Final = '"""'
PROMPT: Final = ">>> "
CONTINUATION: Final = "... "
EXIT_HINT: Final = "Use Ctrl + d or /bye to exit."
HISTORY_LIMIT: Final = 100  # entries kept in the file, as Ollama's readline

Block = Literal["prompt", "system", "template"]


class ReplError(Exception):
    """A command the session cannot do: one line, then the next prompt."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---- the \"\"\" reader ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A complete piece of input: a ``line`` to interpret (a command or a message), or the
    text of a finished block (``prompt``, ``system``, ``template``)."""

    kind: Literal["line", "prompt", "system", "template"]
    text: str


class MultilineReader:
    """Collects typed lines into entries, with Ollama's ``\"\"\"`` rules.

    A line starting with ``\"\"\"`` opens a message (text after the marks counts), a line
    ending with ``\"\"\"`` closes it (text before the marks counts); the lines are joined with
    newlines. ``/set system \"\"\"...`` opens a block the same way (:meth:`open`).
    """

    def __init__(self) -> None:
        self._block: Block | None = None
        self._parts: list[str] = []

    @property
    def continuing(self) -> bool:
        """Inside a block: the prompt should be the continuation prompt."""
        return self._block is not None

    def feed(self, line: str) -> Entry | None:
        """One typed line → an entry, or None while a block is still open."""
        if self._block is None:
            if line.startswith(TRIPLE):
                return self.open("prompt", line)
            return Entry("line", line)
        before, closed = _cut_suffix(line, TRIPLE)
        self._parts.append(before)
        if not closed:
            self._parts.append("\n")
            return None
        entry = Entry(self._block, "".join(self._parts))
        self.cancel()
        return entry

    def open(self, block: Block, text: str) -> Entry | None:
        """Start ``block`` with ``text``: a whole entry unless it opens with ``\"\"\"`` and
        does not close on the same line."""
        body, opened = _cut_prefix(text, TRIPLE)
        if not opened:
            return Entry(block, text)
        body, closed = _cut_suffix(body, TRIPLE)
        if closed:
            return Entry(block, body)
        self._block, self._parts = block, [body, "\n"]
        return None

    def cancel(self) -> None:
        """Drop a half-typed block (Ctrl+C)."""
        self._block, self._parts = None, []


def _cut_prefix(text: str, prefix: str) -> tuple[str, bool]:
    return (text[len(prefix) :], True) if text.startswith(prefix) else (text, False)


def _cut_suffix(text: str, suffix: str) -> tuple[str, bool]:
    return (text[: -len(suffix)], True) if text.endswith(suffix) else (text, False)


# ---- /set -----------------------------------------------------------------------------------

_SET_FLAGS: Final = frozenset(
    {"history", "nohistory", "wordwrap", "nowordwrap", "verbose", "quiet", "noformat", "nothink"}
)


@dataclass(frozen=True, slots=True)
class SetCommand:
    """A parsed ``/set``: ``name`` is the setting; ``key`` the parameter name; ``value`` the
    typed parameter value, the text (system, template), the format, or the think value.
    ``name == "usage"`` asks for the help of ``key`` (``set`` or ``parameter``)."""

    name: str
    key: str = ""
    value: Any = None


def parse_set(args: str) -> SetCommand:
    """The text after ``/set`` → a command; ReplError with a one-line reason if it is bad.

    Parameter values are typed with the table the Modelfile parser uses, so ``/set parameter``
    accepts exactly what ``PARAMETER`` does; ``stop`` takes several values.
    """
    words = args.split()
    if not words:
        return SetCommand("usage", "set")
    name = words[0]
    rest = args.lstrip()[len(name) :].lstrip()
    if name in _SET_FLAGS:
        return SetCommand(name)
    if name == "parameter":
        return _parse_parameter(words[1:])
    if name in {"system", "template"}:
        if not rest:
            return SetCommand("usage", "set")
        return SetCommand(name, value=rest)
    if name == "format":
        if words[1:] != ["json"]:
            raise ReplError("invalid or missing format; for JSON mode use '/set format json'")
        return SetCommand("format", value="json")
    if name == "think":
        try:
            return SetCommand("think", value=parse_think(words[1] if len(words) > 1 else ""))
        except CliError:
            raise ReplError(
                f"invalid think value '{words[1]}' (true, false, high, medium, low or max)"
            ) from None
    raise ReplError(f"Unknown command '/set {name}'. Type /? for help")


def _parse_parameter(words: list[str]) -> SetCommand:
    if len(words) < 2:
        return SetCommand("usage", "parameter")
    key, values = words[0].lower(), words[1:]
    try:
        if key in OPTION_KINDS and OPTION_KINDS[key] == "strs":
            typed: Any = [v for value in values for v in parse_parameter(key, value)]
        elif len(values) > 1:
            raise ReplError(f"couldn't set parameter '{key}': it takes one value")
        else:
            typed = parse_parameter(key, values[0])
    except InvalidOptionError as exc:
        raise ReplError(f"couldn't set parameter: {exc.message}") from None
    return SetCommand("parameter", key, typed)


# ---- history --------------------------------------------------------------------------------


class OllamaHistory(History):
    """``~/.ollama/history`` in Ollama's format: one entry per line, the last 100, rewritten
    whole (temp file + rename, mode 0600) after each entry, so ``ollama run`` and
    ``corral run`` share it. With ``enabled`` false (``OLLAMA_NOHISTORY``, ``/set
    nohistory``) entries are remembered for this session only and never reach the file, not
    even when history is turned back on.

    A file that cannot be read or written never stops the session: history is a comfort.
    """

    def __init__(self, path: Path, *, enabled: bool = True) -> None:
        super().__init__()
        self.path = path
        self.enabled = enabled
        self._entries = self._read()

    def load_history_strings(self) -> Iterable[str]:
        return reversed(self._entries)

    def store_string(self, string: str) -> None:
        if not self.enabled:  # prompt_toolkit keeps it in memory; the file never sees it
            return
        # an entry with newlines (a paste) is kept as its lines, as Ollama's readline would
        self._entries.extend(line.strip() for line in string.splitlines() if line.strip())
        del self._entries[:-HISTORY_LIMIT]
        self._write()

    def _read(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line.strip() for line in text.splitlines() if line.strip()][-HISTORY_LIMIT:]

    def _write(self) -> None:
        temp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(entry + "\n" for entry in self._entries)
            temp.replace(self.path)


def history_path() -> Path:
    return Path.home() / ".ollama" / "history"


# ---- the session ----------------------------------------------------------------------------


@dataclass(slots=True)
class _State:
    settings: ChatSettings
    capabilities: list[str] = field(default_factory=list)
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)  # the model's own
    messages: list[dict[str, Any]] = field(default_factory=list)  # this session's turns


def preload(client: ServerClient, settings: ChatSettings) -> None:
    """Load the model before the first prompt (an empty generate), with a spinner; a model
    that cannot think when asked to fails here, not at the first question."""
    body: dict[str, Any] = {"model": settings.model}
    if settings.keep_alive:
        body["keep_alive"] = settings.keep_alive
    if settings.think is not None:
        body["think"] = settings.think
    with spinner():
        client.request("POST", "/api/generate", body)


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
        self.state = _State(settings)
        self.history = history
        self.reader = MultilineReader()
        self._pull = pull
        self._session: PromptSession[str] | None = None
        self._typed_before_interrupt = ""

    @property
    def settings(self) -> ChatSettings:
        return self.state.settings

    def start(self) -> None:
        """Show the model's saved conversation, then loop until Ctrl+D or /bye."""
        self._refresh_model(self._show(self.settings.model))
        preload(self.client, self.settings)
        self._print_loaded_messages()
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
        if entry.kind == "system":
            self._set_system(entry.text)
        elif entry.kind == "template":
            self.settings.template = entry.text
            output.out("Set prompt template.")
        elif entry.kind == "prompt":
            self._turn(entry.text)
        elif entry.text.startswith("/"):
            return self._command(entry.text)
        else:
            self._turn(entry.text)
        return True

    def _turn(self, text: str) -> None:
        if not text.strip():
            return
        messages = self.state.messages
        messages.append({"role": "user", "content": text})
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

    def _command(self, line: str) -> bool:
        word, _, rest = line.strip().partition(" ")
        if word in {"/bye", "/exit"}:
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/set": self._cmd_set,
            "/show": self._cmd_show,
            "/load": self._cmd_load,
            "/save": self._cmd_save,
            "/clear": self._cmd_clear,
            "/?": self._cmd_help,
            "/help": self._cmd_help,
        }
        handler = handlers.get(word)
        try:
            if handler is None:
                raise ReplError(f"Unknown command '{word}'. Type /? for help")
            handler(rest)
        except ReplError as exc:
            output.err(exc.message)
        except CliError as exc:
            output.err(f"Error: {exc.message}")
        except KeyboardInterrupt:  # a /load pull or preload stopped: the session goes on
            output.out()
        return True

    # ---- /set -------------------------------------------------------------------------

    def _cmd_set(self, args: str) -> None:
        command = parse_set(args)
        settings = self.settings
        simple: dict[str, Callable[[], str]] = {
            "history": lambda: self._set_history(True),
            "nohistory": lambda: self._set_history(False),
            "wordwrap": lambda: self._set_attr("word_wrap", True, "Set 'wordwrap' mode."),
            "nowordwrap": lambda: self._set_attr("word_wrap", False, "Set 'nowordwrap' mode."),
            "verbose": lambda: self._set_attr("verbose", True, "Set 'verbose' mode."),
            "quiet": lambda: self._set_attr("verbose", False, "Set 'quiet' mode."),
            "noformat": lambda: self._set_attr("format", "", "Disabled format."),
            "format": lambda: self._set_attr("format", "json", "Set format to 'json' mode."),
        }
        if command.name in simple:
            output.out(simple[command.name]())
        elif command.name == "usage":
            _usage_parameters() if command.key == "parameter" else _usage_set()
        elif command.name == "parameter":
            settings.options[command.key] = command.value
            shown = ", ".join(map(str, command.value)) if command.key == "stop" else command.value
            output.out(f"Set parameter '{command.key}' to '{shown}'")
        elif command.name in {"think", "nothink"}:
            self._set_think(command.value if command.name == "think" else False)
        elif command.name == "system":
            self._open_block("system", command.value)
        elif command.name == "template":
            self._open_block("template", command.value)

    def _set_attr(self, attr: str, value: Any, message: str) -> str:
        setattr(self.settings, attr, value)
        return message

    def _set_history(self, enabled: bool) -> str:
        self.history.enabled = enabled
        return "Set 'history' mode." if enabled else "Set 'nohistory' mode."

    def _set_think(self, value: bool | str) -> None:
        if "thinking" not in self.state.capabilities:
            raise ReplError(f"Error: '{self.settings.model}' does not support thinking")
        self.settings.think = value
        if value is False:
            output.out("Set 'nothink' mode.")
        elif value is True:
            output.out("Set 'think' mode.")
        else:
            output.out(f"Set 'think' mode to '{value}'.")

    def _open_block(self, block: Block, text: str) -> None:
        entry = self.reader.open(block, text)
        if entry is not None:
            self._handle(entry)

    def _set_system(self, text: str) -> None:
        self.settings.system = text
        output.out("Set system message.")

    # ---- /show ------------------------------------------------------------------------

    def _show(self, model: str, *, overrides: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        if overrides and self.settings.system:
            body["system"] = self.settings.system
        if overrides and self.settings.options:
            body["options"] = self.settings.options
        data: dict[str, Any] = self.client.request("POST", "/api/show", body)
        return data

    def _cmd_show(self, args: str) -> None:
        what = args.strip()
        sections: dict[str, Callable[[], None]] = {
            "info": lambda: show_summary(self._show(self.settings.model)),
            "license": self._show_license,
            "modelfile": lambda: output.out(
                self._show(self.settings.model, overrides=True).get("modelfile", "")
            ),
            "parameters": self._show_parameters,
            "system": self._show_system,
            "template": self._show_template,
        }
        if not what:
            _usage_show()
        elif what in sections:
            sections[what]()
        else:
            raise ReplError(f"Unknown command '/show {what}'. Type /? for help")

    def _show_license(self) -> None:
        text = self._show(self.settings.model).get("license", "")
        output.out(text or "No license was specified for this model.")

    def _show_parameters(self) -> None:
        model_params = self._show(self.settings.model).get("parameters", "")
        output.out("Model defined parameters:")
        if not model_params:
            output.out("  No additional parameters were specified for this model.")
        for line in model_params.splitlines():
            output.out(f"  {line}")
        output.out()
        if self.settings.options:
            output.out("User defined parameters:")
            for key, value in self.settings.options.items():
                output.out(f"  {key:<30} {_parameter_text(value)}")
            output.out()

    def _show_system(self) -> None:
        system = self.settings.system or self._show(self.settings.model).get("system", "")
        output.out(f"{system}\n" if system else "No system message was specified for this model.")

    def _show_template(self) -> None:
        template = self.settings.template or self._show(self.settings.model).get("template", "")
        output.out(template or "No prompt template was specified for this model.")

    # ---- /load, /save, /clear -----------------------------------------------------------

    def _cmd_load(self, args: str) -> None:
        names = args.split()
        if len(names) != 1:
            raise ReplError("Usage:\n  /load <modelname>")
        model = names[0]
        output.out(f"Loading model '{model}'")
        try:
            data = self._show(model)
        except CliError as exc:
            if exc.status != 404:
                raise
            self._pull(model)
            data = self._show(model)
        previous = self.settings.model
        self.settings.model = model
        self._refresh_model(data)
        self.state.messages.clear()
        try:
            preload(self.client, self.settings)
        except CliError:
            self.settings.model = previous
            self._refresh_model(self._show(previous))
            raise
        self._print_loaded_messages()

    def _refresh_model(self, data: dict[str, Any]) -> None:
        self.state.capabilities = list(data.get("capabilities", []))
        self.state.loaded_messages = list(data.get("messages", []))
        if "thinking" not in self.state.capabilities:
            self.settings.think = None  # asking a model that cannot think is a 400

    def _cmd_save(self, args: str) -> None:
        names = args.split()
        if len(names) != 1:
            raise ReplError("Usage:\n  /save <modelname>")
        self.client.request("POST", "/api/create", self.save_request(names[0]))
        output.out(f"Created new model '{names[0]}'")

    def save_request(self, name: str) -> dict[str, Any]:
        """Ollama's structured create: the current model with this session's system,
        template, parameters, and conversation (the model's own messages first)."""
        settings = self.settings
        body: dict[str, Any] = {"model": name, "from": settings.model, "stream": False}
        if settings.system:
            body["system"] = settings.system
        if settings.template:
            body["template"] = settings.template
        if settings.options:
            body["parameters"] = dict(settings.options)
        messages = self.state.loaded_messages + self.state.messages
        if messages:
            body["messages"] = [{"role": m["role"], "content": m["content"]} for m in messages]
        return body

    def _cmd_clear(self, _args: str) -> None:
        self.state.messages.clear()
        output.out("Cleared session context")

    def _print_loaded_messages(self) -> None:
        for message in self.state.loaded_messages:
            if message.get("role") == "user":
                output.out(f"{PROMPT}{message.get('content', '')}")
            elif message.get("role") == "assistant":
                output.out(f"{message.get('content', '')}\n")

    # ---- help -------------------------------------------------------------------------

    def _cmd_help(self, args: str) -> None:
        topic = args.strip().removeprefix("/")
        if topic == "set":
            _usage_set()
        elif topic == "show":
            _usage_show()
        elif topic in {"shortcut", "shortcuts"}:
            _usage_shortcuts()
        else:
            _usage()


def _parameter_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(f'"{item}"' for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def _lines(*lines: str) -> None:
    for line in lines:
        output.err(line)


def _usage() -> None:
    _lines(
        "Commands:",
        "  /set            Change a setting of this session (/? set)",
        "  /show           Describe the model (/? show)",
        "  /load <model>   Switch to another model or saved session",
        "  /save <model>   Keep this session as a new model",
        "  /clear          Forget the conversation so far",
        "  /bye            Leave (also /exit, or Ctrl + d)",
        "  /?, /help       This help; /? set, /? show, /? shortcuts for more",
        "",
        'Start a line with """ to write a message over several lines; end it with """.',
        "",
    )


def _usage_set() -> None:
    _lines(
        "Settings:",
        "  /set parameter NAME VALUE   Sampling or model parameter (/set parameter for a list)",
        '  /set system TEXT            System message (""" for several lines)',
        "  /set template TEXT          Prompt template, kept by /save",
        "  /set history | nohistory    Keep typed lines in ~/.ollama/history, or not",
        "  /set wordwrap | nowordwrap  Wrap answers at the terminal width, or not",
        "  /set format json | noformat Answer in JSON, or freely",
        "  /set verbose | quiet        Print timings after each answer, or not",
        "  /set think [LEVEL] | nothink  Let a thinking model think (high, medium, low), or not",
        "",
    )


def _usage_show() -> None:
    _lines(
        "Model details:",
        "  /show info         Architecture, size, capabilities",
        "  /show license      License text",
        "  /show modelfile    Modelfile, with this session's changes",
        "  /show parameters   Parameters of the model and of this session",
        "  /show system       System message",
        "  /show template     Prompt template",
        "",
    )


def _usage_shortcuts() -> None:
    _lines(
        "Keys:",
        "  Ctrl + a / Ctrl + e   Start / end of the line",
        "  Alt + b / Alt + f     One word left / right",
        "  Ctrl + k / Ctrl + u   Delete to the end / the start of the line",
        "  Ctrl + w              Delete the word before the cursor",
        "  Up / Down             Earlier / later lines (history)",
        "  Ctrl + l              Clear the screen",
        "  Ctrl + c              Clear the line; stop an answer while it streams",
        "  Ctrl + d              Leave (on an empty line)",
        "",
    )


def _usage_parameters() -> None:
    rows = [
        ("temperature FLOAT", "Randomness; 0 always picks the likeliest token"),
        ("seed INT", "Random seed, for answers that repeat"),
        ("num_predict INT", "Most tokens in an answer (-1: no limit)"),
        ("num_ctx INT", "Context window in tokens"),
        ("top_k INT", "Sample from the k likeliest tokens"),
        ("top_p FLOAT", "Sample from the likeliest tokens summing to p"),
        ("min_p FLOAT", "Drop tokens below min_p x the likeliest one"),
        ("repeat_penalty FLOAT", "Penalty for repeating recent tokens"),
        ("repeat_last_n INT", "How many recent tokens count as repeats"),
        ("num_gpu INT", "Layers to put on the GPU"),
        ("stop TEXT TEXT ...", "Stop the answer at any of these texts"),
    ]
    _lines(
        "Parameters (the Modelfile's PARAMETER names; these are the common ones):",
        *(f"  /set parameter {usage:<22} {what}" for usage, what in rows),
        "",
    )
