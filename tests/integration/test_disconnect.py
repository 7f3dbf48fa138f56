"""A client that disconnects gives its runner slot back at once, in every phase.

One real server with ``OLLAMA_NUM_PARALLEL=1`` (one slot: a second request waits in the
runner's queue). Clients are raw sockets, so a test closes the connection exactly when the
request is where it wants it (generating, queued), found by polling ``/metrics``.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"
DEADLINE_SECONDS = 10.0
#: a raw prompt SmolLM2 continues for a long time: far longer than any deadline here
COUNTING = {
    "model": MODEL,
    "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,",
    "raw": True,
    "options": {"num_predict": 4000, "temperature": 0},
}


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with started(tmp_path_factory.mktemp("disconnect"), OLLAMA_NUM_PARALLEL="1") as server:
        pulled = httpx.post(
            server.url + "/api/pull", json={"model": MODEL, "stream": False}, timeout=120
        )
        assert pulled.status_code == 200, pulled.text
        loaded = httpx.post(server.url + "/api/generate", json={"model": MODEL}, timeout=120)
        assert loaded.json()["done_reason"] == "load"
        yield server


def metric(server: ServerProcess, name: str, labels: dict[str, str] | None = None) -> float:
    text = httpx.get(server.url + "/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return float(sample.value)
    return 0.0


def in_use(server: ServerProcess) -> float:
    return metric(server, "corral_runner_requests", {"model": MODEL})


def wait_for(condition: Callable[[], bool], what: str, server: ServerProcess) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{server.log_tail()}")
        time.sleep(0.05)


def send(
    server: ServerProcess, body: dict[str, object], path: str = "/api/generate"
) -> socket.socket:
    """POST ``path`` on a raw socket; the caller reads or closes it."""
    address = urlsplit(server.url)
    assert address.hostname is not None and address.port is not None
    sock = socket.create_connection((address.hostname, address.port), timeout=60)
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed before {marker!r}: {received!r}"
        received += chunk
    return received


def canceled(server: ServerProcess) -> float:
    return metric(
        server, "corral_requests_total", {"route": "/api/generate", "outcome": "canceled"}
    )


def test_disconnect_during_a_non_streaming_answer_frees_the_slot(one_slot: ServerProcess) -> None:
    before = canceled(one_slot)
    client = send(one_slot, {**COUNTING, "stream": False})
    wait_for(lambda: in_use(one_slot) == 1, "the request to generate", one_slot)
    client.close()
    wait_for(lambda: in_use(one_slot) == 0, "the refcount to drop", one_slot)
    assert canceled(one_slot) == before + 1
    assert_slot_free(one_slot)


def test_disconnect_while_queued_in_the_runner_frees_the_slot(one_slot: ServerProcess) -> None:
    before = canceled(one_slot)
    first = send(one_slot, {**COUNTING, "stream": True})
    read_until(first, b'"response"')  # it holds the one slot and streams
    queued = send(one_slot, {**COUNTING, "stream": True})
    wait_for(lambda: in_use(one_slot) == 2, "the second request to queue", one_slot)
    waiting = {"model": MODEL}
    assert metric(one_slot, "corral_requests_waiting_for_slot", waiting) == 1
    queued.close()  # no byte of it was ever sent: the response did not exist yet
    wait_for(lambda: in_use(one_slot) == 1, "the queued request to let go", one_slot)
    assert metric(one_slot, "corral_requests_waiting_for_slot", waiting) == 0
    first.close()
    wait_for(lambda: in_use(one_slot) == 0, "the streaming request to let go", one_slot)
    assert canceled(one_slot) == before + 2
    assert_slot_free(one_slot)


@pytest.mark.parametrize("stream", [False, True])
def test_disconnect_from_openai_routes_frees_the_slot(
    one_slot: ServerProcess, stream: bool
) -> None:
    """/v1 clients leave too (an SDK timeout, a closed tab): non-streamed answers and streams
    still waiting in the runner's queue give their slot back."""
    blocker = send(one_slot, {**COUNTING, "stream": True})
    read_until(blocker, b'"response"')  # holds the one slot
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to a thousand."}],
        "max_tokens": 4000,
        "stream": stream,
    }
    leaving = send(one_slot, body, path="/v1/chat/completions")
    wait_for(lambda: in_use(one_slot) == 2, "the /v1 request to queue", one_slot)
    leaving.close()
    wait_for(lambda: in_use(one_slot) == 1, "the /v1 request to let go", one_slot)
    blocker.close()
    wait_for(lambda: in_use(one_slot) == 0, "the blocker to let go", one_slot)
    assert_slot_free(one_slot)


def assert_slot_free(server: ServerProcess) -> None:
    """The runner itself dropped the cancelled work: with one slot, a new request would
    otherwise wait behind thousands of tokens."""
    started_at = time.monotonic()
    response = httpx.post(
        server.url + "/api/generate",
        json={**COUNTING, "stream": False, "options": {"num_predict": 3}},
        timeout=DEADLINE_SECONDS,
    )
    assert response.status_code == 200, response.text
    assert response.json()["eval_count"] <= 3
    assert time.monotonic() - started_at < DEADLINE_SECONDS


def test_disconnect_while_waiting_for_a_load_leaves_the_load_to_others(
    tmp_path: Path,
) -> None:
    with started(tmp_path) as server:
        pulled = httpx.post(
            server.url + "/api/pull", json={"model": MODEL, "stream": False}, timeout=120
        )
        assert pulled.status_code == 200
        leaving = send(server, {**COUNTING, "stream": True, "options": {"num_predict": 2}})
        wait_for(lambda: metric(server, "corral_queue_depth") == 1, "the load wait", server)
        leaving.close()
        wait_for(lambda: metric(server, "corral_queue_depth") == 0, "the queue to empty", server)
        after = httpx.post(
            server.url + "/api/generate",
            json={**COUNTING, "stream": False, "options": {"num_predict": 2}},
            timeout=120,
        )
        assert after.status_code == 200, after.text
        assert metric(server, "corral_model_loads_total") == 1  # the load went on, shared
