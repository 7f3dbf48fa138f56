"""Model name grammar: Ollama's valid/invalid tables, display forms, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import InvalidNameError
from corral.store.names import Name

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        ("llama3", ("registry.ollama.ai", "library", "llama3", "latest")),
        ("llama3:8b", ("registry.ollama.ai", "library", "llama3", "8b")),
        ("library/llama3:latest", ("registry.ollama.ai", "library", "llama3", "latest")),
        (
            "registry.ollama.ai/library/dolphin-mistral:7b-v2.6-dpo-laser-q6_K",
            ("registry.ollama.ai", "library", "dolphin-mistral", "7b-v2.6-dpo-laser-q6_K"),
        ),
        ("localhost:5000/me/tiny:1", ("localhost:5000", "me", "tiny", "1")),
        ("localhost:5000/me/tiny", ("localhost:5000", "me", "tiny", "latest")),
        ("h/nn/mm:t", ("h", "nn", "mm", "t")),
        ("me/tiny", ("registry.ollama.ai", "me", "tiny", "latest")),
        ("https://example.com/me/tiny:1", ("example.com", "me", "tiny", "1")),
        ("http://example.com/me/tiny", ("example.com", "me", "tiny", "latest")),
        (f"smollm2:135m@{DIGEST}", ("registry.ollama.ai", "library", "smollm2", "135m")),
        ("smollm2@sha256-" + "B" * 64, ("registry.ollama.ai", "library", "smollm2", "latest")),
        ("_x:_y", ("registry.ollama.ai", "library", "_x", "_y")),
        ("m:" + "t" * 80, ("registry.ollama.ai", "library", "m", "t" * 80)),
        ("a.b", ("registry.ollama.ai", "library", "a.b", "latest")),
    ],
)
def test_valid(raw: str, parts: tuple[str, str, str, str]) -> None:
    assert Name.parse(raw).manifest_parts() == parts


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "-h",
        "ns.x/model",
        "model:tag:extra",
        "a/b/c/d",
        "model@",
        "@" + DIGEST,
        "model@sha256:abc",
        "m:" + "t" * 81,
        "m" * 81,
        "n" * 81 + "/m",
        "h" * 351 + "/n/m",
        "..",
        ".",
        "../x",
        "a/../b",
        "x/..",
        "model:",
        ":tag",
        "/model",
        "a//b",
        "model/",
        "a\x00b",
        "a b",
        " a",
        "a\n",
        "mod\u00e9l",
        "a\\b",
        "ftp://h/n/m",
        "http:///n/m",
        "a/b:c/d",
        "m:.t",
        ".m",
    ],
)
def test_invalid(raw: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid model name"):
        Name.parse(raw)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidNameError):
        Name("registry.ollama.ai", "library", "..", "latest")
    with pytest.raises(InvalidNameError):
        Name("a/b", "library", "m", "latest")
    assert Name("h", "n", "m", "t").display_long == "h/n/m:t"


@pytest.mark.parametrize(
    ("raw", "short", "long"),
    [
        ("smollm2:135m", "smollm2:135m", "registry.ollama.ai/library/smollm2:135m"),
        ("me/tiny:1", "me/tiny:1", "registry.ollama.ai/me/tiny:1"),
        ("localhost:5000/me/tiny:1", "localhost:5000/me/tiny:1", "localhost:5000/me/tiny:1"),
        ("example.com/library/m", "example.com/library/m:latest", "example.com/library/m:latest"),
        ("llama3", "llama3:latest", "registry.ollama.ai/library/llama3:latest"),
    ],
)
def test_display(raw: str, short: str, long: str) -> None:
    name = Name.parse(raw)
    assert name.display_short == short
    assert name.display_long == long
    assert str(name) == long


def test_casefold() -> None:
    a = Name.parse("Me/Tiny:Q4")
    b = Name.parse("me/tiny:q4")
    assert a != b
    assert a.casefold_key() == b.casefold_key()
    assert a.equal_fold(b)


_FIRST = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


def _part(rest: str, max_len: int) -> st.SearchStrategy[str]:
    return st.builds(
        lambda first, tail: first + tail,
        st.sampled_from(_FIRST),
        st.text(alphabet=_FIRST + rest, max_size=max_len - 1),
    )


valid_names = st.builds(
    Name,
    host=_part("-.:", 350),
    namespace=_part("-", 80),
    model=_part("-.", 80),
    tag=_part("-.", 80),
)


@given(valid_names)
def test_round_trip(name: Name) -> None:
    assert Name.parse(name.display_long) == name
    assert Name.parse(name.display_short) == name


@given(st.text(max_size=400))
def test_arbitrary_text_is_safe(raw: str) -> None:
    try:
        name = Name.parse(raw)
    except InvalidNameError:
        return
    _check_safe(name)


@given(st.text(alphabet="ab/:.@-_\\\x00é", max_size=30))
def test_separator_soup_is_safe(raw: str) -> None:
    try:
        name = Name.parse(raw)
    except InvalidNameError:
        return
    _check_safe(name)


def _check_safe(name: Name) -> None:
    limits = (350, 80, 80, 80)
    for part, limit in zip(name.manifest_parts(), limits, strict=True):
        assert 1 <= len(part) <= limit
        assert part not in (".", "..")
        assert not any(c in part for c in "/\\\x00")
        assert part.isascii()


def test_parse_reference_keeps_the_digest() -> None:
    hexa = "AB" * 32
    name, digest = Name.parse_reference(f"smollm2:135m@sha256:{hexa}")
    assert name == Name.parse("smollm2:135m")
    assert digest == "sha256:" + hexa.lower()
    assert Name.parse_reference("smollm2:135m") == (Name.parse("smollm2:135m"), None)
    with pytest.raises(InvalidNameError):
        Name.parse_reference("smollm2@sha256:000")
