"""ADAPTER end to end: ``corral create`` uploads a LoRA, the runner applies it.

A tiny random Llama is the base; three adapters over it: random (answers must change), zero
B matrices (answers must not change by a single token) and one of the wrong shape (the load
fails with a 500 that names it). Models are made with the real CLI, which uploads the local
files as blobs, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.runner.tiny_lora import write_tiny_base, write_tiny_lora

pytestmark = pytest.mark.model

PROMPT = "hello world, hello"


def _cli_create(server: ServerProcess, name: str, modelfile: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral", "create", name, "-f", str(modelfile)],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def models(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("lora")
    base = write_tiny_base(folder)
    write_tiny_lora(folder / "lora.gguf", base)
    write_tiny_lora(folder / "zero.gguf", base, zero_b=True)
    write_tiny_lora(folder / "bad.gguf", base, wrong_shape=True)
    (folder / "Modelfile.base").write_text("FROM ./base.gguf\nTEMPLATE {{ .Prompt }}\n")
    _cli_create(server, "tiny-base", folder / "Modelfile.base")
    for name in ("lora", "zero", "bad"):
        modelfile = folder / f"Modelfile.{name}"
        modelfile.write_text(f"FROM tiny-base\nADAPTER ./{name}.gguf\n")
        _cli_create(server, f"tiny-{name}", modelfile)
    return {name: f"tiny-{name}" for name in ("base", "lora", "zero", "bad")}


def _generate(server: ServerProcess, model: str) -> httpx.Response:
    return httpx.post(
        server.url + "/api/generate",
        json={
            "model": model,
            "prompt": PROMPT,
            "options": {"temperature": 0, "num_predict": 8},
            "stream": False,
        },
        timeout=120,
    )


def _tokens(server: ServerProcess, model: str) -> list[Any]:
    response = _generate(server, model)
    assert response.status_code == 200, response.text
    context: list[Any] = response.json()["context"]
    return context


def test_show_lists_the_adapter(server: ServerProcess, models: dict[str, str]) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": models["lora"]}).json()
    adapters = [line for line in shown["modelfile"].splitlines() if line.startswith("ADAPTER ")]
    assert len(adapters) == 1 and "sha256-" in adapters[0]


def test_adapter_changes_greedy_output_and_a_zero_one_does_not(
    server: ServerProcess, models: dict[str, str]
) -> None:
    base = _tokens(server, models["base"])
    adapted = _tokens(server, models["lora"])
    zero = _tokens(server, models["zero"])
    assert adapted != base
    assert zero == base
    # base and adapted share the weights file: asking for the base again reloads without LoRA
    assert _tokens(server, models["base"]) == base


def test_bad_adapter_fails_the_load_naming_it(
    server: ServerProcess, models: dict[str, str]
) -> None:
    response = _generate(server, models["bad"])
    assert response.status_code == 500
    error = response.json()["error"]
    assert "failed to load LoRA adapter" in error and "sha256-" in error
    assert "incorrect shape" in error
    assert _generate(server, models["base"]).status_code == 200  # the server goes on
