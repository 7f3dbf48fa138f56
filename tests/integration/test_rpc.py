"""A model across RPC workers, for real: ``corral serve`` in a client network namespace and
two ``corral rpc-worker`` processes in namespaces of their own, joined by veth pairs (no
address in the root namespace). Where namespaces cannot be made (not root, no ``ip``), the
same tests run with everything on loopback (CORRAL_TEST_RPC_LOOPBACK=1 asks for it); the
skipped variant's reason says which ran.

The server runs with ``CORRAL_RPC_ONLY=1`` so that SmolLM2 (which fits anywhere) is placed
on the workers. The test talks to it through ``tests.integration.rpc_client``, run inside
the client namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, start_server, stop_process, stop_server
from tests.rpc.fake_worker import engine_has_rpc

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(
        not engine_has_rpc(),
        reason="the engine was built without llama.cpp's RPC backend (-DGGML_RPC=ON):"
        " rebuild it with ./install.sh --rebuild-engine",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "top_k": 1, "seed": 7, "num_predict": 40, "num_ctx": 512}
PROMPT = "Write one paragraph about a lighthouse keeper."
_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _namespaces_permitted() -> str:
    """Why network namespaces cannot be made here ("" when they can);
    ``CORRAL_TEST_RPC_LOOPBACK=1`` runs the loopback variant anyway."""
    if os.environ.get("CORRAL_TEST_RPC_LOOPBACK"):
        return "CORRAL_TEST_RPC_LOOPBACK is set"
    if shutil.which("ip") is None:
        return "no `ip` command"
    name = f"crlp{os.getpid() % 100000}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` is not permitted ({exc})"
    _ip("netns", "del", name)
    return ""


@dataclass
class Worker:
    namespace: str | None
    host: str
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass
class Topology:
    kind: str  # "netns" or "loopback"
    tmp: Path
    client_ns: str | None = None
    workers: list[Worker] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def prefix(self, namespace: str | None) -> list[str]:
        return ["ip", "netns", "exec", namespace] if namespace else []

    def client(
        self, command: str, target: str, body: dict[str, object] | None = None
    ) -> dict[str, Any]:
        argv = [sys.executable, "-m", "tests.integration.rpc_client", command, target]
        if body is not None:
            argv.append(json.dumps(body))
        done = subprocess.run(
            self.prefix(self.client_ns) + argv,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def corral(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The ``corral`` command in the client namespace."""
        return subprocess.run(
            [*self.prefix(self.client_ns), sys.executable, "-m", "corral", *args],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start_worker(self, worker: Worker) -> None:
        with worker.log.open("ab") as log:
            worker.process = subprocess.Popen(
                [
                    *self.prefix(worker.namespace),
                    *[sys.executable, "-m", "corral", "rpc-worker", "--host", worker.host],
                    *["--port", str(worker.port), "--threads", "1"],
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while self.client("probe", worker.endpoint)["state"] != "ok":
            assert worker.process.poll() is None, worker.log.read_text()
            assert time.monotonic() < deadline, worker.log.read_text()
            time.sleep(0.2)

    def stop_worker(self, worker: Worker) -> None:
        process = worker.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.wait(timeout=10)
        worker.process = None

    def ensure_workers(self) -> None:
        """Every worker running and free again (a test may have killed or stopped one)."""
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is not None:
                self.start_worker(worker)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)
        for worker in self.workers:  # the last runner's connection may take a moment to go
            deadline = time.monotonic() + 20
            while self.client("probe", worker.endpoint)["state"] != "ok":
                assert time.monotonic() < deadline, worker.log.read_text()
                time.sleep(0.2)


def _netns(tmp: Path) -> Topology:
    tag = f"{os.getpid() % 10000}{next(_counter)}"
    topology = Topology("netns", tmp, client_ns=f"crl{tag}c")
    topology.namespaces = [f"crl{tag}c", f"crl{tag}w1", f"crl{tag}w2"]
    try:
        for name in topology.namespaces:
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        for index in (1, 2):
            here, there = f"cr{tag}c{index}", f"cr{tag}w{index}"
            worker_ns = f"crl{tag}w{index}"
            _ip(
                "link", "add", here, "netns", topology.namespaces[0], "type", "veth",
                "peer", "name", there, "netns", worker_ns,
            )  # fmt: skip
            _ip("-n", topology.namespaces[0], "addr", "add", f"10.231.{index}.1/24", "dev", here)
            _ip("-n", worker_ns, "addr", "add", f"10.231.{index}.2/24", "dev", there)
            _ip("-n", topology.namespaces[0], "link", "set", here, "up")
            _ip("-n", worker_ns, "link", "set", there, "up")
            topology.workers.append(
                Worker(worker_ns, f"10.231.{index}.2", 50052, tmp / f"worker{index}.log")
            )
    except BaseException:
        _teardown(topology)
        raise
    return topology


def _loopback(tmp: Path) -> Topology:
    topology = Topology("loopback", tmp)
    for index in (1, 2):
        topology.workers.append(Worker(None, "127.0.0.1", free_port(), tmp / f"worker{index}.log"))
    return topology


def _teardown(topology: Topology) -> None:
    for worker in topology.workers:
        topology.stop_worker(worker)
    for name in topology.namespaces:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            _ip("netns", "del", name)


@pytest.fixture(scope="module", params=["netns", "loopback"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    why_not = _namespaces_permitted()
    if request.param == "netns" and why_not:
        pytest.skip(f"network namespaces: {why_not}; the loopback variant ran instead")
    if request.param == "loopback" and not why_not:
        pytest.skip("network namespaces are permitted here: the netns variant ran instead")
    tmp = tmp_path_factory.mktemp(f"rpc-{request.param}")
    made = _netns(tmp) if request.param == "netns" else _loopback(tmp)
    try:
        for worker in made.workers:
            made.start_worker(worker)
        yield made
    finally:
        _teardown(made)


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def served(topology: Topology, *, fresh: bool = True, **env: str) -> Iterator[Served]:
    """``corral serve`` in the client namespace, on the shared store, placing on workers
    (``fresh``: every worker running and free first)."""
    if fresh:
        topology.ensure_workers()
    port = free_port()
    log = topology.tmp / f"serve-{port}.log"
    full = {
        **os.environ,
        "HOME": str(topology.tmp),
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_MODELS": str(topology.tmp / "models"),
        "OLLAMA_NUM_PARALLEL": "1",
        "OLLAMA_RPC_SERVERS": ",".join(w.endpoint for w in topology.workers),
        "CORRAL_RPC_ONLY": "1",
        # its own CPU-turn lock: a runner of another server on this machine (a frozen one
        # in a watchdog test) must not make these tests wait for a turn
        "TMPDIR": str(topology.tmp),
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*topology.prefix(topology.client_ns), sys.executable, "-m", "corral", "serve"],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=full,
        )
    server = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        assert topology.client("wait", server.url)["ok"], log.read_text()[-3000:]
        pulled = topology.client("pull", server.url, {"model": MODEL})
        assert pulled["status"] == 200, pulled
        yield server
    finally:
        stop_process(process)


def _generate(topology: Topology, server: Served, **extra: object) -> dict[str, Any]:
    body: dict[str, object] = {"model": MODEL, "prompt": PROMPT, "options": GREEDY, **extra}
    return topology.client("generate", server.url, body)


def _placement(topology: Topology, server: Served) -> dict[str, int]:
    (entry,) = topology.client("ps", server.url)["models"]
    return {w["endpoint"]: w["layers"] for w in entry["rpc"]["workers"]}


def test_split_over_two_workers_gives_the_local_tokens(topology: Topology, tmp_path: Path) -> None:
    local = start_server(tmp_path, OLLAMA_NUM_PARALLEL="1", TMPDIR=str(tmp_path))
    try:
        pulled = httpx.post(local.url + "/api/pull", json={"model": MODEL, "stream": False})
        assert pulled.status_code == 200, pulled.text
        body = {"model": MODEL, "prompt": PROMPT, "options": GREEDY, "stream": False}
        expected = httpx.post(local.url + "/api/generate", json=body, timeout=120).json()
    finally:
        stop_server(local)
    with served(topology) as server:
        result = _generate(topology, server)
        placement = _placement(topology, server)
        shown = topology.corral("ps", OLLAMA_HOST=server.url.removeprefix("http://"))
    assert result["error"] is None, result
    assert result["last"]["context"] == expected["context"]  # prompt and greedy tokens
    assert result["text"] == expected["response"]
    first, second = topology.workers
    assert placement == {first.endpoint: 16, second.endpoint: 15}, placement
    assert f"RPC 16@{first.endpoint} 15@{second.endpoint}" in shown.stdout, shown.stdout


def test_a_killed_worker_fails_the_stream_fast_and_the_next_request_replans(
    topology: Topology,
) -> None:
    first, second = topology.workers
    with served(topology) as server:
        assert _generate(topology, server)["error"] is None  # loaded on both
        result = _generate(
            topology,
            server,
            options={**GREEDY, "num_predict": 400},
            kill_pid=second.pid,
            kill_signal=int(signal.SIGKILL),
            kill_after=3,
        )
        assert result["error"] is not None, result
        assert "lost the connection to an RPC worker" in result["error"]
        assert "ggml-rpc.cpp" in result["error"]  # llama.cpp's reason, short
        assert result["after_kill"] < 5, result
        again = _generate(topology, server)
        assert again["error"] is None, again
        assert _placement(topology, server) == {first.endpoint: 31}
        assert "unreachable" in server.log.read_text()


def test_a_frozen_worker_is_caught_by_the_stall_guard(topology: Topology) -> None:
    first, second = topology.workers
    with served(topology, CORRAL_RUNNER_STALL_TIMEOUT="2s") as server:
        assert _generate(topology, server)["error"] is None
        try:
            result = _generate(
                topology,
                server,
                options={**GREEDY, "num_predict": 400},
                kill_pid=second.pid,
                kill_signal=int(signal.SIGSTOP),
                kill_after=3,
            )
            assert result["error"] is not None, result
            assert "stopped answering" in result["error"], result
            assert result["after_kill"] < 15, result
            # the stopped worker answers no hello: busy, left out; the other takes it all
            again = _generate(topology, server)
            assert again["error"] is None, again
            assert _placement(topology, server) == {first.endpoint: 31}
        finally:
            os.kill(second.pid, signal.SIGCONT)


def test_a_worker_held_by_another_client_is_not_leased(topology: Topology) -> None:
    first, second = topology.workers
    topology.ensure_workers()
    holder = subprocess.Popen(
        [
            *topology.prefix(topology.client_ns),
            *[sys.executable, "-m", "tests.integration.rpc_client", "hold", first.endpoint],
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout is not None
        assert json.loads(holder.stdout.readline())["held"] > 0
        workers = ",".join(w.endpoint for w in topology.workers)
        info = topology.corral("info", OLLAMA_RPC_SERVERS=workers)
        assert info.returncode == 0, info.stderr
        assert f"RPC worker {first.endpoint}: busy" in info.stdout, info.stdout
        assert f"RPC worker {second.endpoint}: ok (protocol 7.0.0" in info.stdout
        with served(topology, fresh=False) as server:
            result = _generate(topology, server)
            assert result["error"] is None, result
            assert _placement(topology, server) == {second.endpoint: 31}
            assert f"RPC worker {first.endpoint}: busy" in server.log.read_text()
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
