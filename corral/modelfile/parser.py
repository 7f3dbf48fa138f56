"""The Modelfile grammar: parse text into commands and write commands back as text.

Grammar (one instruction per line; keywords are case-insensitive)::

    modelfile   := { blank | comment | instruction }
    comment     := ws* "#" anything-to-end-of-line
    instruction := ws* KEYWORD ws+ argument
    argument    := value                              FROM ADAPTER TEMPLATE SYSTEM LICENSE
                                                      RENDERER PARSER REQUIRES DRAFT
                 | NAME ws+ value                     PARAMETER (NAME: an option name)
                 | ROLE ws+ value                     MESSAGE (ROLE: system, user, assistant)
    value       := '\"\"\"' raw text, newlines too '\"\"\"' ws* end-of-line
                 | '"' text with \\" and \\\\ escapes, newlines too '"' ws* end-of-line
                 | the rest of the line, trimmed (not empty, not starting with '"')

Why: a Modelfile is what people write by hand and what ``show --modelfile`` prints; the
writer (:func:`format_modelfile`) picks, per value, the plainest form that the parser reads
back to the same string, so ``parse(format(m)) == m`` for every Modelfile ``m`` (a property
test checks it).

What can go wrong: an unknown keyword, a missing value, an unterminated quote, text after a
closing quote, an unknown PARAMETER name or a value of the wrong type, an unknown MESSAGE
role, or no FROM at all. Each raises :class:`~corral.errors.ModelfileError` (400) whose
message starts with ``line N:`` and keeps Ollama's wording for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from corral.api.options import OPTION_KINDS, parse_parameter
from corral.errors import InvalidOptionError, ModelfileError

__all__ = [
    "COMMANDS",
    "MESSAGE_ROLES",
    "Command",
    "Modelfile",
    "decode_modelfile",
    "format_modelfile",
    "parse_modelfile",
    "quote",
]

COMMANDS: Final = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)
MESSAGE_ROLES: Final = ("system", "user", "assistant")

_WS: Final = " \t\r\f\v"
_TRIPLE: Final = '"""'
_COMMAND_ERROR: Final = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft",'
    ' "renderer", "parser", "parameter", "message", or "requires"'
)
_ROLE_ERROR: Final = 'message role must be one of "system", "user", or "assistant"'


@dataclass(frozen=True, slots=True)
class Command:
    """One instruction: ``name`` (lower case), its ``value``, and for PARAMETER the option
    name / for MESSAGE the role in ``key`` (lower case). ``line`` is where it started (1-based;
    0 for commands built in code) and does not take part in equality."""

    name: str
    value: str
    key: str = ""
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Modelfile:
    """The instructions of a Modelfile, in order."""

    commands: tuple[Command, ...]

    def of(self, name: str) -> tuple[Command, ...]:
        """Every command named ``name`` (lower case), in order."""
        return tuple(c for c in self.commands if c.name == name)


def decode_modelfile(data: bytes) -> str:
    """Bytes → text: UTF-8 (a BOM is dropped) or UTF-16 with its BOM; ModelfileError else."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelfileError(f"the Modelfile is not UTF-8 text: {exc.reason}") from None


class _Reader:
    """A cursor over the text that knows its line number."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def error(self, message: str, line: int | None = None) -> ModelfileError:
        return ModelfileError(f"line {line if line is not None else self.line}: {message}")

    def skip_ws(self) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos - start

    def rest_of_line(self) -> str:
        end = self.text.find("\n", self.pos)
        if end < 0:
            end = len(self.text)
        chunk = self.text[self.pos : end]
        self.pos = end
        return chunk

    def end_line(self) -> None:
        """Consume the newline ending this line (the caller checked only ws is left)."""
        if self.pos < len(self.text) and self.text[self.pos] == "\n":
            self.pos += 1
            self.line += 1

    def word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in _WS + "\n":
            self.pos += 1
        return self.text[start : self.pos]

    def advance_to(self, end: int) -> str:
        chunk = self.text[self.pos : end]
        self.line += chunk.count("\n")
        self.pos = end
        return chunk


def parse_modelfile(text: str, *, require_from: bool = True) -> Modelfile:
    """Parse Modelfile ``text``; ModelfileError (``line N: ...``) on the first problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = _Reader(text)
    commands: list[Command] = []
    while not reader.at_end():
        reader.skip_ws()
        if reader.at_end():
            break
        char = reader.text[reader.pos]
        if char == "\n":
            reader.end_line()
            continue
        if char == "#":
            reader.rest_of_line()
            reader.end_line()
            continue
        commands.append(_instruction(reader))
    if require_from and not any(c.name == "from" for c in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(tuple(commands))


def _instruction(reader: _Reader) -> Command:
    line = reader.line
    keyword = reader.word()
    name = keyword.lower()
    if name not in COMMANDS:
        raise reader.error(_COMMAND_ERROR)
    if reader.skip_ws() == 0:
        raise reader.error(f"missing value for {keyword.upper()}")
    key = ""
    if name in ("parameter", "message"):
        key = reader.word().lower()
        if not key:
            raise reader.error(f"missing value for {keyword.upper()}")
        if reader.skip_ws() == 0:
            what = "parameter value" if name == "parameter" else "message content"
            raise reader.error(f"missing {what}")
        if name == "message" and key not in MESSAGE_ROLES:
            raise reader.error(_ROLE_ERROR, line)
    value = _value(reader, keyword.upper())
    if name == "parameter":
        _check_parameter(key, value, line)
    return Command(name, value, key, line)


def _value(reader: _Reader, keyword: str) -> str:
    text = reader.text
    line = reader.line
    if text.startswith(_TRIPLE, reader.pos):
        reader.advance_to(reader.pos + len(_TRIPLE))
        end = text.find(_TRIPLE, reader.pos)
        if end < 0:
            raise reader.error('unexpected EOF: unterminated """ string', line)
        value = reader.advance_to(end)
        reader.advance_to(end + len(_TRIPLE))
        _after_quote(reader)
        return value
    if text.startswith('"', reader.pos):
        reader.advance_to(reader.pos + 1)
        value = _quoted(reader, line)
        _after_quote(reader)
        return value
    value = reader.rest_of_line().strip(_WS)
    if not value:
        raise reader.error(f"missing value for {keyword}")
    reader.end_line()
    return value


def _quoted(reader: _Reader, line: int) -> str:
    text = reader.text
    out: list[str] = []
    i = reader.pos
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            reader.advance_to(i + 1)
            return "".join(out)
        out.append(char)
        i += 1
    raise reader.error('unexpected EOF: unterminated " string', line)


def _after_quote(reader: _Reader) -> None:
    reader.skip_ws()
    if not reader.at_end() and reader.text[reader.pos] != "\n":
        raise reader.error("unexpected text after the closing quote")
    reader.end_line()


def _check_parameter(key: str, value: str, line: int) -> None:
    if key not in OPTION_KINDS:
        raise ModelfileError(f"line {line}: unknown parameter '{key}'")
    if OPTION_KINDS[key] == "strs":
        return
    try:
        parse_parameter(key, value)
    except InvalidOptionError as exc:
        raise ModelfileError(f"line {line}: {exc.message}") from None


# ---- writing ------------------------------------------------------------------------------


def quote(value: str) -> str:
    """The plainest form of ``value`` that :func:`parse_modelfile` reads back unchanged."""
    bare = value and "\n" not in value and value == value.strip(_WS) and not value.startswith('"')
    if bare:
        return value
    if _TRIPLE not in value and not value.endswith('"'):
        return _TRIPLE + value + _TRIPLE
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_command(command: Command) -> str:
    """One instruction as Modelfile text (no trailing newline)."""
    keyword = command.name.upper()
    if command.name in ("parameter", "message"):
        return f"{keyword} {command.key} {quote(command.value)}"
    return f"{keyword} {quote(command.value)}"


def format_modelfile(modelfile: Modelfile, header: str = "") -> str:
    """Modelfile text for ``modelfile``; ``header`` lines are written first as comments."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    if lines:
        lines.append("")
    lines.extend(format_command(c) for c in modelfile.commands)
    return "\n".join(lines) + "\n"
