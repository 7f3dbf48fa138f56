"""The hardening campaign as a test: a bounded property-based fuzz of every route.

Hypothesis (derandomized: the same few hundred cases on every run, no example database)
sends malformed and hostile bodies, names, paths and methods to one real server over one
keep-alive connection, and checks that nothing is ever a 5xx, that no stream carries an
``internal error`` line, and that the server still answers a real generation afterwards.
Routes that would reach the network (pull, push, create ``from`` a registry name) get names
that cannot leave the machine; generation on the real model is a handful of cases with
``num_predict`` 1, the rest names models that are not there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.errors import InvalidNameError
from corral.store import Name
from tests.conftest import ServerProcess

pytestmark = pytest.mark.model


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@pytest.fixture(scope="module")
def http(server: ServerProcess, smollm2: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client
    # after every case: alive, and still able to generate
    with httpx.Client(base_url=server.url, timeout=120) as client:
        assert client.get("/api/version").status_code == 200
        answer = client.post(
            "/api/generate",
            json={"model": smollm2, "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
        )
        assert answer.status_code == 200, answer.text


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.request.url, response.text[:500])
    text = response.text
    assert "internal error" not in text, text[-500:]


# ---- values ----------------------------------------------------------------------------------

NASTY_TEXT = [
    "",
    "\ud800",
    "a\udc00b",
    "\x00",
    "\u202e\u0000\ufeff",
    "{{ .Prompt }}{{ range .Messages }}",
    '{{ template "x" }}',
    "{% for i in range(10) %}",
    "%s%n%x",
    "../../../../etc/passwd",
    "x" * 5000,
    "🦙" * 50,
    "[" * 300,
]
text = st.one_of(st.text(max_size=40), st.sampled_from(NASTY_TEXT))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=10,
)


def _local_only(name: str) -> bool:
    """Whether a name cannot make the server reach a registry: not a valid name at all."""
    try:
        Name.parse(name)
    except InvalidNameError:
        return True
    return False


#: names of models that are not in the store; none reaches the network where it is used
MISSING = ["missing-model", "nobody/nothing:latest", "x@sha256:" + "0" * 64, "UPPER:Case"]
INVALID = ["", "bad name!", "../../etc/passwd", "a/b/c/d/e", "\ud800", "x" * 400, ":", "@"]
names = st.one_of(st.sampled_from(MISSING + INVALID), st.text(max_size=20))
offline_names = st.one_of(st.sampled_from(INVALID), st.text(max_size=20).filter(_local_only))
# load options are left out: a value llama.cpp cannot take is another issue's to bound
sampling = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.one_of(st.floats(allow_nan=False), text),
        "top_k": st.one_of(st.integers(), text),
        "top_p": st.floats(allow_nan=False, allow_infinity=False),
        "seed": st.integers(min_value=-(2**63), max_value=2**63),
        "stop": st.one_of(text, st.lists(text, max_size=3)),
        "repeat_penalty": st.floats(allow_nan=False, allow_infinity=False),
        "nonsense": json_values,
    },
)
formats: st.SearchStrategy[Any] = st.sampled_from(
    ["", "json", "xml", 5, None, {"type": "object"}, {"type": 3}, []]
)


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _nested(depth: int, opener: bytes) -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    return opener * depth + (b"1" if opener == b"[" else b"") + closer * depth


raw_bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(_body),
    st.builds(_nested, st.integers(1, 20_000), st.sampled_from([b"[", b'{"a":'])),
    st.sampled_from([b"", b"null", b"{", b"[]", b'{"a":1}{', b"\xff\xfe", b"{}" * 3]),
)


# ---- routes that load no model -----------------------------------------------------------------


@_fuzz(60)
@given(
    path=st.sampled_from(
        [
            "/api/generate",
            "/api/chat",
            "/api/show",
            "/api/copy",
            "/api/create",
            "/api/pull",
            "/api/push",
            "/api/embed",
            "/api/embeddings",
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/messages",
            "/v1/responses",
        ]
    ),
    body=raw_bodies,
)
def test_any_bytes_to_any_route(http: httpx.Client, path: str, body: bytes) -> None:
    _check(http.post(path, content=body))


@_fuzz(40)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(
            ["/", "/api/tags", "/api/ps", "/api/version", "/v1/models", "/metrics", "/api/delete"]
        ),
        st.text(max_size=30).map(lambda t: "/api/" + quote(t, safe="")),
        st.text(max_size=30).map(lambda t: "/v1/models/" + quote(t, safe="")),
        st.text(max_size=30).map(lambda t: "/api/blobs/" + quote(t, safe="")),
    ),
    query=st.text(max_size=20),
)
def test_any_method_on_any_path(http: httpx.Client, method: str, path: str, query: str) -> None:
    response = http.request(method, path, params={"q": query} if query else None)
    _check(response)


@_fuzz(40)
@given(
    route=st.sampled_from(["show", "copy", "delete", "pull", "push", "embed", "embeddings"]),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "verbose": json_values,
            "insecure": json_values,
            "stream": st.booleans(),
            "input": st.one_of(text, st.lists(text, max_size=3), json_values),
            "prompt": st.one_of(text, json_values),
            "keep_alive": st.one_of(text, st.integers(), st.floats(allow_nan=False), json_values),
            "options": st.one_of(sampling, json_values),
            "truncate": json_values,
            "dimensions": json_values,
        },
    ),
    model=names,
    offline=offline_names,
)
def test_model_management_fields(
    http: httpx.Client, route: str, fields: dict[str, Any], model: str, offline: str
) -> None:
    if route in {"pull", "push"}:
        body = {**fields, "model": offline}
    elif route == "copy":
        body = {"source": model, "destination": offline if model == "smollm2:135m" else model}
    elif route == "delete":
        assert model != "smollm2:135m"
        body = {"model": model}
    else:
        body = {**fields, "model": model}
    method = "DELETE" if route == "delete" else "POST"
    _check(http.request(method, f"/api/{route}", content=_body(body)))


@_fuzz(30)
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "system": text,
            "template": text,
            "license": st.one_of(text, st.lists(text, max_size=2)),
            "parameters": st.one_of(sampling, json_values),
            "messages": st.one_of(
                st.lists(st.fixed_dictionaries({"role": text, "content": text}), max_size=2),
                json_values,
            ),
            "quantize": st.sampled_from(["", "q9_9", "Q4_0 ", "\ud800", "f64"]),
            "files": st.one_of(st.dictionaries(text, text, max_size=2), json_values),
            "adapters": st.one_of(st.dictionaries(text, text, max_size=2), json_values),
            "modelfile": st.one_of(
                text, st.sampled_from(["FROM smollm2:135m\nPARAMETER num_ctx x", "SYSTEM hi"])
            ),
            "stream": st.booleans(),
        },
    ),
    base=st.sampled_from(["smollm2:135m", "", "bad name!", "\ud800", None]),
    target=offline_names | st.sampled_from(["fuzzed", "fuzzed:two"]),
)
def test_create_fields(
    http: httpx.Client, fields: dict[str, Any], base: str | None, target: str
) -> None:
    body = {**fields, "model": target}
    if base is not None:
        body["from"] = base
    _check(http.post("/api/create", content=_body(body)))


@_fuzz(40)
@given(
    path=st.sampled_from(["/api/generate", "/api/chat", "/v1/chat/completions", "/v1/completions"]),
    model=names,
    fields=st.dictionaries(
        st.sampled_from(
            [
                "prompt",
                "messages",
                "system",
                "template",
                "format",
                "options",
                "stream",
                "raw",
                "keep_alive",
                "context",
                "images",
                "think",
                "tools",
                "tool_choice",
                "max_tokens",
                "temperature",
                "response_format",
                "logprobs",
                "top_logprobs",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_generation_fields_on_missing_models(
    http: httpx.Client, path: str, model: str, fields: dict[str, Any]
) -> None:
    _check(http.post(path, content=_body({**fields, "model": model})))


# ---- a handful of cases on the real model --------------------------------------------------------


@_fuzz(12)
@given(
    prompt=text,
    system=st.one_of(st.none(), text),
    options=sampling,
    fmt=formats,
    raw=st.booleans(),
    stream=st.booleans(),
    suffix=st.one_of(st.none(), text),
)
def test_generate_on_the_model(
    http: httpx.Client,
    prompt: str,
    system: str | None,
    options: dict[str, Any],
    fmt: Any,
    raw: bool,
    stream: bool,
    suffix: str | None,
) -> None:
    body: dict[str, Any] = {
        "model": "smollm2:135m",
        "prompt": prompt,
        "options": {**options, "num_predict": 1},
        "format": fmt,
        "raw": raw,
        "stream": stream,
    }
    if system is not None:
        body["system"] = system
    if suffix is not None:
        body["suffix"] = suffix
    _check(http.post("/api/generate", content=_body(body)))


@_fuzz(12)
@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool", "nobody"])},
            optional={"content": text, "tool_calls": json_values, "images": json_values},
        ),
        min_size=1,
        max_size=4,
    ),
    options=sampling,
    fmt=formats,
    stream=st.booleans(),
    dialect=st.sampled_from(["ollama", "openai"]),
)
def test_chat_on_the_model(
    http: httpx.Client,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    fmt: Any,
    stream: bool,
    dialect: str,
) -> None:
    if dialect == "ollama":
        body: dict[str, Any] = {
            "model": "smollm2:135m",
            "messages": messages,
            "options": {**options, "num_predict": 1},
            "format": fmt,
            "stream": stream,
        }
        _check(http.post("/api/chat", content=_body(body)))
    else:
        body = {"model": "smollm2:135m", "messages": messages, "max_tokens": 1, "stream": stream}
        _check(http.post("/v1/chat/completions", content=_body(body)))
