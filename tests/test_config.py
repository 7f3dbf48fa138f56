"""Settings from the environment, Ollama's durations in variables and OLLAMA_HOST rules."""

from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from corral.config import FOREVER, VARIABLES, Settings, parse_host
from corral.config import HostPort as Host

# ---- parse_host ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Host("http", "127.0.0.1", 11434)),
        ("", Host("http", "127.0.0.1", 11434)),
        ("   ", Host("http", "127.0.0.1", 11434)),
        ("0.0.0.0", Host("http", "0.0.0.0", 11434)),
        ("0.0.0.0:1234", Host("http", "0.0.0.0", 1234)),
        (" 1.2.3.4 ", Host("http", "1.2.3.4", 11434)),
        ("example.com", Host("http", "example.com", 11434)),
        ("example.com:8080", Host("http", "example.com", 8080)),
        ("http://example.com", Host("http", "example.com", 80)),
        ("https://x", Host("https", "x", 443)),
        ("https://x:8443", Host("https", "x", 8443)),
        ("http://1.2.3.4:5/some/path", Host("http", "1.2.3.4", 5)),
        ("[::1]:5000", Host("http", "::1", 5000)),
        ("[::1]", Host("http", "::1", 11434)),
        ("::1", Host("http", "::1", 11434)),
        ("::", Host("http", "::", 11434)),
        ("https://[::1]", Host("https", "::1", 443)),
        ('"0.0.0.0:1234"', Host("http", "0.0.0.0", 1234)),
        ("'localhost:5'", Host("http", "localhost", 5)),
        (":0", Host("http", "127.0.0.1", 0)),
    ],
)
def test_host(raw: str | None, expected: Host) -> None:
    assert parse_host(raw) == expected


def test_host_with_only_a_port_keeps_the_port() -> None:
    host = parse_host(":11434")
    assert host.port == 11434
    assert host.scheme == "http"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("example.com:99999", Host("http", "example.com", 11434)),
        ("x:abc", Host("http", "x", 11434)),
        ("http://example.com:99999", Host("http", "example.com", 80)),
        ("https://x:-1", Host("https", "x", 443)),
    ],
)
def test_bad_port_warns_and_falls_back(
    raw: str, expected: Host, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.config"):
        assert parse_host(raw) == expected
    assert "invalid port" in caplog.text


def test_host_url_and_loopback() -> None:
    assert parse_host("[::1]:5000").url == "http://[::1]:5000"
    assert parse_host("https://x").url == "https://x:443"
    assert parse_host(None).is_loopback
    assert parse_host("localhost").is_loopback
    assert parse_host("127.0.0.2").is_loopback
    assert not parse_host("0.0.0.0").is_loopback


# ---- Settings.from_env ---------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.host == Host("http", "127.0.0.1", 11434)
    assert settings.models_dir == Path.home() / ".ollama" / "models"
    assert settings.keep_alive_seconds == 300.0
    assert settings.num_parallel == 0
    assert settings.max_loaded_models == 0
    assert settings.max_queue == 512
    assert settings.origins == ()
    assert settings.debug == 0
    assert settings.load_timeout_seconds == 300.0
    assert settings.kv_cache_type == "f16"
    assert settings.context_length == 0  # by the GPUs' memory, as newest Ollama
    assert settings.flash_attention is None  # auto: llama.cpp decides per device


def test_empty_values_are_defaults() -> None:
    env = {spec.name: "" for spec in VARIABLES}
    assert Settings.from_env(env) == Settings()


#: one non-default value per variable, and what it becomes
EACH_VARIABLE: list[tuple[str, str, str, Any]] = [
    ("OLLAMA_HOST", "0.0.0.0:8080", "host", Host("http", "0.0.0.0", 8080)),
    ("OLLAMA_MODELS", "/srv/models", "models_dir", Path("/srv/models")),
    ("OLLAMA_KEEP_ALIVE", "10m", "keep_alive_seconds", 600.0),
    ("OLLAMA_NUM_PARALLEL", "4", "num_parallel", 4),
    ("OLLAMA_MAX_LOADED_MODELS", "2", "max_loaded_models", 2),
    ("OLLAMA_MAX_QUEUE", "10", "max_queue", 10),
    ("OLLAMA_ORIGINS", "http://a, http://b ,,", "origins", ("http://a", "http://b")),
    ("OLLAMA_DEBUG", "2", "debug", 2),
    ("OLLAMA_DEBUG_LOG_REQUESTS", "1", "debug_log_requests", True),
    ("OLLAMA_FLASH_ATTENTION", "1", "flash_attention", True),
    ("OLLAMA_NOHISTORY", "true", "no_history", True),
    ("OLLAMA_NOPRUNE", "yes", "no_prune", True),
    ("OLLAMA_SCHED_SPREAD", "on", "sched_spread", True),
    ("OLLAMA_LLM_LIBRARY", " cuda_v12 ", "llm_library", "cuda_v12"),
    ("OLLAMA_GPU_OVERHEAD", "1073741824", "gpu_overhead_bytes", 1 << 30),
    ("OLLAMA_LOAD_TIMEOUT", "10m", "load_timeout_seconds", 600.0),
    ("OLLAMA_KV_CACHE_TYPE", "Q8_0", "kv_cache_type", "q8_0"),
    ("OLLAMA_CONTEXT_LENGTH", "8192", "context_length", 8192),
    ("OLLAMA_NUM_THREAD", "8", "num_thread", 8),
    ("CORRAL_API_KEY", " k3y ", "api_key", "k3y"),
    ("CORRAL_TLS_CERT", "/etc/corral/cert.pem", "tls_cert", Path("/etc/corral/cert.pem")),
    ("CORRAL_TLS_KEY", "/etc/corral/key.pem", "tls_key", Path("/etc/corral/key.pem")),
    ("CORRAL_SHUTDOWN_TIMEOUT", "500ms", "shutdown_timeout_seconds", 0.5),
    ("CORRAL_RUNNER_STALL_TIMEOUT", "1m", "runner_stall_seconds", 60.0),
    ("OLLAMA_RPC_SERVERS", " 10.0.0.2:50052, w3 ,", "rpc_servers", ("10.0.0.2:50052", "w3")),
    ("CORRAL_RPC_ONLY", "1", "rpc_only", True),
    ("CORRAL_MAX_REPLICAS", "2", "max_replicas", 2),
]


def test_each_variable_is_tested() -> None:
    assert [(name, attr) for name, _, attr, _ in EACH_VARIABLE] == [
        (spec.name, spec.attribute) for spec in VARIABLES
    ]


@pytest.mark.parametrize(("name", "raw", "attribute", "expected"), EACH_VARIABLE)
def test_each_variable(name: str, raw: str, attribute: str, expected: Any) -> None:
    settings = Settings.from_env({name: raw})
    assert getattr(settings, attribute) == expected
    assert getattr(Settings(), attribute) != expected
    others = {f.name for f in fields(Settings)} - {attribute}
    assert all(getattr(settings, other) == getattr(Settings(), other) for other in others)


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "expected"),
    [
        ("OLLAMA_NUM_PARALLEL", '"4"', "num_parallel", 4),
        ("OLLAMA_KEEP_ALIVE", "'5m'", "keep_alive_seconds", 300.0),
        ("OLLAMA_KEEP_ALIVE", "-1", "keep_alive_seconds", FOREVER),
        ("OLLAMA_KEEP_ALIVE", "-1s", "keep_alive_seconds", FOREVER),
        ("OLLAMA_KEEP_ALIVE", "0", "keep_alive_seconds", 0.0),
        ("OLLAMA_KEEP_ALIVE", "3600", "keep_alive_seconds", 3600.0),  # lenient, as Ollama
        ("OLLAMA_KEEP_ALIVE", "+10", "keep_alive_seconds", 10.0),
        ("OLLAMA_LOAD_TIMEOUT", "50ms", "load_timeout_seconds", 0.05),
        ("OLLAMA_LOAD_TIMEOUT", "-1", "load_timeout_seconds", FOREVER),
        ("OLLAMA_LOAD_TIMEOUT", "0", "load_timeout_seconds", FOREVER),
        ("OLLAMA_MODELS", "~/models", "models_dir", Path.home() / "models"),
        ("OLLAMA_DEBUG", "true", "debug", 1),
        ("OLLAMA_DEBUG", "false", "debug", 0),
        ("OLLAMA_DEBUG", "-3", "debug", 0),
        ("OLLAMA_FLASH_ATTENTION", "0", "flash_attention", False),
        ("OLLAMA_FLASH_ATTENTION", "false", "flash_attention", False),
        ("OLLAMA_FLASH_ATTENTION", "maybe", "flash_attention", True),  # as Ollama: non-empty
        ("OLLAMA_FLASH_ATTENTION", "  ", "flash_attention", None),  # empty: auto, as unset
        ("OLLAMA_CONTEXT_LENGTH", "0", "context_length", 0),
    ],
)
def test_variable_forms(name: str, raw: str, attribute: str, expected: Any) -> None:
    assert getattr(Settings.from_env({name: raw}), attribute) == expected


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "default"),
    [
        ("OLLAMA_NUM_PARALLEL", "four", "num_parallel", 0),
        ("OLLAMA_NUM_PARALLEL", "-2", "num_parallel", 0),
        ("OLLAMA_MAX_LOADED_MODELS", "-1", "max_loaded_models", 0),
        ("OLLAMA_MAX_QUEUE", "0", "max_queue", 512),
        ("OLLAMA_MAX_QUEUE", "lots", "max_queue", 512),
        ("OLLAMA_KEEP_ALIVE", "forever", "keep_alive_seconds", 300.0),
        ("OLLAMA_KEEP_ALIVE", "10x", "keep_alive_seconds", 300.0),
        ("OLLAMA_KEEP_ALIVE", "1.5", "keep_alive_seconds", 300.0),  # neither form in Go
        ("OLLAMA_LOAD_TIMEOUT", "soon", "load_timeout_seconds", 300.0),
        ("OLLAMA_GPU_OVERHEAD", "1GB", "gpu_overhead_bytes", 0),
        ("OLLAMA_KV_CACHE_TYPE", "q5_1", "kv_cache_type", "f16"),
        ("OLLAMA_CONTEXT_LENGTH", "big", "context_length", 0),
        ("OLLAMA_NUM_THREAD", "1.5", "num_thread", 0),
    ],
)
def test_bad_value_warns_and_falls_back(
    name: str, raw: str, attribute: str, default: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.config"):
        settings = Settings.from_env({name: raw})
    assert getattr(settings, attribute) == default
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert name in warnings[0].getMessage()


def test_good_values_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    env = {name: raw for name, raw, _, _ in EACH_VARIABLE}
    with caplog.at_level(logging.WARNING, logger="corral.config"):
        Settings.from_env(env)
    assert caplog.records == []


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    assert Settings.from_env().max_queue == 7


# ---- describe, with_changes ------------------------------------------------------------------


def test_variables_cover_every_setting() -> None:
    assert sorted(spec.attribute for spec in VARIABLES) == sorted(f.name for f in fields(Settings))
    assert len({spec.name for spec in VARIABLES}) == len(VARIABLES)
    # Ollama's names, and CORRAL_* for what Ollama has no setting for
    assert all(spec.name.startswith(("OLLAMA_", "CORRAL_")) for spec in VARIABLES)
    assert all(spec.description for spec in VARIABLES)


def test_the_api_key_is_never_shown() -> None:
    settings = Settings.from_env({"CORRAL_API_KEY": "s3cret-k3y"})
    assert settings.describe()["CORRAL_API_KEY"] == "(set)"
    assert "s3cret" not in repr(settings)
    assert Settings().describe()["CORRAL_API_KEY"] == ""


def test_describe_covers_every_variable() -> None:
    settings = Settings.from_env({"OLLAMA_MAX_QUEUE": "9", "OLLAMA_ORIGINS": "http://a"})
    described = settings.describe()
    assert list(described) == [spec.name for spec in VARIABLES]
    assert all(isinstance(value, str) for value in described.values())
    assert described["OLLAMA_MAX_QUEUE"] == "9"
    assert "http://a" in described["OLLAMA_ORIGINS"]
    assert described["OLLAMA_FLASH_ATTENTION"] == "auto"


def test_with_changes_replaces_only_the_named_fields() -> None:
    base = Settings.from_env({"OLLAMA_MAX_QUEUE": "9"})
    changed = base.with_changes(num_parallel=1, keep_alive_seconds=FOREVER)
    assert (changed.num_parallel, changed.keep_alive_seconds, changed.max_queue) == (
        1,
        FOREVER,
        9,
    )
    assert base.num_parallel == 0
    with pytest.raises(TypeError):
        base.with_changes(no_such_setting=1)


@pytest.mark.parametrize("raw", ["34637", " 11434 ", '"8080"'])
def test_a_bare_number_is_refused_naming_the_variable(raw: str) -> None:
    # Ollama reads a bare number as a host name (never a port), so binding it fails with an
    # unrelated "address already in use" or "cannot assign": the error names the variable.
    port = raw.strip().strip('"')
    with pytest.raises(ValueError, match=f"OLLAMA_HOST=.*127.0.0.1:{port}"):
        parse_host(raw)
    with pytest.raises(ValueError, match="OLLAMA_HOST"):
        Settings.from_env({"OLLAMA_HOST": raw})


def test_a_number_with_a_port_or_scheme_is_still_a_host() -> None:
    assert parse_host("34637:1") == Host("http", "34637", 1)
    assert parse_host("http://34637") == Host("http", "34637", 80)
