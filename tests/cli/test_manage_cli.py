"""``corral create``, ``push`` and ``pull`` as a user runs them, against a real server and a
real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import corral
from tests.conftest import ServerProcess
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
