"""The real ``corral`` command against a real server, through subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from corral.catalog import BUNDLED, pull_bundled
from corral.store import MEDIA_TYPE_PARAMS, MEDIA_TYPE_SYSTEM, Layer, Manifest, ModelStore, Name
from tests.conftest import ServerProcess, free_port, processes

pytestmark = pytest.mark.model


def corral(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=env,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_greedy_model(store: ModelStore) -> str:
    """smollm2 with greedy sampling, a length cap and a plain system prompt, so answers are
    reproducible (greedy, the 135M model answers factual questions far better with this
    system prompt than with its authors' default one, which the bundled model carries)."""
    source = store.read_manifest(Name.parse("smollm2:135m"))
    params = store.write_blob_bytes(
        json.dumps(
            {"temperature": 0, "num_predict": 64, "stop": ["<|im_start|>", "<|im_end|>"]}
        ).encode()
    )
    system = store.write_blob_bytes(b"You are a helpful assistant.")
    replaced = {
        MEDIA_TYPE_PARAMS: Layer(MEDIA_TYPE_PARAMS, params.digest, params.size),
        MEDIA_TYPE_SYSTEM: Layer(MEDIA_TYPE_SYSTEM, system.digest, system.size),
    }
    kept = tuple(layer for layer in source.layers if layer.media_type not in replaced)
    layers = kept + tuple(replaced.values())
    store.write_manifest(Name.parse("smollm2:greedy"), Manifest(source.config, layers))
    return "smollm2:greedy"


@pytest.fixture(scope="module")
def greedy(server: ServerProcess, smollm2: str) -> str:
    return write_greedy_model(ModelStore(server.models_dir))


def test_run_with_prompt_prints_answer(server: ServerProcess, greedy: str) -> None:
    result = corral("run", greedy, "What is the capital of France?", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "Traceback" not in result.stderr


def test_run_reads_stdin(server: ServerProcess, greedy: str) -> None:
    result = corral("run", greedy, env=server.env(), stdin="Repeat the word banana.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_run_verbose_prints_timings(server: ServerProcess, greedy: str) -> None:
    result = corral("run", greedy, "Hi", "--verbose", env=server.env())
    assert result.returncode == 0, result.stderr
    assert "eval rate:" in result.stderr
    assert "total duration:" in result.stderr


def test_list_show_ps(server: ServerProcess, smollm2: str) -> None:
    listed = corral("list", env=server.env())
    assert listed.returncode == 0
    assert listed.stdout.split()[:4] == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert "smollm2:135m" in listed.stdout
    as_json = json.loads(corral("list", "--json", env=server.env()).stdout)
    assert "smollm2:135m" in [m["name"] for m in as_json["models"]]
    shown = corral("show", "smollm2:135m", env=server.env())
    assert "architecture" in shown.stdout and "llama" in shown.stdout
    assert "<|im_start|>" in corral("show", "smollm2:135m", "--template", env=server.env()).stdout
    assert "stop" in corral("show", "smollm2:135m", "--parameters", env=server.env()).stdout
    assert "FROM" in corral("show", "smollm2:135m", "--modelfile", env=server.env()).stdout
    httpx.post(f"{server.url}/api/generate", json={"model": "smollm2:135m"}, timeout=60)
    ps = corral("ps", env=server.env())
    # Both names share one GGUF, so one runner serves both and ps shows whichever loaded it.
    assert "smollm2:" in ps.stdout and "100% CPU" in ps.stdout
    stopped = corral("stop", "smollm2:135m", env=server.env())
    assert stopped.returncode == 0
    assert "smollm2" not in corral("ps", env=server.env()).stdout


def test_unknown_model_is_one_line_error(server: ServerProcess, smollm2: str) -> None:
    result = corral("show", "nothing-like-this", env=server.env())
    assert result.returncode == 1
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cp_and_rm(server: ServerProcess, smollm2: str) -> None:
    assert corral("cp", "smollm2:135m", "mine/copy:v1", env=server.env()).returncode == 0
    assert "mine/copy:v1" in corral("list", env=server.env()).stdout
    removed = corral("rm", "mine/copy:v1", env=server.env())
    assert removed.returncode == 0, removed.stderr
    assert "mine/copy" not in corral("list", env=server.env()).stdout
    assert "smollm2:135m" in corral("list", env=server.env()).stdout


def test_commands_without_server_say_so(tmp_path: Path) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "HOME": str(tmp_path)}
    result = corral("list", env=env)
    assert result.returncode == 1
    assert "OLLAMA_HOST" in result.stderr and "corral serve" in result.stderr
    assert "Traceback" not in result.stderr


def _pids_serving(host: str) -> list[int]:
    wanted = f"OLLAMA_HOST={host}".encode()
    pids = []
    for pid, proc_dir, cmdline in processes():
        if b"corral" not in cmdline or b"serve" not in cmdline:
            continue
        try:
            if wanted in (proc_dir / "environ").read_bytes():
                pids.append(pid)
        except OSError:
            continue
    return pids


def test_run_starts_a_background_server(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "HOME": str(tmp_path),
    }
    store = ModelStore(tmp_path / "models")
    pull_bundled(store, Name.parse("smollm2:135m"), BUNDLED[0], lambda _event: None)
    model = write_greedy_model(store)
    try:
        result = corral("run", model, "Say hi.", env=env, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "started a corral server in the background" in result.stderr
        assert result.stdout.strip()
        assert httpx.get(f"http://{host}/").text == "Ollama is running"
        # started once, early (before the command line imported), and waited for
        assert len(_pids_serving(host)) == 1
        again = corral("run", model, "Say hi.", env=env, timeout=240)
        assert again.returncode == 0 and "started a corral server" not in again.stderr
        assert len(_pids_serving(host)) == 1
    finally:
        for pid in _pids_serving(host):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _pids_serving(host) and time.monotonic() < deadline:
            time.sleep(0.1)


def test_run_without_prompt_chats_on_a_terminal(server: ServerProcess, greedy: str) -> None:
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI on a pseudo-terminal
        os.execve(sys.executable, [sys.executable, "-m", "corral", "run", greedy], server.env())

    def read_until(marker: str, seconds: float = 60) -> str:
        seen = ""
        deadline = time.monotonic() + seconds
        while marker not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096).decode(errors="replace")
                except OSError:
                    break
        return seen

    # the placeholder is drawn on each fresh prompt (">>> " is drawn again as a line is typed);
    # Enter on a terminal in raw mode is a carriage return
    ready = "Send a message"
    try:
        assert ">>> " in read_until(ready)
        os.write(fd, b"What is the capital of France?\r")
        answer = read_until(ready)
        assert "Paris" in answer
        os.write(fd, b"/bye\r")
        read_until("\n", 5)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
