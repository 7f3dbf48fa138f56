"""What a cold ``corral run`` imports: each of its three processes (the CLI, the background
``corral serve``, the runner) leaves out the modules it does not need on that path."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_server_start_up_skips_the_command_line_and_numpy() -> None:
    # what ``python -m corral serve`` (how the CLI starts a background server) imports
    loaded = _modules_after("import corral.server.serve")
    for heavy in ("numpy", "gguf.gguf_writer", "typer", "prompt_toolkit", "corral.cli.main"):
        assert heavy not in loaded, heavy
    assert "gguf.constants" in loaded  # the GGUF reader's type tables, alone


def test_early_server_start_loads_nothing_of_the_command_line() -> None:
    # what ``corral run`` has loaded when it starts a missing server (corral/__main__.py)
    loaded = _modules_after("import corral.cli.background\nimport corral.config")
    for heavy in ("httpx", "typer", "rich", "prompt_toolkit", "pydantic", "corral.cli.main"):
        assert heavy not in loaded, heavy


def test_one_shot_cli_skips_the_interactive_prompt() -> None:
    loaded = _modules_after("import corral.cli.main")
    assert "prompt_toolkit" not in loaded
    assert "numpy" not in loaded


def test_runner_loads_the_bindings_without_the_high_level_layer() -> None:
    code = (
        "import corral.runner.__main__\n"
        "import llama_cpp\n"
        "assert callable(llama_cpp.llama_backend_init)\n"
        "assert llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO is not None\n"
    )
    loaded = _modules_after(code)
    assert "llama_cpp.llama_cpp" in loaded
    assert "llama_cpp.llama" not in loaded
    assert "llama_cpp.llama_chat_format" not in loaded


def test_runner_package_names_still_resolve_later() -> None:
    code = (
        "import corral.runner.__main__\n"
        "import llama_cpp\n"
        "from llama_cpp import mtmd_cpp\n"
        "print(llama_cpp.__version__, llama_cpp.Llama.__name__, mtmd_cpp.__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    version, cls, mtmd = done.stdout.split()
    assert version[0].isdigit() and cls == "Llama" and mtmd == "llama_cpp.mtmd_cpp"


@pytest.mark.parametrize("argv", [["-m", "corral", "serve"], ["-m", "corral.cli.main"]])
def test_serve_with_a_bad_host_is_one_line_error(argv: list[str]) -> None:
    if argv[-1] == "corral.cli.main":  # the full command line's ``serve``, for comparison
        argv = [
            "-c",
            "import sys; sys.argv[1:] = ['serve']; from corral.cli.main import main; main()",
        ]
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OLLAMA_HOST": "34637"},
    )
    assert done.returncode == 1
    assert done.stderr.startswith("Error: OLLAMA_HOST='34637': a bare number is a host name")
    assert "Traceback" not in done.stderr
