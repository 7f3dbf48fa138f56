"""Every environment variable corral reads, read once into a frozen ``Settings``.

Ollama's names and defaults (``envconfig/config.go``), so an existing setup keeps working;
what Ollama has no setting for is ``CORRAL_*`` (the API key, TLS, the shutdown timeout).
A bad value never stops the server: it logs a warning and falls back to the default, as
Ollama does. ``Settings.describe()`` feeds ``corral serve --help`` and the startup log.

Durations follow Ollama's rules: in a variable a whole number is seconds, otherwise a Go
duration string (``"5m"``, ``"1h30m"``, ``"-1s"``); any negative duration means "forever".
``parse_go_duration`` is Go's grammar, shared with the API's stricter ``keep_alive``
(``corral.api.types.parse_duration``, which imports it: ``api -> config``, never back).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "FOREVER",
    "VARIABLES",
    "Settings",
    "parse_go_duration",
    "parse_host",
]

logger = logging.getLogger(__name__)

#: keep-alive meaning "never unload" (seconds); Ollama uses MaxInt64 nanoseconds.
FOREVER = math.inf

DEFAULT_PORT = 11434

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
#: Go's time.Duration is int64 nanoseconds; a longer duration is an error there
_MAX_DURATION_SECONDS = (2**63 - 1) / 1e9


def parse_go_duration(text: str) -> float:
    """Signed seconds from a Go duration string, with the errors of Go's
    ``time.ParseDuration``: a sequence of decimal numbers each with a unit (``"1h30m"``,
    ``"-1.5s"``, ``"300ms"``); ``"0"`` alone needs no unit; no spaces anywhere."""
    body = text
    sign = 1.0
    if body[:1] in ("+", "-"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"time: invalid duration {_go_quote(text)}")
    total = 0.0
    while body:
        number, body = _duration_number(body, text)
        unit, body = _duration_unit(body, text)
        total += number * _UNIT_SECONDS[unit]
        if total > _MAX_DURATION_SECONDS:
            raise ValueError(f"time: invalid duration {_go_quote(text)}")
    return sign * total


def _duration_number(body: str, text: str) -> tuple[float, str]:
    """The leading ``123``, ``1.5``, ``.5`` or ``5.`` of ``body``, and what follows it."""
    match = re.match(r"([0-9]*)(?:\.([0-9]*))?", body)
    assert match is not None  # the pattern matches the empty string
    whole, fraction = match.group(1), match.group(2)
    if not whole and not fraction:
        raise ValueError(f"time: invalid duration {_go_quote(text)}")
    return float(f"{whole or '0'}.{fraction or '0'}"), body[match.end() :]


def _duration_unit(body: str, text: str) -> tuple[str, str]:
    """The unit at the start of ``body`` (everything up to the next digit or dot)."""
    match = re.match(r"[^0-9.]*", body)
    assert match is not None
    unit = match.group(0)
    if not unit:
        raise ValueError(f"time: missing unit in duration {_go_quote(text)}")
    if unit not in _UNIT_SECONDS:
        raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
    return unit, body[match.end() :]


def _go_quote(text: str) -> str:
    """A string as Go's ``%q`` writes it, for the usual cases (quotes and backslashes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class HostPort:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        return self.host in {"127.0.0.1", "localhost", "::1"} or self.host.startswith("127.")


def parse_host(raw: str | None) -> HostPort:
    """``OLLAMA_HOST`` → scheme, host, port with Ollama's defaults and fallbacks."""
    text = (raw or "").strip().strip("\"'").strip()
    if not text:
        return HostPort("http", "127.0.0.1", DEFAULT_PORT)
    had_scheme = "://" in text
    if not had_scheme:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme or "http"
    default_port = (
        {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if had_scheme else DEFAULT_PORT
    )
    host = parts.hostname or "127.0.0.1"
    if not had_scheme and text[len("http://") :].isdigit():
        # Ollama too reads a bare number as a host name, not a port, and then fails to
        # bind it with an unrelated error: name the variable and the fix instead.
        raise ValueError(
            f"OLLAMA_HOST={raw!r}: a bare number is a host name, not a port;"
            f" to listen on port {text[len('http://') :]} write"
            f" OLLAMA_HOST=127.0.0.1:{text[len('http://') :]}"
        )
    bare = parts.netloc.strip("[]")
    if ":" in bare and _is_ip_address(bare):  # a bare IPv6 address, no port (like Go)
        return HostPort(scheme, str(ipaddress.ip_address(bare)), default_port)
    try:
        port = parts.port if parts.port is not None else default_port
    except ValueError:
        logger.warning("invalid port in OLLAMA_HOST=%r, using %d", raw, default_port)
        port = default_port
    return HostPort(scheme, host, port)


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _default_num_parallel() -> int:
    return 1


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed view of the environment; build once with ``Settings.from_env()``."""

    host: HostPort = field(default_factory=lambda: parse_host(None))
    models_dir: Path = field(default_factory=lambda: Path.home() / ".ollama" / "models")
    keep_alive_seconds: float = 300.0
    num_parallel: int = 0  # 0 = automatic (4 where memory allows, else 1)
    max_loaded_models: int = 0  # 0 = automatic (3 per GPU, 3 on CPU)
    max_queue: int = 512
    origins: tuple[str, ...] = ()
    debug: int = 0
    #: write each inference request's body and a curl line replaying it to a temp directory
    debug_log_requests: bool = False
    #: None: automatic (llama.cpp turns it on where the device supports it), as Ollama
    flash_attention: bool | None = None
    no_history: bool = False
    no_prune: bool = False
    sched_spread: bool = False
    llm_library: str = ""
    gpu_overhead_bytes: int = 0
    load_timeout_seconds: float = 300.0
    kv_cache_type: str = "f16"
    #: the default num_ctx; 0: by the devices' memory (``decisions.tiered_context``)
    context_length: int = 0
    num_thread: int = 0  # 0 = runner decides (physical cores)
    api_key: str = field(default="", repr=False)  # "" = no key asked (never logged)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    shutdown_timeout_seconds: float = 2.0
    #: a runner with work that sends nothing for this long and does not answer a health
    #: check is killed (a frozen or stopped process); 0 turns the watchdog off
    runner_stall_seconds: float = 30.0
    #: RPC workers (host:port) a model may be spread over; from the operator only, never a
    #: client (a worker port is as good as a shell on its host); checked by corral.rpc
    rpc_servers: tuple[str, ...] = ()
    #: place every model on the workers, even one that fits this host (trying workers out)
    rpc_only: bool = False
    #: runners of one model at most: another loads while every slot is busy and requests
    #: wait, where memory allows (1: one runner per model)
    max_replicas: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        reader = _Reader(source)
        models = source.get("OLLAMA_MODELS", "").strip()
        return cls(
            host=parse_host(source.get("OLLAMA_HOST")),
            models_dir=Path(models).expanduser() if models else Path.home() / ".ollama" / "models",
            keep_alive_seconds=reader.duration("OLLAMA_KEEP_ALIVE", 300.0),
            num_parallel=reader.integer("OLLAMA_NUM_PARALLEL", 0, minimum=0),
            max_loaded_models=reader.integer("OLLAMA_MAX_LOADED_MODELS", 0, minimum=0),
            max_queue=reader.integer("OLLAMA_MAX_QUEUE", 512, minimum=1),
            origins=tuple(
                o.strip() for o in source.get("OLLAMA_ORIGINS", "").split(",") if o.strip()
            ),
            debug=reader.debug_level("OLLAMA_DEBUG"),
            debug_log_requests=reader.boolean("OLLAMA_DEBUG_LOG_REQUESTS"),
            flash_attention=reader.tristate("OLLAMA_FLASH_ATTENTION"),
            no_history=reader.boolean("OLLAMA_NOHISTORY"),
            no_prune=reader.boolean("OLLAMA_NOPRUNE"),
            sched_spread=reader.boolean("OLLAMA_SCHED_SPREAD"),
            llm_library=source.get("OLLAMA_LLM_LIBRARY", "").strip(),
            gpu_overhead_bytes=reader.integer("OLLAMA_GPU_OVERHEAD", 0, minimum=0),
            load_timeout_seconds=reader.duration(
                "OLLAMA_LOAD_TIMEOUT", 300.0, zero_is_forever=True
            ),
            kv_cache_type=reader.choice("OLLAMA_KV_CACHE_TYPE", "f16", ("f16", "q8_0", "q4_0")),
            context_length=reader.integer("OLLAMA_CONTEXT_LENGTH", 0, minimum=0),
            num_thread=reader.integer("OLLAMA_NUM_THREAD", 0, minimum=0),
            api_key=source.get("CORRAL_API_KEY", "").strip(),
            tls_cert=reader.path("CORRAL_TLS_CERT"),
            tls_key=reader.path("CORRAL_TLS_KEY"),
            shutdown_timeout_seconds=reader.duration("CORRAL_SHUTDOWN_TIMEOUT", 2.0),
            runner_stall_seconds=reader.duration("CORRAL_RUNNER_STALL_TIMEOUT", 30.0),
            rpc_servers=tuple(
                p.strip() for p in source.get("OLLAMA_RPC_SERVERS", "").split(",") if p.strip()
            ),
            rpc_only=reader.boolean("CORRAL_RPC_ONLY"),
            max_replicas=reader.integer("CORRAL_MAX_REPLICAS", 1, minimum=1),
        )

    def describe(self) -> dict[str, str]:
        """Variable → current value, for ``serve --help`` and the startup log."""
        values: dict[str, str] = {}
        for spec in VARIABLES:
            value = getattr(self, spec.attribute)
            if spec.attribute == "api_key":
                value = "(set)" if value else ""  # the key itself is never shown or logged
            elif spec.attribute == "flash_attention" and value is None:
                value = "auto"
            elif isinstance(value, HostPort):
                value = value.url
            elif value is None:
                value = ""
            elif isinstance(value, tuple):
                value = ",".join(value)
            values[spec.name] = str(value)
        return values

    def with_changes(self, **changes: object) -> Settings:
        """A copy with some fields replaced (tests and the CLI's background server)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update(changes)
        return Settings(**current)


class _Reader:
    """Parses single variables; every bad value warns and falls back."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip().strip("\"'").strip()
        return value or None

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            logger.warning("invalid %s=%r, using default %d", name, raw, default)
            return default
        if minimum is not None and value < minimum:
            logger.warning("invalid %s=%r, using default %d", name, raw, default)
            return default
        return value

    def path(self, name: str) -> Path | None:
        raw = self._raw(name)
        return Path(raw).expanduser() if raw is not None else None

    def boolean(self, name: str) -> bool:
        raw = self._raw(name)
        if raw is None:
            return False
        lowered = raw.lower()
        if lowered in {"1", "t", "true", "yes", "on"}:
            return True
        # Ollama treats any non-empty value other than an explicit false as true.
        return lowered not in {"0", "f", "false", "no", "off"}

    def tristate(self, name: str) -> bool | None:
        """Unset (or empty) is ``None``, "let the engine decide"; otherwise ``boolean``'s
        reading (Ollama's ``BoolWithDefault``: any value but an explicit false is true)."""
        return None if self._raw(name) is None else self.boolean(name)

    def debug_level(self, name: str) -> int:
        raw = self._raw(name)
        if raw is None:
            return 0
        try:
            return max(0, int(raw))
        except ValueError:
            return 1 if self.boolean(name) else 0

    def duration(self, name: str, default: float, *, zero_is_forever: bool = False) -> float:
        """A Go duration, else a whole number of seconds (Ollama's ``KeepAlive`` and
        ``LoadTimeout`` are this lenient, unlike the API's ``keep_alive``); negative is
        forever."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            seconds = parse_go_duration(raw)
        except ValueError:
            if not re.fullmatch(r"[+-]?[0-9]+", raw):
                logger.warning("invalid %s=%r, using default %ss", name, raw, default)
                return default
            seconds = float(int(raw))
        if seconds < 0 or (zero_is_forever and seconds == 0):
            return FOREVER
        return seconds

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            logger.warning("invalid %s=%r (one of %s), using %s", name, raw, allowed, default)
            return default
        return raw.lower()


@dataclass(frozen=True, slots=True)
class VariableSpec:
    name: str
    attribute: str
    default: str
    description: str


VARIABLES: tuple[VariableSpec, ...] = (
    VariableSpec("OLLAMA_HOST", "host", "127.0.0.1:11434", "IP address and port to listen on"),
    VariableSpec("OLLAMA_MODELS", "models_dir", "~/.ollama/models", "Where models are stored"),
    VariableSpec("OLLAMA_KEEP_ALIVE", "keep_alive_seconds", "5m", "How long models stay loaded"),
    VariableSpec(
        "OLLAMA_NUM_PARALLEL", "num_parallel", "0 (auto: 4, or 1)", "Parallel requests per model"
    ),
    VariableSpec(
        "OLLAMA_MAX_LOADED_MODELS",
        "max_loaded_models",
        "0 (auto: 3 per GPU, 3 on CPU)",
        "Models loaded at once",
    ),
    VariableSpec("OLLAMA_MAX_QUEUE", "max_queue", "512", "Pending requests before 503"),
    VariableSpec("OLLAMA_ORIGINS", "origins", "", "Extra allowed CORS origins (comma list)"),
    VariableSpec("OLLAMA_DEBUG", "debug", "0", "Debug logging (1 debug, 2 trace)"),
    VariableSpec(
        "OLLAMA_DEBUG_LOG_REQUESTS",
        "debug_log_requests",
        "false",
        "Log inference request bodies and replay curl commands to a temp directory",
    ),
    VariableSpec(
        "OLLAMA_FLASH_ATTENTION",
        "flash_attention",
        "auto",
        "Flash attention: 1 on, 0 off, unset auto (on where the device supports it)",
    ),
    VariableSpec("OLLAMA_NOHISTORY", "no_history", "false", "Do not keep `run` history"),
    VariableSpec("OLLAMA_NOPRUNE", "no_prune", "false", "Do not prune unused blobs at start"),
    VariableSpec("OLLAMA_SCHED_SPREAD", "sched_spread", "false", "Spread models over all GPUs"),
    VariableSpec("OLLAMA_LLM_LIBRARY", "llm_library", "", "Force a runner library"),
    VariableSpec("OLLAMA_GPU_OVERHEAD", "gpu_overhead_bytes", "0", "Bytes reserved per GPU"),
    VariableSpec(
        "OLLAMA_LOAD_TIMEOUT", "load_timeout_seconds", "5m", "Give up on a load that stalls"
    ),
    VariableSpec("OLLAMA_KV_CACHE_TYPE", "kv_cache_type", "f16", "KV cache type: f16/q8_0/q4_0"),
    VariableSpec(
        "OLLAMA_CONTEXT_LENGTH",
        "context_length",
        "0",
        "Default context length; 0 or unset: 4096, 32768 or 262144 by total GPU memory"
        " (from 23 and 47 GiB), at most the model's",
    ),
    VariableSpec("OLLAMA_NUM_THREAD", "num_thread", "0 (auto)", "Threads per runner"),
    VariableSpec(
        "CORRAL_API_KEY", "api_key", "", "Key every request but / must send (Bearer/x-api-key)"
    ),
    VariableSpec("CORRAL_TLS_CERT", "tls_cert", "", "TLS certificate file (PEM): serve HTTPS"),
    VariableSpec("CORRAL_TLS_KEY", "tls_key", "", "TLS private key file (PEM)"),
    VariableSpec(
        "CORRAL_SHUTDOWN_TIMEOUT",
        "shutdown_timeout_seconds",
        "2s",
        "Most time from SIGTERM to exit (open streams end)",
    ),
    VariableSpec(
        "CORRAL_RUNNER_STALL_TIMEOUT",
        "runner_stall_seconds",
        "30s",
        "Kill a busy runner silent this long and deaf to health checks (0: never)",
    ),
    VariableSpec(
        "OLLAMA_RPC_SERVERS",
        "rpc_servers",
        "",
        "RPC workers (host:port, comma list) for models too big for this host",
    ),
    VariableSpec("CORRAL_RPC_ONLY", "rpc_only", "false", "Place every model on the RPC workers"),
    VariableSpec(
        "CORRAL_MAX_REPLICAS",
        "max_replicas",
        "1",
        "Runners per model: another loads when all slots are busy and memory allows",
    ),
)
