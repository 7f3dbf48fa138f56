"""One blob range over a plain HTTP/1.1 socket, in a worker thread: the pull's fast path.

Why: a general HTTP client spends more time per byte than the network does on a fast link
(small reads, a parser pass and an event-loop hop per read). A blob body is the simplest
thing HTTP carries (a ``Content-Length`` of raw bytes), so this reads it with ``recv_into``
straight into large buffers and hands each full one to ``sink`` (write, and hash from the
same memory in another thread), with no copy in between.

Only the plain case is taken: ``http``/``https`` without a proxy, a ``200`` or ``206`` with
a ``Content-Length`` (or none: read until close), no transfer or content encoding. Anything
else raises :class:`Fallback` before the first body byte is taken, and the caller uses its
general client, which also owns every error message (4xx/5xx bodies, auth challenges).
Redirects (a registry sending blobs to a CDN) are followed here, up to five; the
``Authorization`` header is dropped when the host changes, and an ``https`` → ``http``
redirect falls back.

Failures on the wire (refused, reset, timed out, closed early) are :class:`WireError`; the
caller retries. ``stop`` ends a transfer from another thread (the socket is shut down).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Final
from urllib.parse import urljoin, urlsplit

from corral.registry.client import ssl_context

__all__ = ["Fallback", "RangeGet", "WireError", "proxy_configured"]

_MAX_HEADER_BYTES: Final = 64 << 10
_MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_PROXY_VARS: Final = ("http_proxy", "https_proxy", "all_proxy")


class Fallback(Exception):
    """Not the plain case: nothing of the body was consumed; use the general client."""


class WireError(Exception):
    """The connection failed or closed early (retryable)."""


def proxy_configured() -> bool:
    """Whether the environment names a proxy (the general client honours it; this does not)."""
    return any(os.environ.get(v) or os.environ.get(v.upper()) for v in _PROXY_VARS)


class RangeGet:
    """``GET url`` with ``Range: bytes=first-last``; ``run`` returns the status (200/206) and
    the ``Content-Range`` header after feeding the body to ``sink``.

    ``check(status, content_range)`` runs after the headers, before any body byte (raise
    to refuse); ``sink(view, slot)`` takes each filled buffer and returns how many bytes it
    still wants (0: stop reading). The buffers (``buffers`` of them) are filled in turn;
    ``reuse(slot)`` is called before a buffer is filled again, and returns once whoever kept a
    view of it (a hash thread) is done with it. Bytes that came with the headers are passed
    as slot -1 (memory that is never reused). ``skip`` bytes at the start of a ``200`` body
    are dropped (a registry that ignores ``Range``).
    """

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        timeout_s: float,
        buffer_bytes: int,
        buffers: int = 2,
    ) -> None:
        self.url = url
        self.headers = headers
        self.timeout_s = timeout_s
        self.buffers = [bytearray(buffer_bytes) for _ in range(max(1, buffers))]
        self._sock: socket.socket | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        """From any thread: end the transfer (the reading thread gets :class:`WireError`)."""
        self._stopped.set()
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def run(
        self,
        check: Callable[[int, str], int],
        sink: Callable[[memoryview, int], int],
        reuse: Callable[[int], None] | None = None,
    ) -> None:
        url, headers = self.url, dict(self.headers)
        for _ in range(_MAX_REDIRECTS + 1):
            sock, status, fields, rest = self._request(url, headers)
            try:
                if status in _REDIRECTS and "location" in fields:
                    target = urljoin(url, fields["location"])
                    old, new = urlsplit(url), urlsplit(target)
                    if new.scheme not in ("http", "https") or (
                        old.scheme == "https" and new.scheme == "http"
                    ):
                        raise Fallback(f"redirect to {new.scheme or 'a relative'} URL")
                    if (old.scheme, old.netloc) != (new.scheme, new.netloc):
                        headers.pop("Authorization", None)
                    url = target
                    continue
                if status not in (200, 206):
                    raise Fallback(f"status {status}")
                if fields.get("transfer-encoding") or fields.get(
                    "content-encoding", "identity"
                ) not in ("", "identity"):
                    raise Fallback("encoded body")
                length_field = fields.get("content-length")
                try:
                    length = int(length_field) if length_field is not None else None
                except ValueError:
                    raise Fallback("bad Content-Length") from None
                if length is not None and length < 0:
                    raise Fallback("bad Content-Length")
                skip = check(status, fields.get("content-range", ""))
                self._body(sock, rest, length, skip, sink, reuse)
                return
            finally:
                with self._lock:
                    self._sock = None
                sock.close()
        raise Fallback("too many redirects")

    # ---- wire ---------------------------------------------------------------------------

    def _request(
        self, url: str, headers: dict[str, str]
    ) -> tuple[socket.socket, int, dict[str, str], bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Fallback(f"scheme {parts.scheme}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if self._stopped.is_set():
            raise WireError("stopped")
        try:
            raw = socket.create_connection((parts.hostname, port), timeout=self.timeout_s)
        except OSError as exc:
            raise WireError(f"dial tcp {parts.hostname}:{port}: {exc.strerror or exc}") from exc
        sock: socket.socket = raw
        try:
            if parts.scheme == "https":
                sock = ssl_context().wrap_socket(raw, server_hostname=parts.hostname)
            with self._lock:
                self._sock = sock
            if self._stopped.is_set():
                raise WireError("stopped")
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += ["Accept-Encoding: identity", "Connection: close", "", ""]
            sock.sendall("\r\n".join(lines).encode("latin-1"))
            status, fields, rest = _read_head(sock)
        except ssl.SSLCertVerificationError:
            sock.close()
            raise Fallback("certificate") from None  # the general client words this error
        except (OSError, ValueError) as exc:
            sock.close()
            raise WireError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            sock.close()
            raise
        return sock, status, fields, rest

    def _body(
        self,
        sock: socket.socket,
        rest: bytes,
        length: int | None,
        skip: int,
        sink: Callable[[memoryview, int], int],
        reuse: Callable[[int], None] | None,
    ) -> None:
        views = [memoryview(b) for b in self.buffers]
        slot = 0
        view = views[slot]
        left = length  # body bytes not yet received (None: until close)
        filled = 0
        wanted = 1
        if rest:  # the body's first bytes came with the headers
            rest = rest[: left if left is not None else len(rest)]
            if left is not None:
                left -= len(rest)
            cut = min(skip, len(rest))
            skip -= cut
            if rest[cut:]:
                wanted = sink(memoryview(rest)[cut:], -1)
        while wanted:
            if left == 0 or filled == len(view):
                wanted = sink(view[:filled], slot) if filled else wanted
                filled = 0
                if left == 0 or not wanted:
                    return
                slot = (slot + 1) % len(views)
                if reuse is not None:
                    reuse(slot)
                view = views[slot]
                continue
            room = len(view) - filled if left is None else min(len(view) - filled, left)
            try:
                n = sock.recv_into(view[filled:], room)
            except OSError as exc:
                if filled:
                    sink(view[:filled], slot)
                raise WireError(
                    "stopped" if self._stopped.is_set() else str(exc) or type(exc).__name__
                ) from exc
            if n == 0:
                if filled:
                    sink(view[:filled], slot)
                if left is None and not self._stopped.is_set():
                    return
                raise WireError("stopped" if self._stopped.is_set() else "unexpected EOF")
            if left is not None:
                left -= n
            if skip:
                cut = min(skip, n)
                skip -= cut
                view[filled : filled + n - cut] = view[filled + cut : filled + n]
                n -= cut
            filled += n


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The status line and headers; the bytes read past them are the body's start."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEADER_BYTES:
            raise ValueError("response headers too large")
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("connection closed before the response headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if len(head) > _MAX_HEADER_BYTES:
        raise ValueError("response headers too large")
    lines = head.decode("latin-1").split("\r\n")
    version, _, status_text = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not status_text[:3].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("bad header line")
        key = name.strip().lower()
        value = value.strip()
        conflicts = key in ("content-length", "transfer-encoding", "location")
        if conflicts and key in fields and fields[key] != value:
            raise ValueError(f"conflicting {key} headers")
        fields[key] = value
    status = int(status_text[:3])
    if status in (100, 101, 103):
        raise ValueError(f"unexpected status {status}")
    return status, fields, rest
