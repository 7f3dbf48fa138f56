"""``corral rpc-worker``: the loud warning off loopback, a real worker answering the probe,
and a clear error when it cannot listen or the engine has no RPC."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from corral.rpc.probe import ProbeState, probe
from corral.rpc.worker import bind_warning, is_loopback
from tests.rpc.fake_worker import closed_port, engine_has_rpc

needs_rpc = pytest.mark.skipif(not engine_has_rpc(), reason="the engine was built without RPC")


def _worker(*args: str) -> list[str]:
    return [sys.executable, "-m", "corral", "rpc-worker", "--threads", "1", *args]


def test_only_loopback_goes_without_a_warning() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("127.0.0.9")
    assert bind_warning("127.0.0.1", 50052) is None
    warning = bind_warning("10.0.0.5", 50052)
    assert warning is not None
    assert "not loopback" in warning and "run code on this host" in warning
    assert bind_warning("0.0.0.0", 1) is not None


@needs_rpc
def test_a_worker_serves_the_probe_and_survives_a_client_that_gave_up() -> None:
    endpoint = closed_port()
    port = endpoint.rsplit(":", 1)[1]
    process = subprocess.Popen(
        _worker("--port", port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while (result := probe(endpoint, timeout=1)).state is not ProbeState.OK:
            assert process.poll() is None and time.monotonic() < deadline, result
            time.sleep(0.1)
        assert result.version == "7.0.0" and result.free_total > 0
        # a client holds it: the next probe is "busy", gives up, and the worker lives on
        holder = socket.create_connection(("127.0.0.1", int(port)))
        holder.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))
        assert len(holder.recv(64)) > 0
        assert probe(endpoint, timeout=0.5).state is ProbeState.BUSY
        holder.close()
        deadline = time.monotonic() + 10
        while probe(endpoint, timeout=1).state is not ProbeState.OK:
            assert process.poll() is None, "the worker died of a client that left"
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@needs_rpc
def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = subprocess.run(_worker("--port", port), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"could not listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.skipif(engine_has_rpc(), reason="this engine has RPC")
def test_an_engine_without_rpc_says_how_to_get_it() -> None:
    done = subprocess.run(_worker("--port", "1"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "built without llama.cpp's RPC backend" in done.stderr
    assert "./install.sh --rebuild-engine" in done.stderr
