"""Newest Ollama's API and CLI additions, through a real server, the ``ollama`` client where
it has the call, and raw HTTP where it does not: think levels, ``format`` after thinking,
``show`` (tensors, verbose), ``tags`` capabilities, ``/api/status``, tokenize/detokenize,
``ps`` (names, queue), ``model is required``, RENDERER/PARSER/REQUIRES, the CLI's
``show -v``, ``run`` on an embedding model, ``start``, and ``OLLAMA_DEBUG_LOG_REQUESTS``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import ServerProcess, started
from tests.integration.chat_templates import THINKER

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "seed": 1}
# The level comes right after the question, so no cached prefix hides the difference.
LEVELS = (
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n"
    '{{ if eq .ThinkLevel "high" }}Think very hard, long and carefully about every single'
    " word of this question before you answer it. {{ else if .Think }}Think. {{ end }}"
    "<|im_start|>assistant\n"
)


def _post(server: ServerProcess, path: str, body: dict[str, Any], status: int = 200) -> Any:
    response = httpx.post(server.url + path, json=body, timeout=180)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def _create(server: ServerProcess, body: dict[str, Any], status: int = 200) -> Any:
    return _post(server, "/api/create", {"stream": False, **body}, status)


def _corral(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=server.env(),
        input="",
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture(scope="module")
def client(server: ServerProcess, smollm2: str) -> Iterator[ollama.Client]:
    _create(server, {"model": "levels", "from": smollm2, "template": LEVELS})
    _create(server, {"model": "thinker", "from": smollm2, "template": THINKER})
    api = ollama.Client(host=server.url)
    yield api
    api._client.close()


@pytest.fixture(scope="module")
def minilm(server: ServerProcess) -> str:
    _post(server, "/api/pull", {"model": "all-minilm", "stream": False})
    return "all-minilm"


# ---- think levels -----------------------------------------------------------------------


def test_think_level_reaches_the_go_template(server: ServerProcess, client: ollama.Client) -> None:
    high = client.generate(
        model="levels", prompt="Hi", think="high", options={**GREEDY, "num_predict": 1}
    )
    low = client.generate(
        model="levels", prompt="Hi", think="low", options={**GREEDY, "num_predict": 1}
    )
    assert high.context and low.context
    seen_high = _post(server, "/api/detokenize", {"model": "levels", "tokens": high.context})
    seen_low = _post(server, "/api/detokenize", {"model": "levels", "tokens": low.context})
    assert "<|im_end|>\nThink very hard" in seen_high["content"]
    assert "<|im_end|>\nThink. " in seen_low["content"]  # a level thinks, and is not "high"
    bad = httpx.post(
        server.url + "/api/generate", json={"model": "levels", "prompt": "x", "think": "huge"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        'invalid think value: "huge" (must be "high", "medium", "low", "max", true, or false)'
    )


def test_reasoning_effort_maps_to_the_level(server: ServerProcess, client: ollama.Client) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as api:
        counts = {}
        for effort in ("low", "high"):
            answer = api.chat.completions.create(
                model="levels",
                messages=[{"role": "user", "content": f"Name a color ({effort})."}],
                reasoning_effort=effort,
                max_tokens=1,
                temperature=0,
            )
            assert answer.usage is not None
            counts[effort] = answer.usage.prompt_tokens
        assert counts["high"] > counts["low"] + 10
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(
                model="levels",
                messages=[{"role": "user", "content": "x"}],
                extra_body={"reasoning_effort": "extreme"},
            )
        assert "invalid reasoning value" in str(caught.value)


# ---- format with a thinking model ----------------------------------------------------------


def test_format_applies_after_the_thinking(client: ollama.Client) -> None:
    """Greedy: the thinking with ``format`` is the thinking without it (unconstrained),
    where a grammar from the first token would have made the thinking JSON."""
    messages = [{"role": "user", "content": "Is the sky blue? Answer as JSON."}]
    options = {**GREEDY, "num_predict": 24}
    free = client.chat(model="thinker", messages=messages, think=True, options=options)
    shaped = client.chat(
        model="thinker", messages=messages, think=True, format="json", options=options
    )
    assert free.message.thinking and shaped.message.thinking
    assert shaped.message.thinking == free.message.thinking
    assert not shaped.message.thinking.lstrip().startswith("{")


# ---- show, tags, status -------------------------------------------------------------------


def test_show_tensors_verbose_and_capabilities(
    server: ServerProcess, client: ollama.Client
) -> None:
    shown = _post(server, "/api/show", {"model": MODEL})
    assert "tensors" not in shown
    assert shown["model_info"]["tokenizer.ggml.tokens"] == []  # long arrays emptied
    assert "completion" in shown["capabilities"]
    verbose = _post(server, "/api/show", {"model": MODEL, "verbose": True})
    tensors = {t["name"]: t for t in verbose["tensors"]}
    assert tensors["token_embd.weight"]["shape"][0] == 576
    assert all(isinstance(t["type"], str) and t["type"] for t in verbose["tensors"])
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152
    assert client.show(MODEL).capabilities == shown["capabilities"]  # the client parses it


def test_tags_have_capabilities(server: ServerProcess, client: ollama.Client, minilm: str) -> None:
    models = {m["name"]: m for m in httpx.get(server.url + "/api/tags").json()["models"]}
    shown = _post(server, "/api/show", {"model": MODEL})
    assert models["smollm2:135m"]["capabilities"] == shown["capabilities"]
    assert "thinking" in models["thinker:latest"]["capabilities"]
    assert models["all-minilm:latest"]["capabilities"] == ["embedding"]
    assert {m.model for m in client.list().models} >= {"smollm2:135m", "thinker:latest"}


def test_status_is_local(server: ServerProcess) -> None:
    response = httpx.get(server.url + "/api/status")
    assert response.status_code == 200
    assert response.json() == {"cloud": {"disabled": True, "source": "none"}}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/embed", {"input": "x"}),
        ("/api/embeddings", {"prompt": "x"}),
        ("/api/tokenize", {"content": "x"}),
        ("/api/detokenize", {"tokens": [1]}),
        ("/api/generate", {"prompt": "x"}),
        ("/api/chat", {"messages": []}),
        ("/api/show", {}),
    ],
)
def test_model_is_required(server: ServerProcess, path: str, body: dict[str, Any]) -> None:
    assert _post(server, path, body, 400) == {"error": "model is required"}
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_v1_embeddings_without_model(server: ServerProcess) -> None:
    response = httpx.post(server.url + "/v1/embeddings", json={"input": "x"})
    assert response.status_code == 400
    assert "model is required" in response.text


# ---- tokenize / detokenize ----------------------------------------------------------------


def test_tokenize_round_trip(server: ServerProcess, smollm2: str) -> None:
    text = "Hello world, how are you?"
    tokens = _post(server, "/api/tokenize", {"model": MODEL, "content": text})["tokens"]
    assert tokens and all(isinstance(t, int) for t in tokens)
    same = _post(server, "/api/tokenize", {"model": MODEL, "text": text})
    assert same["tokens"] == tokens and same["model"] == MODEL
    back = _post(server, "/api/detokenize", {"model": MODEL, "tokens": tokens})
    assert back["content"] == text and back["text"] == text
    special = "<|im_start|>user"
    parsed = _post(server, "/api/tokenize", {"model": MODEL, "content": special})["tokens"]
    literal = _post(
        server, "/api/tokenize", {"model": MODEL, "content": special, "parse_special": False}
    )["tokens"]
    assert len(parsed) < len(literal)  # the control token is one id only when parsed


def test_tokenize_embedding_model_and_keep_alive(server: ServerProcess, minilm: str) -> None:
    plain = _post(server, "/api/tokenize", {"model": minilm, "content": "hello world"})
    special = _post(
        server,
        "/api/tokenize",
        {"model": minilm, "content": "hello world", "add_special": True, "keep_alive": "7m"},
    )
    assert len(special["tokens"]) == len(plain["tokens"]) + 2  # [CLS] ... [SEP]
    loaded = {m["name"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}
    assert "all-minilm:latest" in loaded
    httpx.post(server.url + "/api/generate", json={"model": minilm, "keep_alive": 0})


@pytest.mark.parametrize(
    ("tokens", "words"),
    [([10**9], "out of range"), ([-1], "not negative"), (["a"], "integers"), ([1.5], "integers")],
)
def test_bad_token_ids(server: ServerProcess, smollm2: str, tokens: list[Any], words: str) -> None:
    error = _post(server, "/api/detokenize", {"model": MODEL, "tokens": tokens}, 400)["error"]
    assert words in error
    assert _post(server, "/api/detokenize", {"model": MODEL, "tokens": [28]})["content"]


# ---- ps ----------------------------------------------------------------------------------


def test_ps_names_every_alias_and_counts_requests(server: ServerProcess, smollm2: str) -> None:
    assert httpx.post(
        server.url + "/api/copy", json={"source": MODEL, "destination": "alias-of-smol"}
    ).is_success
    body = {"model": MODEL, "prompt": "Write a long story.", "options": {"num_predict": 400}}
    seen: list[dict[str, Any]] = []

    def stream() -> None:
        with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=180) as r:
            for _ in r.iter_lines():
                if not seen:
                    entries = httpx.get(server.url + "/api/ps").json()["models"]
                    seen.extend(e for e in entries if e["digest"])
                    break

    worker = threading.Thread(target=stream)
    worker.start()
    worker.join(180)
    smol = next(e for e in seen if "smollm2:135m" in e["names"])
    assert "alias-of-smol:latest" in smol["names"]
    assert smol["requests_running"] == 1 and smol["requests_waiting"] == 0
    for _ in range(100):  # the stream closed: the request ends
        idle = httpx.get(server.url + "/api/ps").json()["models"]
        if all(e["requests_running"] == 0 for e in idle):
            break
        time.sleep(0.1)
    assert all(e["requests_running"] == 0 for e in idle)
    with ollama.Client(host=server.url) as api:  # the client parses the extra fields away
        assert {m.model for m in api.ps().models} == {e["model"] for e in idle}
    listed = _corral(server, "ps")
    assert listed.returncode == 0, listed.stderr
    assert "RUNNING" in listed.stdout and "alias-of-smol:latest" in listed.stdout


# ---- RENDERER, PARSER, REQUIRES, info ------------------------------------------------------


def test_renderer_parser_requires_round_trip(server: ServerProcess, smollm2: str) -> None:
    modelfile = f"FROM {MODEL}\nRENDERER qwen3-coder\nPARSER qwen3-coder\nREQUIRES v0.14.0\n"
    _create(server, {"model": "withconfig", "modelfile": modelfile})
    shown = _post(server, "/api/show", {"model": "withconfig"})
    assert (shown["renderer"], shown["parser"], shown["requires"]) == (
        "qwen3-coder",
        "qwen3-coder",
        "0.14.0",
    )
    assert "RENDERER qwen3-coder" in shown["modelfile"]
    assert "REQUIRES 0.14.0" in shown["modelfile"]
    # show's Modelfile creates the same model again
    again = shown["modelfile"]
    _create(server, {"model": "withconfig2", "modelfile": again})
    shown2 = _post(server, "/api/show", {"model": "withconfig2"})
    assert (shown2["renderer"], shown2["requires"]) == ("qwen3-coder", "0.14.0")
    # a model built FROM it inherits them; the JSON fields and info work too
    _create(
        server,
        {
            "model": "child",
            "from": "withconfig",
            "parser": "other",
            "info": {"capabilities": ["vision"]},
        },
    )
    child = _post(server, "/api/show", {"model": "child"})
    assert (child["renderer"], child["parser"]) == ("qwen3-coder", "other")
    assert "vision" in child["capabilities"]
    bad = _create(
        server, {"model": "bad", "modelfile": f"FROM {MODEL}\nREQUIRES latest\n"}, status=400
    )
    assert bad["error"] == "line 2: requires must be a valid semver (e.g. 0.14.0)"
    info = _create(
        server, {"model": "bad", "from": MODEL, "info": {"context_length": -2}}, status=400
    )
    assert "context_length" in info["error"]


# ---- CLI ---------------------------------------------------------------------------------


def test_cli_show_verbose(server: ServerProcess, smollm2: str) -> None:
    shown = _corral(server, "show", "-v", MODEL)
    assert shown.returncode == 0, shown.stderr
    assert "Metadata" in shown.stdout and "Tensors" in shown.stdout
    assert "token_embd.weight" in shown.stdout
    assert "Tensors" not in _corral(server, "show", MODEL).stdout


def test_cli_run_embedding_model(server: ServerProcess, minilm: str) -> None:
    full = _corral(server, "run", minilm, "hello there")
    assert full.returncode == 0, full.stderr
    vector = json.loads(full.stdout)
    assert len(vector) == 384 and all(isinstance(v, float | int) for v in vector)
    cut = _corral(server, "run", minilm, "hello there", "--dimensions", "8", "--truncate=false")
    assert cut.returncode == 0, cut.stderr
    assert len(json.loads(cut.stdout)) == 8
    empty = _corral(server, "run", minilm)
    assert empty.returncode == 1 and "embedding models require input text" in empty.stderr


def test_cli_start_is_serve(server: ServerProcess) -> None:
    helped = _corral(server, "start", "--help")
    assert helped.returncode == 0 and "OLLAMA_HOST" in helped.stdout


# ---- OLLAMA_DEBUG_LOG_REQUESTS ------------------------------------------------------------


def test_debug_log_requests(tmp_path: Path) -> None:
    logs = tmp_path / "tmp"
    logs.mkdir()
    with started(tmp_path, OLLAMA_DEBUG_LOG_REQUESTS="1", TMPDIR=str(logs)) as server:
        body = {"model": "nothing-here", "messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(
            server.url + "/api/chat", json=body, headers={"Authorization": "Bearer sekrit"}
        )
        assert response.status_code == 404
        httpx.post(server.url + "/api/show", json={"model": "x"})  # not an inference route
        (directory,) = logs.glob("ollama-request-logs-*")
        for _ in range(50):
            if list(directory.glob("*_request.sh")):
                break
            time.sleep(0.1)
        (saved,) = directory.glob("*_api_chat_body.json")
        assert json.loads(saved.read_text()) == body
        (script,) = directory.glob("*_api_chat_request.sh")
        assert "sekrit" not in script.read_text()
        assert f"{server.url}/api/chat" in script.read_text()
        assert len(list(directory.iterdir())) == 2
        assert "replay using curl" in server.log_tail(200)
