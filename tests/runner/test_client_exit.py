"""How ``RunnerClient`` reports a process that ended: what the scheduler's watcher logs
and what a client whose runner died is told."""

from __future__ import annotations

import asyncio
import sys

from corral.runner.client import RunnerClient
from corral.runner.settings import LoadSettings


async def _client(*argv: str) -> RunnerClient:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    client = RunnerClient(LoadSettings(model_path="unused.gguf"), process)
    client._stderr_task = asyncio.create_task(client._read_stderr())
    return client


async def test_a_killed_process_names_the_signal() -> None:
    client = await _client(sys.executable, "-c", "import time; time.sleep(60)")
    assert client.exit_status() == "still running"
    client.process.kill()
    async with asyncio.timeout(10):
        assert await client.exited() == "killed by signal 9 (SIGKILL)"
    await client.stop()


async def test_an_exit_status_comes_with_the_last_error_line() -> None:
    script = "import sys; print('error: out of memory', file=sys.stderr); sys.exit(3)"
    client = await _client(sys.executable, "-c", script)
    async with asyncio.timeout(10):
        assert await client.exited() == "exit status 3; last error: error: out of memory"
    died = await client._died(None)
    assert died.message == (
        "model runner has unexpectedly stopped, this may be due to resource limitations or an"
        " internal error, check corral server logs for details: exit status 3 error: out of"
        " memory"
    )
    await client.stop()
