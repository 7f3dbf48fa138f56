"""Manifest and config JSON: round trips, Ollama's encoding, and strict validation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.errors import InvalidDigestError, StoreError
from corral.store.manifest import (
    MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MODEL,
    MEDIA_TYPE_TEMPLATE,
    Layer,
    Manifest,
    ModelConfig,
    RootFS,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _manifest() -> Manifest:
    return Manifest(
        config=Layer(MEDIA_TYPE_CONFIG, D1, 485),
        layers=(
            Layer(MEDIA_TYPE_MODEL, D2, 1000, from_="/some/path"),
            Layer(MEDIA_TYPE_TEMPLATE, D3, 10),
        ),
    )


def _obj() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_manifest().to_json())
    return result


def test_round_trip_and_encoding() -> None:
    m = _manifest()
    data = m.to_json()
    assert Manifest.from_json(data) == m
    assert data.endswith(b"}\n")
    assert list(json.loads(data)) == ["schemaVersion", "mediaType", "config", "layers"]
    assert data.startswith(
        b'{"schemaVersion":2,"mediaType":"' + MEDIA_TYPE_MANIFEST.encode() + b'","config":'
        b'{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"'
        + D1.encode()
        + b'","size":485},"layers":[{"mediaType":"application/vnd.ollama.image.model"'
    )
    assert b'"from":"/some/path"' in data
    assert b'"from"' not in Manifest(m.config, (Layer(MEDIA_TYPE_MODEL, D2, 1),)).to_json()


def test_go_escaping() -> None:
    m = Manifest(Layer(MEDIA_TYPE_CONFIG, D1, 1), (Layer("a<b>&c", D2, 1),))
    assert b"a\\u003cb\\u003e\\u0026c" in m.to_json()
    assert Manifest.from_json(m.to_json()) == m


def test_helpers() -> None:
    m = _manifest()
    assert m.total_size == 485 + 1000 + 10
    assert m.layers_of(MEDIA_TYPE_MODEL) == (m.layers[0],)
    assert m.layer(MEDIA_TYPE_TEMPLATE) == m.layers[1]
    assert m.layer("nope") is None
    assert m.digests == {D1, D2, D3}
    doubled = Manifest(m.config, (*m.layers, Layer(MEDIA_TYPE_TEMPLATE, D1, 3)))
    assert doubled.layer(MEDIA_TYPE_TEMPLATE) == doubled.layers[-1]


def test_digest_normalised_and_extra_keys_ignored() -> None:
    obj = _obj()
    obj["config"]["digest"] = "sha256-" + "A" * 64
    obj["annotations"] = {"x": 1}
    m = Manifest.from_json(json.dumps(obj).encode())
    assert m.config.digest == "sha256:" + "a" * 64


def test_layer_construction_validates() -> None:
    with pytest.raises(InvalidDigestError):
        Layer(MEDIA_TYPE_MODEL, "sha256:xyz", 1)
    with pytest.raises(ValueError, match="size"):
        Layer(MEDIA_TYPE_MODEL, D1, -1)


def _mutations() -> list[tuple[str, Any]]:
    def set_(path: list[Any], value: Any) -> Any:
        def apply(obj: dict[str, Any]) -> Any:
            target: Any = obj
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            return obj

        return apply

    def delete(key: str) -> Any:
        def apply(obj: dict[str, Any]) -> Any:
            del obj[key]
            return obj

        return apply

    return [
        ("list instead of object", lambda obj: [obj]),
        ("schema 1", set_(["schemaVersion"], 1)),
        ("schema as string", set_(["schemaVersion"], "2")),
        ("schema as bool", set_(["schemaVersion"], True)),
        ("no schema", delete("schemaVersion")),
        ("media type not string", set_(["mediaType"], 5)),
        ("no config", delete("config")),
        ("config not object", set_(["config"], "x")),
        ("layers not list", set_(["layers"], {})),
        ("no layers", delete("layers")),
        ("layer not object", set_(["layers", 0], 3)),
        ("bad digest", set_(["layers", 0, "digest"], "sha256:1234")),
        ("path digest", set_(["layers", 0, "digest"], "../../etc/passwd")),
        ("digest not string", set_(["config", "digest"], None)),
        ("negative size", set_(["layers", 0, "size"], -1)),
        ("huge size", set_(["layers", 0, "size"], 2**50)),
        ("float size", set_(["layers", 0, "size"], 1.5)),
        ("bool size", set_(["config", "size"], True)),
        ("missing size", set_(["layers", 0, "size"], None)),
        ("layer media type", set_(["layers", 1, "mediaType"], None)),
        ("from not string", set_(["layers", 0, "from"], 1)),
        (
            "too many layers",
            set_(["layers"], [{"mediaType": MEDIA_TYPE_MODEL, "digest": D2, "size": 1}] * 1001),
        ),
    ]


@pytest.mark.parametrize(("why", "mutate"), _mutations(), ids=[m[0] for m in _mutations()])
def test_invalid_structure(why: str, mutate: Any) -> None:
    data = json.dumps(mutate(_obj())).encode()
    with pytest.raises(StoreError, match=r"^invalid manifest: "):
        Manifest.from_json(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"not json", b"{", b"\xff\xfe\x00", b"null", b"[]", b"2", b"NaN", b"[" * 100_000],
)
def test_invalid_bytes(data: bytes) -> None:
    with pytest.raises(StoreError, match=r"^invalid manifest: "):
        Manifest.from_json(data)


def test_too_large() -> None:
    with pytest.raises(StoreError, match="too large"):
        Manifest.from_json(b" " * (5 << 20))


def test_exactly_max_layers_ok() -> None:
    obj = _obj()
    obj["layers"] = [{"mediaType": MEDIA_TYPE_MODEL, "digest": D2, "size": 1}] * 1000
    assert len(Manifest.from_json(json.dumps(obj).encode()).layers) == 1000


def test_model_config_round_trip() -> None:
    config = ModelConfig(
        model_family="llama",
        model_families=("llama",),
        model_type="135M",
        file_type="Q4_1",
        rootfs=RootFS(diff_ids=(D2,)),
    )
    data = config.to_json()
    assert ModelConfig.from_json(data) == config
    assert list(json.loads(data)) == [
        "model_format",
        "model_family",
        "model_families",
        "model_type",
        "file_type",
        "architecture",
        "os",
        "rootfs",
    ]
    assert json.loads(data)["rootfs"] == {"type": "layers", "diff_ids": [D2]}


def test_model_config_lenient() -> None:
    assert ModelConfig.from_json(b"{}") == ModelConfig()
    odd = ModelConfig.from_json(b'{"model_families": null, "model_type": 5, "rootfs": []}')
    assert odd == ModelConfig()
    for bad in (b"nope", b"[]"):
        with pytest.raises(StoreError):
            ModelConfig.from_json(bad)
