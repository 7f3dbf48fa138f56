"""``corral create``, ``push`` and ``pull`` as a user runs them, against a real server and a
real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.convert import convert_checkpoint
from tests.cli.test_cli import corral
from tests.conftest import ServerProcess
from tests.convert.tiny import write_tiny_bert, write_tiny_llama
from tests.registry.registry_process import Registry, running_registry
from tests.registry.tiny import write_tiny_gguf

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def test_create_push_rm_pull(server: ServerProcess, registry: Registry, tmp_path: Path) -> None:
    env = server.env()
    write_tiny_gguf(tmp_path / "weights.gguf", seed=7)
    (tmp_path / "Modelfile").write_text(
        "# tiny test model\nFROM ./weights.gguf\nPARAMETER temperature 0.3\n"
        'SYSTEM """be\nterse"""\n'
    )
    created = corral("create", "clitiny", "-f", str(tmp_path / "Modelfile"), env=env)
    assert created.returncode == 0, created.stderr
    assert "transferring model data" in created.stderr
    assert "success" in created.stderr
    shown = corral("show", "clitiny", "--modelfile", env=env)
    assert "PARAMETER temperature 0.3" in shown.stdout

    # the shown Modelfile recreates the same model; the weights are not uploaded again
    (tmp_path / "Shown").write_text(shown.stdout)
    again = corral("create", "clitiny2", "-f", str(tmp_path / "Shown"), env=env)
    assert again.returncode == 0, again.stderr
    tags = {m["name"]: m for m in httpx.get(server.url + "/api/tags").json()["models"]}
    assert tags["clitiny2:latest"]["digest"] == tags["clitiny:latest"]["digest"]

    remote = f"{registry.host}/cli/tiny:1"
    assert corral("cp", "clitiny", remote, env=env).returncode == 0
    pushed = corral("push", remote, "--insecure", env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushing manifest" in pushed.stderr
    assert corral("rm", remote, env=env).returncode == 0
    pulled = corral("pull", remote, "--insecure", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "verifying sha256 digest" in pulled.stderr
    tags = {m["name"]: m for m in httpx.get(server.url + "/api/tags").json()["models"]}
    assert tags[remote]["digest"] == tags["clitiny:latest"]["digest"]


def test_create_errors_are_one_line(server: ServerProcess, tmp_path: Path) -> None:
    env = server.env()
    (tmp_path / "Modelfile").write_text("FROM ./weights.gguf\nPARAMETER nope 1\n")
    bad = corral("create", "x", "-f", str(tmp_path / "Modelfile"), env=env)
    assert bad.returncode == 1
    assert "line 2: unknown parameter 'nope'" in bad.stderr
    (tmp_path / "Modelfile").write_text("FROM ./missing.gguf\n")
    missing = corral("create", "x", "-f", str(tmp_path / "Modelfile"), env=env)
    assert missing.returncode == 1
    assert "./missing.gguf: no such file or directory" in missing.stderr
    nofile = corral("create", "x", "-f", str(tmp_path / "Nope"), env=env)
    assert nofile.returncode == 1 and "cannot read the Modelfile" in nofile.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + nofile.stderr


def _post(server: ServerProcess, path: str, body: dict[str, object]) -> httpx.Response:
    response = httpx.post(server.url + path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def test_create_uploads_a_local_safetensors_folder(server: ServerProcess, tmp_path: Path) -> None:
    write_tiny_bert(tmp_path / "bert")
    (tmp_path / "Modelfile").write_text("FROM ./bert\n")
    created = corral("create", "clibert", "-f", str(tmp_path / "Modelfile"), env=server.env())
    assert created.returncode == 0, created.stderr
    assert "transferring model data" in created.stderr
    assert "converting model" in created.stderr and "success" in created.stderr
    body = {"model": "clibert", "input": "the cat sat on the mat", "keep_alive": 0}
    vectors = _post(server, "/api/embed", body).json()["embeddings"]
    assert len(vectors) == 1 and len(vectors[0]) == 32


def test_create_quantizes_a_local_f16_gguf(server: ServerProcess, tmp_path: Path) -> None:
    write_tiny_llama(tmp_path / "ckpt")
    convert_checkpoint(tmp_path / "ckpt", tmp_path / "tiny-f16.gguf", file_type="f16")
    (tmp_path / "Modelfile").write_text("FROM ./tiny-f16.gguf\nPARAMETER temperature 0\n")
    modelfile = str(tmp_path / "Modelfile")
    created = corral("create", "cliq8", "-f", modelfile, "-q", "q8_0", env=server.env())
    assert created.returncode == 0, created.stderr
    assert "quantizing F16 model to Q8_0" in created.stderr
    shown = _post(server, "/api/show", {"model": "cliq8"}).json()
    assert shown["details"]["quantization_level"] == "Q8_0"
    body = {
        "model": "cliq8",
        "prompt": "hello world",
        "raw": True,
        "stream": False,
        "keep_alive": 0,
        "options": {"num_predict": 4},
    }
    answer = _post(server, "/api/generate", body).json()
    assert answer["done"] is True and answer["eval_count"] >= 1
