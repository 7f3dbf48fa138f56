"""The runner's side of RPC: its arguments, and the guards that turn llama.cpp's abort and
a frozen worker into a clear exit (in child processes: both end the process)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from corral.runner.rpc import RPC_LOST, RPC_STALLED
from corral.runner.settings import LoadSettings, add_arguments, from_namespace
from tests.rpc.fake_worker import closed_port, engine_has_rpc


def test_rpc_placement_travels_in_the_runner_arguments() -> None:
    settings = LoadSettings(
        model_path="/m.gguf",
        num_gpu_layers=31,
        tensor_split=(16.0, 15.0),
        rpc_servers=("10.0.0.2:50052", "10.0.0.3:50052"),
        rpc_keep_output=True,
        rpc_stall_seconds=12.5,
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    back = from_namespace(parser.parse_args(settings.argv()))
    assert back == settings
    assert back.rpc_stall_seconds == 12.5
    assert "--rpc" not in LoadSettings(model_path="/m.gguf").argv()


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not engine_has_rpc(), reason="the engine was built without RPC")
def test_an_unreachable_worker_is_a_clear_exit_not_an_abort() -> None:
    endpoint = closed_port()
    started = time.monotonic()
    done = _child(
        "import llama_cpp\n"
        "from corral.runner import rpc\n"
        "params = llama_cpp.llama_model_default_params()\n"
        f"rpc.attach(params, ({endpoint!r},), keep_output=True)\n"
    )
    assert done.returncode == RPC_LOST, done.stderr
    assert f"error: lost the connection to an RPC worker ({endpoint})" in done.stderr
    assert "Failed to connect" in done.stderr
    assert time.monotonic() - started < 20


def test_a_decode_step_that_never_ends_exits_with_rpc_stalled() -> None:
    started = time.monotonic()
    done = _child(
        "import time\n"
        "from corral.runner import rpc\n"
        "class Engine:\n"
        "    step_started = time.monotonic()\n"
        "rpc.watch_steps(Engine(), 0.5, ('w:1',))\n"
        "time.sleep(30)\n"
    )
    assert done.returncode == RPC_STALLED
    assert "error: an RPC worker (w:1) stopped answering" in done.stderr
    assert time.monotonic() - started < 10


def test_no_stall_guard_without_a_timeout() -> None:
    done = _child(
        "import time\n"
        "from corral.runner import rpc\n"
        "class Engine:\n"
        "    step_started = 0.0\n"
        "rpc.watch_steps(Engine(), 0, ('w:1',))\n"
        "time.sleep(1.5)\n"
    )
    assert done.returncode == 0, done.stderr
