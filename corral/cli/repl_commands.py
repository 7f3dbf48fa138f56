"""The slash commands of the interactive session: ``/set``, ``/show``, ``/load``, ``/save``,
``/clear`` and ``/?``.

:func:`parse_set` decides what a ``/set`` means and is pure (tested without a terminal);
:class:`SlashCommands` acts on the session's state and the server. A command that cannot
be done raises :class:`ReplError`: one line on stderr, then the next prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from corral.api.options import OPTION_KINDS, parse_parameter
from corral.cli import _output as output
from corral.cli import repl_help
from corral.cli.chat import ChatSettings, parse_think, spinner
from corral.cli.client import CliError, ServerClient
from corral.cli.repl_input import PROMPT, Block, Entry, MultilineReader, OllamaHistory
from corral.cli.show import show_summary
from corral.errors import InvalidOptionError

__all__ = [
    "ReplError",
    "SessionState",
    "SetCommand",
    "SlashCommands",
    "parse_set",
    "preload",
]


class ReplError(Exception):
    """A command the session cannot do: one line, then the next prompt."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


# ---- the commands --------------------------------------------------------------------------


@dataclass(slots=True)
class SessionState:
    """What the session knows: its settings, what the model can do, the conversation."""

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


class SlashCommands:
    """The slash commands of one session, over its ``state`` (shared with the prompt loop).

    ``reader`` is the loop's, so ``/set system \"\"\"`` can open a block there; ``pull``
    fetches a missing model for ``/load``.
    """

    def __init__(
        self,
        client: ServerClient,
        state: SessionState,
        *,
        history: OllamaHistory,
        reader: MultilineReader,
        pull: Callable[[str], None],
    ) -> None:
        self.client = client
        self.state = state
        self.history = history
        self.reader = reader
        self._pull = pull

    @property
    def settings(self) -> ChatSettings:
        return self.state.settings

    def run(self, line: str) -> bool:
        """Do the slash command ``line``; False for ``/bye`` (leave the session)."""
        word, _, rest = line.strip().partition(" ")
        if word in {"/bye", "/exit"}:
            return False
        handlers: dict[str, Callable[[str], None]] = {
            "/set": self._cmd_set,
            "/show": self._cmd_show,
            "/load": self._cmd_load,
            "/list": self._cmd_list,
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
            repl_help.usage_parameters() if command.key == "parameter" else repl_help.usage_set()
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
            self.apply_block(entry)

    def apply_block(self, entry: Entry) -> None:
        """A finished ``system`` or ``template`` block: it becomes the setting."""
        if entry.kind == "system":
            self.settings.system = entry.text
            output.out("Set system message.")
        elif entry.kind == "template":
            self.settings.template = entry.text
            output.out("Set prompt template.")

    # ---- /show ------------------------------------------------------------------------

    def show(self, model: str, *, overrides: bool = False) -> dict[str, Any]:
        """``/api/show`` of ``model``; with ``overrides``, as this session changed it."""
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
            "info": lambda: show_summary(self.show(self.settings.model)),
            "license": self._show_license,
            "modelfile": lambda: output.out(
                self.show(self.settings.model, overrides=True).get("modelfile", "")
            ),
            "parameters": self._show_parameters,
            "system": self._show_system,
            "template": self._show_template,
        }
        if not what:
            repl_help.usage_show()
        elif what in sections:
            sections[what]()
        else:
            raise ReplError(f"Unknown command '/show {what}'. Type /? for help")

    def _show_license(self) -> None:
        text = self.show(self.settings.model).get("license", "")
        output.out(text or "No license was specified for this model.")

    def _show_parameters(self) -> None:
        model_params = self.show(self.settings.model).get("parameters", "")
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
        system = self.settings.system or self.show(self.settings.model).get("system", "")
        output.out(f"{system}\n" if system else "No system message was specified for this model.")

    def _show_template(self) -> None:
        template = self.settings.template or self.show(self.settings.model).get("template", "")
        output.out(template or "No prompt template was specified for this model.")

    # ---- /load, /save, /clear -----------------------------------------------------------

    def _cmd_load(self, args: str) -> None:
        names = args.split()
        if len(names) != 1:
            raise ReplError("Usage:\n  /load <modelname>")
        model = names[0]
        output.out(f"Loading model '{model}'")
        try:
            data = self.show(model)
        except CliError as exc:
            if exc.status != 404:
                raise
            self._pull(model)
            data = self.show(model)
        previous = self.settings.model
        self.settings.model = model
        self.refresh_model(data)
        self.state.messages.clear()
        try:
            preload(self.client, self.settings)
        except CliError:
            self.settings.model = previous
            self.refresh_model(self.show(previous))
            raise
        self.print_loaded_messages()

    def refresh_model(self, data: dict[str, Any]) -> None:
        """Take in what ``/api/show`` says of the model now in use."""
        self.state.capabilities = list(data.get("capabilities", []))
        self.state.loaded_messages = list(data.get("messages", []))
        if "thinking" not in self.state.capabilities:
            self.settings.think = None  # asking a model that cannot think is a 400

    def _cmd_list(self, args: str) -> None:
        """``/list [PREFIX]``: the models here, as ``corral list`` prints them."""
        from corral.cli.main import print_model_list  # main imports this module

        data = self.client.request("GET", "/api/tags")
        print_model_list(data if isinstance(data, dict) else {}, args.strip())

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

    def print_loaded_messages(self) -> None:
        """The model's saved conversation, as Ollama prints it on load."""
        for message in self.state.loaded_messages:
            if message.get("role") == "user":
                output.out(f"{PROMPT}{message.get('content', '')}")
            elif message.get("role") == "assistant":
                output.out(f"{message.get('content', '')}\n")

    # ---- help -------------------------------------------------------------------------

    def _cmd_help(self, args: str) -> None:
        topic = args.strip().removeprefix("/")
        if topic == "set":
            repl_help.usage_set()
        elif topic == "show":
            repl_help.usage_show()
        elif topic in {"shortcut", "shortcuts"}:
            repl_help.usage_shortcuts()
        else:
            repl_help.usage()


def _parameter_text(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(f'"{item}"' for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)
