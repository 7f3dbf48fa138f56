"""The test's client, run inside the client network namespace (or beside a loopback
server): ``python -m tests.integration.rpc_client COMMAND URL [JSON]``; prints one JSON
object. Commands: ``wait`` (until the server answers), ``pull``, ``ps``, ``generate`` (a
streamed /api/generate; with ``kill_pid``, ``kill_signal`` and ``kill_after`` in the JSON
it sends that signal to that process after that many chunks and times the end); ``probe``
and ``hold`` take a worker's ``host:port`` instead of a URL: ``hold`` connects, says hello
and stays connected (another client holding the worker) until killed."""

from __future__ import annotations

import json
import os
import sys
import time

import httpx


def _wait(url: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return {"ok": True}
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return {"ok": False}


def _generate(url: str, body: dict[str, object]) -> dict[str, object]:
    kill_pid = body.pop("kill_pid", None)
    kill_signal = int(body.pop("kill_signal", 9))  # type: ignore[call-overload]
    kill_after = int(body.pop("kill_after", 0))  # type: ignore[call-overload]
    chunks: list[dict[str, object]] = []
    killed_at = None
    started = time.monotonic()
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as response:
        status = response.status_code
        for line in response.iter_lines():
            if not line:
                continue
            chunks.append(json.loads(line))
            if kill_pid and killed_at is None and len(chunks) >= kill_after:
                os.kill(int(kill_pid), kill_signal)  # type: ignore[call-overload]
                killed_at = time.monotonic()
    ended = time.monotonic()
    last = chunks[-1] if chunks else {}
    return {
        "status": status,
        "text": "".join(str(c.get("response", "")) for c in chunks),
        "chunks": len(chunks),
        "error": last.get("error"),
        "last": last,
        "seconds": ended - started,
        "after_kill": None if killed_at is None else ended - killed_at,
    }


def main() -> None:
    command, url = sys.argv[1], sys.argv[2]
    body = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if command == "wait":
        result = _wait(url)
    elif command == "pull":
        answer = httpx.post(url + "/api/pull", json={**body, "stream": False}, timeout=300)
        result = {"status": answer.status_code, "body": answer.json()}
    elif command == "ps":
        result = httpx.get(url + "/api/ps", timeout=30).json()
    elif command == "generate":
        result = _generate(url, body)
    elif command == "probe":  # url is a worker's host:port here
        from corral.rpc.probe import probe

        found = probe(url, timeout=float(body.get("timeout", 1.5)))
        result = {"state": found.state.value, "detail": found.describe()}
    elif command == "hold":  # be a worker's client (url: host:port) until killed
        import socket

        host, _, port = url.partition(":")
        conn = socket.create_connection((host, int(port)), timeout=5)
        conn.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))
        hello = conn.recv(64)
        sys.stdout.write(json.dumps({"held": len(hello)}) + "\n")
        sys.stdout.flush()
        time.sleep(3600)
        return
    else:
        raise SystemExit(f"unknown command {command}")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
