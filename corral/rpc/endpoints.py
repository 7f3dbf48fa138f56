"""Worker addresses as the operator writes them: ``host:port``, comma separated.

Workers come only from the operator's environment (``OLLAMA_RPC_SERVERS``), never from an
API request: a reachable worker port is as good as a shell on its host, so no client may
point the server at one.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PORT", "format_endpoint", "parse_endpoint", "parse_endpoints"]

#: llama.cpp's default RPC port (``ggml-rpc-server -p``)
DEFAULT_PORT = 50052


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host`` or ``host:port`` → (host, port); ``ValueError`` says why not. IPv6 literals
    are refused: llama.cpp's RPC client splits an address at its first colon (a host name
    that resolves to IPv6 works)."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty worker address")
    if raw.startswith("[") or raw.count(":") > 1:
        raise ValueError(
            f"worker address {raw!r}: IPv6 literals are not supported by llama.cpp's RPC"
            " client; use a host name"
        )
    host, _, port_text = raw.partition(":")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"worker address {raw!r}: bad host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"worker address {raw!r}: port must be 1-65535")
    return host, int(port_text)


def format_endpoint(host: str, port: int) -> str:
    """The ``host:port`` llama.cpp's RPC client takes."""
    return f"{host}:{port}"


def parse_endpoints(text: str) -> tuple[str, ...]:
    """A comma list of addresses → canonical ``host:port`` strings, duplicates dropped;
    ``ValueError`` names the first bad one."""
    seen: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        endpoint = format_endpoint(*parse_endpoint(part))
        if endpoint not in seen:
            seen.append(endpoint)
    return tuple(seen)
