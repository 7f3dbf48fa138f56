"""Pull and push against a real OCI registry (Debian's docker-registry) and a hostile one."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.store import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_SYSTEM,
    Layer,
    Manifest,
    ModelStore,
    Name,
)
from tests.conftest import ServerProcess
from tests.registry.hostile import Behaviour, hostile_registry
from tests.registry.registry_process import Registry, running_registry
from tests.registry.tiny import write_tiny_gguf

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _post(server: ServerProcess, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=300)


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def _upload(server: ServerProcess, path: Path) -> str:
    data = path.read_bytes()
    digest = _digest(data)
    response = httpx.post(f"{server.url}/api/blobs/{digest}", content=data, timeout=120)
    assert response.status_code in (200, 201)
    return digest


def _create(server: ServerProcess, name: str, digest: str, **fields: Any) -> None:
    body = {"model": name, "files": {"m.gguf": digest}, **fields}
    response = _post(server, "/api/create", body)
    assert response.status_code == 200, response.text
    assert _events(response)[-1] == {"status": "success"}


def _manifest(server: ServerProcess, name: str) -> tuple[bytes, Manifest]:
    store = ModelStore(server.models_dir)
    data = store.read_manifest_bytes(Name.parse(name))
    return data, Manifest.from_json(data)


def _store_leftovers(server: ServerProcess) -> list[str]:
    return sorted(p.name for p in (server.models_dir / "blobs").iterdir() if "-partial" in p.name)


def test_push_delete_pull_round_trip(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    name = f"{registry.host}/test/tiny:1"
    digest = _upload(server, write_tiny_gguf(tmp_path / "t.gguf", seed=1))
    _create(server, name, digest, system="hello", parameters={"top_k": 3})
    before_bytes, before = _manifest(server, name)

    pushed = _post(server, "/api/push", {"model": name, "insecure": True})
    assert pushed.status_code == 200, pushed.text
    statuses = [e["status"] for e in _events(pushed)]
    assert statuses[0] == "retrieving manifest"
    assert f"pushing {digest[7:19]}" in statuses
    assert statuses[-2:] == ["pushing manifest", "success"]

    again = _events(_post(server, "/api/push", {"model": name, "insecure": True}))
    assert again[-1] == {"status": "success"}  # every blob already there: HEAD says so

    assert httpx.request("DELETE", server.url + "/api/delete", json={"model": name}).status_code
    assert not (server.models_dir / "blobs" / f"sha256-{digest[7:]}").exists()

    pulled = _post(server, "/api/pull", {"model": name, "insecure": True})
    assert pulled.status_code == 200, pulled.text
    events = _events(pulled)
    assert events[0] == {"status": "pulling manifest"}
    assert [e["status"] for e in events[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    model_events = [e for e in events if e.get("digest") == digest]
    assert model_events[-1]["completed"] == model_events[-1]["total"] == before.layers[0].size
    after_bytes, after = _manifest(server, name)
    assert after_bytes == before_bytes
    assert after.digests == before.digests
    for layer_digest in after.digests:
        path = server.models_dir / "blobs" / f"sha256-{layer_digest[7:]}"
        assert _digest(path.read_bytes()) == layer_digest
    shown = _post(server, "/api/show", {"model": name}).json()
    assert shown["system"] == "hello"
    assert _store_leftovers(server) == []


def test_pull_resumes_after_an_interrupted_connection(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    name = f"{registry.host}/test/big:1"
    gguf = write_tiny_gguf(tmp_path / "big.gguf", seed=2, padding_bytes=40 << 20)
    digest = _upload(server, gguf)
    _create(server, name, digest)
    assert _events(_post(server, "/api/push", {"model": name, "insecure": True}))[-1] == {
        "status": "success"
    }
    manifest = httpx.get(
        f"{registry.url}/v2/test/big/manifests/1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    ).content
    assert httpx.request("DELETE", server.url + "/api/delete", json={"model": name})
    behaviour = Behaviour(
        manifests={"test/big:1": manifest}, upstream=registry.url, cut_after=1 << 20
    )
    with hostile_registry(behaviour) as proxy:
        proxied = f"{proxy}/test/big:1"
        failed = _events(_post(server, "/api/pull", {"model": proxied, "insecure": True}))
        assert "max retries exceeded" in failed[-1]["error"]
        partial = server.models_dir / "blobs" / f"sha256-{digest[7:]}-partial"
        assert partial.is_file()
        assert (partial.parent / (partial.name + ".json")).is_file()
        assert not (server.models_dir / "manifests" / proxy.replace(":", ":")).exists()

        behaviour.cut_after = None
        resumed = _events(_post(server, "/api/pull", {"model": proxied, "insecure": True}))
    assert resumed[-1] == {"status": "success"}, resumed[-1]
    first = next(e for e in resumed if e.get("digest") == digest)
    assert 0 < first["completed"] < first["total"]
    store = ModelStore(server.models_dir)
    assert _digest(store.blob_path(digest).read_bytes()) == digest
    assert _store_leftovers(server) == []


def _hostile_model(model_bytes: bytes, served: bytes | None = None) -> Behaviour:
    config = b'{"model_format":"gguf"}'
    layer = Layer(MEDIA_TYPE_MODEL, _digest(model_bytes), len(model_bytes))
    system = b"sys"
    layers = (layer, Layer(MEDIA_TYPE_SYSTEM, _digest(system), len(system)))
    manifest = Manifest(Layer(MEDIA_TYPE_CONFIG, _digest(config), len(config)), layers)
    return Behaviour(
        manifests={"evil/m:1": manifest.to_json()},
        blobs={
            layer.digest: served if served is not None else model_bytes,
            _digest(system): system,
            _digest(config): config,
        },
    )


def _pull(server: ServerProcess, host: str) -> list[dict[str, Any]]:
    return _events(_post(server, "/api/pull", {"model": f"{host}/evil/m:1", "insecure": True}))


def test_corrupted_blob_is_refused_and_deleted(server: ServerProcess) -> None:
    good = b"A" * 100_000
    behaviour = _hostile_model(good, served=b"B" * 100_000)
    with hostile_registry(behaviour) as host:
        events = _pull(server, host)
    assert events[-1]["error"].startswith("digest mismatch, file must be downloaded again")
    bad = f"sha256-{_digest(good)[7:]}"
    assert not (server.models_dir / "blobs" / bad).exists()
    # the bad blob's partial is gone; downloads cut short beside it stay, to be resumed
    assert not [name for name in _store_leftovers(server) if name.startswith(bad)]
    assert not list((server.models_dir / "manifests").glob(f"{host}*"))


def test_extra_bytes_are_cut_off(server: ServerProcess) -> None:
    good = bytes(range(256)) * 400
    behaviour = _hostile_model(good)
    behaviour.extra_bytes = b"X" * 50_000
    with hostile_registry(behaviour) as host:
        events = _pull(server, host)
    assert events[-1] == {"status": "success"}
    path = server.models_dir / "blobs" / f"sha256-{_digest(good)[7:]}"
    assert path.read_bytes() == good


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (b"{not json", "invalid manifest: not valid JSON"),
        (b"[]", "invalid manifest: not a JSON object"),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:../../etc/passwd",'
            b'"size":1},"layers":[]}',
            "invalid manifest: config digest is malformed",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:'
            + b"a" * 64
            + b'","size":-5},"layers":[]}',
            "invalid manifest: config size is out of range",
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:'
            + b"a" * 64
            + b'","size":562949953421311},"layers":[]}',
            "not enough disk space to pull",
        ),
    ],
)
def test_bad_manifests_fail_cleanly(server: ServerProcess, manifest: bytes, error: str) -> None:
    with hostile_registry(Behaviour(manifests={"evil/m:1": manifest})) as host:
        events = _pull(server, host)
    assert error in events[-1]["error"]
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_unknown_tag(server: ServerProcess, registry: Registry) -> None:
    response = _post(server, "/api/pull", {"model": f"{registry.host}/no/such:1", "insecure": True})
    assert _events(response)[-1] == {"error": "pull model manifest: file does not exist"}
    plain = _post(
        server,
        "/api/pull",
        {"model": f"{registry.host}/no/such:1", "insecure": True, "stream": False},
    )
    assert plain.status_code == 404


def test_bearer_token_challenge_is_followed(server: ServerProcess) -> None:
    behaviour = _hostile_model(b"weights" * 1000)
    behaviour.token = "s3cret"
    with hostile_registry(behaviour) as host:
        events = _pull(server, host)
    assert events[-1] == {"status": "success"}
    assert any(key.startswith("GET /token") for key in behaviour.requests)


def test_concurrent_pulls_share_one_download(server: ServerProcess) -> None:
    weights = b"shared" * 200_000
    behaviour = _hostile_model(weights)
    behaviour.delay_s = 0.5
    results: list[list[dict[str, Any]]] = []
    with hostile_registry(behaviour) as host:
        threads = [threading.Thread(target=lambda: results.append(_pull(server, host)))]
        threads.append(threading.Thread(target=lambda: results.append(_pull(server, host))))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert [r[-1] for r in results] == [{"status": "success"}] * 2
    blob_gets = [
        k for k in behaviour.requests if k.startswith(f"GET /v2/evil/m/blobs/{_digest(weights)}")
    ]
    assert sum(behaviour.requests[k] for k in blob_gets) == 1


def test_http_name_needs_insecure(server: ServerProcess, registry: Registry) -> None:
    response = _post(server, "/api/pull", {"model": f"http://{registry.host}/test/tiny:1"})
    assert response.status_code == 400
    assert response.json() == {"error": "insecure protocol http"}


def test_push_unknown_model(server: ServerProcess) -> None:
    response = _post(server, "/api/push", {"model": "nothing-here"})
    assert response.status_code == 404


def _push(server: ServerProcess, name: str) -> None:
    pushed = _post(server, "/api/push", {"model": name, "insecure": True})
    assert pushed.status_code == 200, pushed.text
    assert _events(pushed)[-1] == {"status": "success"}, pushed.text


def _delete(server: ServerProcess, name: str) -> None:
    response = httpx.request("DELETE", server.url + "/api/delete", json={"model": name})
    assert response.status_code == 200, response.text


def test_create_from_a_registry_name_pulls_the_base(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    base = f"{registry.host}/test/base:1"
    digest = _upload(server, write_tiny_gguf(tmp_path / "base.gguf", seed=5))
    _create(server, base, digest, system="from the registry", parameters={"top_k": 9})
    _push(server, base)
    _delete(server, base)
    assert not (server.models_dir / "blobs" / f"sha256-{digest[7:]}").exists()

    modelfile = f"FROM {base}\nPARAMETER temperature 0.2\n"
    body = {"model": "child-of-remote", "modelfile": modelfile, "insecure": True}
    response = _post(server, "/api/create", body)
    assert response.status_code == 200, response.text
    statuses = [e.get("status", e.get("error")) for e in _events(response)]
    assert statuses[0] == "pulling manifest"
    assert f"pulling {digest[7:19]}" in statuses
    assert statuses.index("verifying sha256 digest") < statuses.index("parsing GGUF")
    assert f"using existing layer {digest}" in statuses
    assert statuses.count("success") == 1 and statuses[-1] == "success"
    shown = _post(server, "/api/show", {"model": "child-of-remote"}).json()
    assert shown["system"] == "from the registry"
    assert "top_k" in shown["parameters"] and "temperature" in shown["parameters"]
    tags = {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}
    assert {base, "child-of-remote:latest"} <= tags


def test_create_from_a_registry_name_that_does_not_exist(
    server: ServerProcess, registry: Registry
) -> None:
    body = {"model": "orphan", "from": f"{registry.host}/no/such:1", "insecure": True}
    streamed = _events(_post(server, "/api/create", body))
    assert streamed[0] == {"status": "pulling manifest"}
    assert streamed[-1] == {"error": "pull model manifest: file does not exist"}
    plain = _post(server, "/api/create", {**body, "stream": False})
    assert plain.status_code == 404
    assert plain.json() == {"error": "pull model manifest: file does not exist"}
    tags = {m["name"] for m in httpx.get(server.url + "/api/tags").json()["models"]}
    assert "orphan:latest" not in tags


def _wait_for(condition: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_delete_during_a_pull_spares_the_blobs_it_shares(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    digest = _upload(server, write_tiny_gguf(tmp_path / "shared.gguf", seed=6))
    a, b = f"{registry.host}/race/a:1", f"{registry.host}/race/b:1"
    _create(server, a, digest, system="only in a")
    _create(server, b, digest, license="only in b")
    _push(server, a)
    _push(server, b)
    b_manifest, b_parsed = _manifest(server, b)
    system_a = next(d for d in _manifest(server, a)[1].digests if d not in b_parsed.digests)
    _delete(server, a)
    _delete(server, b)
    assert _events(_post(server, "/api/pull", {"model": a, "insecure": True}))[-1] == {
        "status": "success"
    }
    blobs = server.models_dir / "blobs"
    gate = threading.Event()
    behaviour = Behaviour(manifests={"race/b:1": b_manifest}, upstream=registry.url, gate=gate)
    results: list[list[dict[str, Any]]] = []
    with hostile_registry(behaviour) as proxy:
        body = {"model": f"{proxy}/race/b:1", "insecure": True}
        thread = threading.Thread(
            target=lambda: results.append(_events(_post(server, "/api/pull", body)))
        )
        thread.start()
        try:
            # B's pull holds its manifest and waits for a blob it lacks: the window is open
            _wait_for(lambda: behaviour.ranges, "the pull of b to ask for a blob")
            _delete(server, a)
            assert (blobs / f"sha256-{digest[7:]}").is_file()  # pinned by the pull of b
            assert not (blobs / f"sha256-{system_a[7:]}").exists()  # a's own: gone
        finally:
            gate.set()
            thread.join(timeout=60)
    assert results and results[0][-1] == {"status": "success"}, results
    store = ModelStore(server.models_dir)
    pulled = store.read_manifest(Name.parse(f"{proxy}/race/b:1"))
    assert all(store.has_blob(d) for d in pulled.digests)
    _delete(server, f"{proxy}/race/b:1")  # the pins are gone with the pull: blobs go too
    assert not (blobs / f"sha256-{digest[7:]}").exists()


def test_a_token_realm_on_another_host_is_refused(server: ServerProcess) -> None:
    victim = Behaviour()
    with hostile_registry(victim) as victim_host:
        behaviour = _hostile_model(b"weights" * 1000)
        behaviour.token = "s3cret"
        behaviour.realm = f"http://{victim_host}/token"
        with hostile_registry(behaviour) as host:
            events = _pull(server, host)
    assert events[-1] == {
        "error": f'realm host "{victim_host}" does not match original host "{host}"'
    }
    assert not victim.requests  # the server never went there
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_push_follows_a_token_challenge(
    server: ServerProcess, registry: Registry, tmp_path: Path
) -> None:
    behaviour = Behaviour(upstream=registry.url, token="push-token")
    with hostile_registry(behaviour) as proxy:
        name = f"{proxy}/tok/m:1"
        digest = _upload(server, write_tiny_gguf(tmp_path / "tok.gguf", seed=8))
        _create(server, name, digest, system="behind a token")
        _push(server, name)
    assert any("pull%2Cpush" in query for query in behaviour.token_queries)
    assert any(key.startswith(("POST", "PATCH", "PUT")) for key in behaviour.requests)
    local, _ = _manifest(server, name)
    remote = httpx.get(
        f"{registry.url}/v2/tok/m/manifests/1",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    assert remote.status_code == 200
    assert remote.content == local
