"""The pure parts of the interactive session, without a terminal or a server: the \"\"\"
reader, the ``/set`` parser, the history file, the ``/save`` request, ``--think``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cli.chat import ChatSettings, parse_think
from corral.cli.client import CliError
from corral.cli.main import _bare_think
from corral.cli.repl import (
    Entry,
    MultilineReader,
    OllamaHistory,
    Repl,
    ReplError,
    SetCommand,
    parse_set,
)

# ---- the """ reader -------------------------------------------------------------------------


def feed_all(reader: MultilineReader, lines: list[str]) -> list[Entry | None]:
    return [reader.feed(line) for line in lines]


def test_a_plain_line_is_a_line() -> None:
    reader = MultilineReader()
    assert reader.feed("hello there") == Entry("line", "hello there")
    assert reader.feed("/set verbose") == Entry("line", "/set verbose")
    assert not reader.continuing


def test_triple_quotes_collect_lines_until_the_closing_marks() -> None:
    reader = MultilineReader()
    assert reader.feed('"""first') is None
    assert reader.continuing
    assert reader.feed("second") is None
    assert reader.feed('third"""') == Entry("prompt", "first\nsecond\nthird")
    assert not reader.continuing


def test_bare_marks_open_and_close() -> None:
    reader = MultilineReader()
    assert feed_all(reader, ['"""', "a", "b", '"""']) == [
        None,
        None,
        None,
        Entry("prompt", "\na\nb\n"),
    ]


def test_marks_on_one_line_are_a_whole_message() -> None:
    assert MultilineReader().feed('"""just this"""') == Entry("prompt", "just this")


def test_commands_inside_a_block_are_text() -> None:
    reader = MultilineReader()
    assert feed_all(reader, ['"""', "/bye", '"""']) == [None, None, Entry("prompt", "\n/bye\n")]


def test_cancel_drops_a_half_typed_block() -> None:
    reader = MultilineReader()
    reader.feed('"""abc')
    reader.cancel()
    assert not reader.continuing
    assert reader.feed("next") == Entry("line", "next")


def test_open_starts_a_system_block() -> None:
    reader = MultilineReader()
    assert reader.open("system", "be brief") == Entry("system", "be brief")
    assert reader.open("system", '"""be brief"""') == Entry("system", "be brief")
    assert reader.open("system", '"""be') is None
    assert reader.feed('brief"""') == Entry("system", "be\nbrief")


_fragment = st.text(alphabet='ab /?"\t', max_size=8).filter(lambda t: '"""' not in t)


@given(first=_fragment, middle=st.lists(_fragment, max_size=5), last=_fragment)
def test_a_block_is_its_lines_joined(first: str, middle: list[str], last: str) -> None:
    """Whatever is typed inside the marks comes back exactly, lines joined by newlines."""
    reader = MultilineReader()
    assert reader.feed('"""' + first) is None
    assert [reader.feed(line) for line in middle] == [None] * len(middle)
    assert reader.feed(last + '"""') == Entry("prompt", "\n".join([first, *middle, last]))


@given(st.text(max_size=30).filter(lambda t: not t.startswith('"""')))
def test_a_line_outside_a_block_comes_back_unchanged(line: str) -> None:
    assert MultilineReader().feed(line) == Entry("line", line)


# ---- /set -----------------------------------------------------------------------------------


def test_set_parameter_is_typed_like_a_modelfile_parameter() -> None:
    assert parse_set("parameter num_predict 5") == SetCommand("parameter", "num_predict", 5)
    assert parse_set("parameter temperature 0") == SetCommand("parameter", "temperature", 0.0)
    assert parse_set("parameter TOP_K 3") == SetCommand("parameter", "top_k", 3)
    assert parse_set("parameter use_mmap false") == SetCommand("parameter", "use_mmap", False)


def test_set_parameter_stop_takes_several_values() -> None:
    assert parse_set('parameter stop <|im_end|> "User:"') == SetCommand(
        "parameter", "stop", ["<|im_end|>", "User:"]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("parameter nope 1", "unknown parameter 'nope'"),
        ("parameter num_predict many", "invalid int value [many]"),
        ("parameter temperature hot", "invalid float value [hot]"),
        ("parameter use_mmap maybe", "invalid bool value [maybe]"),
        ("parameter seed 1 2", "takes one value"),
        ("format yaml", "/set format json"),
        ("think loudly", "invalid think value"),
        ("colour blue", "Unknown command '/set colour'. Type /? for help"),
    ],
)
def test_bad_set_commands_say_why_in_one_line(args: str, message: str) -> None:
    with pytest.raises(ReplError) as caught:
        parse_set(args)
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_set_without_enough_words_asks_for_usage() -> None:
    assert parse_set("") == SetCommand("usage", "set")
    assert parse_set("parameter") == SetCommand("usage", "parameter")
    assert parse_set("parameter seed") == SetCommand("usage", "parameter")
    assert parse_set("system") == SetCommand("usage", "set")


def test_set_system_keeps_the_text_as_typed() -> None:
    assert parse_set("system  You are   a pirate. ") == SetCommand(
        "system", value="You are   a pirate. "
    )
    assert parse_set('template """{{ .Prompt }}"""') == SetCommand(
        "template", value='"""{{ .Prompt }}"""'
    )


def test_set_switches_and_modes() -> None:
    for word in ("history", "nohistory", "wordwrap", "nowordwrap", "verbose", "quiet"):
        assert parse_set(word) == SetCommand(word)
    assert parse_set("format json") == SetCommand("format", value="json")
    assert parse_set("noformat") == SetCommand("noformat")
    assert parse_set("think") == SetCommand("think", value=True)
    assert parse_set("think high") == SetCommand("think", value="high")
    assert parse_set("nothink") == SetCommand("nothink")


def test_think_values() -> None:
    assert parse_think("") is True
    assert parse_think("true") is True
    assert parse_think("FALSE") is False
    assert parse_think("low") == "low"
    with pytest.raises(CliError):
        parse_think("sometimes")


def test_a_bare_think_flag_does_not_swallow_the_prompt() -> None:
    assert _bare_think(["run", "m", "--think", "hi"]) == ["run", "m", "--think=true", "hi"]
    assert _bare_think(["run", "m", "--think=low"]) == ["run", "m", "--think=low"]
    assert _bare_think(["run", "m", "--", "--think"]) == ["run", "m", "--", "--think"]


# ---- history --------------------------------------------------------------------------------


def test_history_is_ollamas_plain_file(tmp_path: Path) -> None:
    path = tmp_path / ".ollama" / "history"
    history = OllamaHistory(path)
    history.append_string("why is the sky blue?")
    history.append_string("/set verbose")
    assert path.read_text() == "why is the sky blue?\n/set verbose\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = OllamaHistory(path)
    assert list(again.load_history_strings()) == ["/set verbose", "why is the sky blue?"]


def test_history_keeps_the_last_hundred(tmp_path: Path) -> None:
    path = tmp_path / "history"
    path.write_text("".join(f"old {i}\n" for i in range(150)))
    history = OllamaHistory(path)
    history.append_string("new")
    lines = path.read_text().splitlines()
    assert len(lines) == 100
    assert lines[-1] == "new" and lines[0] == "old 51"


def test_disabled_history_never_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "history"
    history = OllamaHistory(path, enabled=False)
    history.append_string("secret")
    assert not path.exists()
    history.enabled = True
    history.append_string("public")
    assert path.read_text() == "public\n"


def test_an_unwritable_history_does_not_stop_the_session(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    history = OllamaHistory(blocker / "history")  # a folder that cannot exist
    history.append_string("still fine")
    assert list(history.load_history_strings()) == ["still fine"]


# ---- /save ----------------------------------------------------------------------------------


class _NoServer:
    """The session never calls the server in these tests."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"unexpected server call: {name}")


def test_save_request_carries_the_session(tmp_path: Path) -> None:
    settings = ChatSettings(model="smollm2:135m", system="be brief", template="{{ .Prompt }}")
    settings.options["num_predict"] = 5
    repl = Repl(
        _NoServer(),  # type: ignore[arg-type]
        settings,
        history=OllamaHistory(tmp_path / "h", enabled=False),
        pull=lambda _name: None,
    )
    repl.state.loaded_messages = [{"role": "user", "content": "old"}]
    repl.state.messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert repl.save_request("mine/test") == {
        "model": "mine/test",
        "from": "smollm2:135m",
        "stream": False,
        "system": "be brief",
        "template": "{{ .Prompt }}",
        "parameters": {"num_predict": 5},
        "messages": [
            {"role": "user", "content": "old"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ],
    }


def test_chat_request_puts_the_system_message_first() -> None:
    settings = ChatSettings(model="m", system="be brief", format="json", keep_alive="1m")
    settings.think = False
    body = settings.request([{"role": "user", "content": "hi"}])
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["messages"][1] == {"role": "user", "content": "hi"}
    assert (body["format"], body["keep_alive"], body["think"]) == ("json", "1m", False)
    assert "options" not in body
