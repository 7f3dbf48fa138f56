"""Registry and create benchmark: corral against plain ``curl`` on the same loopback registry.

Measured side by side in one run (the median of ``--repeats``; pulls interleaved run by run
with curl, and with an older corral tree when ``--baseline DIR`` names one, e.g. a copy of
``corral/`` from before a change, so a busy machine slows all sides alike):
- pull: ``POST /api/pull`` of a model whose weights blob is ``--size-mb`` MB (parallel Range
  parts, written to a partial file, sha256-verified, moved into place) against
  one ``curl`` fetching what the pull fetches from the same registry (the manifest, then the
  config and weights blobs, on one connection, each to a file, no verification);
- push: ``POST /api/push`` of that model to a fresh repository against ``curl`` uploading the
  same blob to a fresh repository in one monolithic ``PUT``;
- create: ``POST /api/create`` with a Modelfile whose FROM is that GGUF file on disk (the
  server hashes and copies it into the store), and with FROM naming an existing model.

Both sides use Debian's ``docker-registry`` started here on a free loopback port with a temp
storage folder, and a ``corral serve`` with its own temp store.

Usage: .venv/bin/python bench/bench_registry.py [--size-mb 120] [--repeats 5]
       [--baseline DIR_WITH_AN_OLDER_corral_PACKAGE] [--pull-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.registry.tiny import write_tiny_gguf  # noqa: E402

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"

REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


#: one client for every request the bench makes: ``httpx.stream()`` and friends build a new
#: client per call, whose TLS context alone costs ~20 ms here before the request starts;
#: that is the bench's time, not the server's (it was a tenth of a timed pull)
_CLIENT = httpx.Client(timeout=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer")


def stream(url: str, body: dict[str, Any]) -> dict[str, Any]:
    last: dict[str, Any] = {}
    with _CLIENT.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if line:
                last = json.loads(line)
    if "error" in last or last.get("status") != "success":
        raise SystemExit(f"{url} failed: {last}")
    return last


def timed(fn: Any, repeats: int, before: Any = None) -> float:
    times = []
    for i in range(repeats):
        if before is not None:
            before(i)
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def start_server(tmp: Path, port: int, store: str, cwd: Path) -> subprocess.Popen[bytes]:
    """``corral serve`` from the ``corral`` package in ``cwd`` (``-m`` imports from there)."""
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp / store)}
    return subprocess.Popen(
        [sys.executable, "-m", "corral", "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="a folder holding an older corral/")
    parser.add_argument("--pull-only", action="store_true", help="skip create and push timings")
    args = parser.parse_args()
    if not shutil.which("docker-registry") or not shutil.which("curl"):
        raise SystemExit("needs docker-registry and curl (apt-get install docker-registry curl)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    reg_port, srv_port = free_port(), free_port()
    (tmp / "registry").mkdir()
    config = tmp / "registry.yml"
    config.write_text(REGISTRY_CONFIG.format(root=tmp / "registry", port=reg_port))
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = start_server(tmp, srv_port, "m", ROOT)
    servers = [server, registry]
    reg, api = f"127.0.0.1:{reg_port}", f"http://127.0.0.1:{srv_port}"
    old_api = ""
    try:
        if args.baseline is not None:
            old_port = free_port()
            old_server = start_server(tmp, old_port, "m-old", args.baseline.resolve())
            servers.insert(0, old_server)
            old_api = f"http://127.0.0.1:{old_port}"
            wait_http(old_api + "/", old_server, "baseline corral serve")
        wait_http(f"http://{reg}/v2/", registry, "docker-registry")
        wait_http(api + "/", server, "corral serve")
        gguf = write_tiny_gguf(tmp / "big.gguf", padding_bytes=args.size_mb << 20)
        size = gguf.stat().st_size
        digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
        mb = size / 1e6
        print(f"blob: {mb:.1f} MB ({digest[:19]}...)", flush=True)

        t_create = t_create_name = t_push = t_curl_push = float("nan")
        if args.pull_only:  # just the model to pull: created here, pushed once
            stream(
                api + "/api/create", {"model": f"{reg}/push0/big:1", "modelfile": f"FROM {gguf}"}
            )
            stream(api + "/api/push", {"model": f"{reg}/push0/big:1", "insecure": True})
        else:
            # create over an existing GGUF (server-side path: hash + copy into the store)
            def create_from_path(i: int) -> None:
                modelfile = f"FROM {gguf}\nPARAMETER temperature 0.2\nSYSTEM hi\n"
                stream(api + "/api/create", {"model": f"{reg}/bench/big:1", "modelfile": modelfile})

            t_create = timed(create_from_path, args.repeats)
            t_create_name = timed(
                lambda i: stream(
                    api + "/api/create", {"model": f"derived{i}", "from": f"{reg}/bench/big:1"}
                ),
                args.repeats,
            )

            # push: corral vs curl, each to a fresh repository
            def corral_push(i: int) -> None:
                name = f"{reg}/push{i}/big:1"
                _CLIENT.post(
                    api + "/api/copy", json={"source": f"{reg}/bench/big:1", "destination": name}
                )
                stream(api + "/api/push", {"model": name, "insecure": True})

            def curl_push(i: int) -> None:
                opened = _CLIENT.post(f"http://{reg}/v2/curl{i}/big/blobs/uploads/")
                location = opened.headers["location"]
                sep = "&" if "?" in location else "?"
                subprocess.run(
                    ["curl", "-sS", "-f", "-X", "PUT", "-H",
                     "Content-Type: application/octet-stream",
                     "--data-binary", f"@{gguf}", f"{location}{sep}digest={digest}"],
                    check=True, stdout=subprocess.DEVNULL,
                )  # fmt: skip

            t_push = timed(corral_push, args.repeats)
            t_curl_push = timed(curl_push, args.repeats)

        # pull: corral (parts, verify, install) vs curl of the same blob to a file
        def delete_local(i: int) -> None:
            for name in [f"{reg}/bench/big:1", *(f"derived{j}" for j in range(args.repeats))]:
                _CLIENT.request("DELETE", api + "/api/delete", json={"model": name})
            for j in range(args.repeats):
                _CLIENT.request(
                    "DELETE", api + "/api/delete", json={"model": f"{reg}/push{j}/big:1"}
                )

        pulled = f"{reg}/push0/big:1"
        # curl fetches what the pull fetches: the manifest, then every blob it lists (the
        # config and the weights), one after another on one connection, each to a file
        manifest_url = f"http://{reg}/v2/push0/big/manifests/1"
        manifest = _CLIENT.get(manifest_url, headers={"Accept": MANIFEST_TYPE}).json()
        blobs = [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
        curl_pull = ["curl", "-sS", "-f", "-L", "-H", f"Accept: {MANIFEST_TYPE}"]
        curl_pull += ["-o", str(tmp / "curl.manifest"), manifest_url]
        for j, blob in enumerate(blobs):
            curl_pull += [
                "-o",
                str(tmp / f"curl.blob{j}"),
                f"http://{reg}/v2/push0/big/blobs/{blob}",
            ]
        sides: dict[str, list[float]] = {"corral": [], "curl": []}
        if old_api:
            sides["baseline"] = []
        for i in range(args.repeats):  # interleaved: a busy spell slows every side alike
            delete_local(i)
            start = time.perf_counter()
            stream(api + "/api/pull", {"model": pulled, "insecure": True})
            sides["corral"].append(time.perf_counter() - start)
            if old_api:
                _CLIENT.request("DELETE", old_api + "/api/delete", json={"model": pulled})
                start = time.perf_counter()
                stream(old_api + "/api/pull", {"model": pulled, "insecure": True})
                sides["baseline"].append(time.perf_counter() - start)
            start = time.perf_counter()
            subprocess.run(curl_pull, check=True)
            sides["curl"].append(time.perf_counter() - start)
            for fetched in tmp.glob("curl.*"):
                fetched.unlink()
        for side, times in sides.items():
            print(f"pull {side:9} " + " ".join(f"{t:.3f}" for t in times), flush=True)
        t_pull = statistics.median(sides["corral"])
        t_curl_pull = statistics.median(sides["curl"])
        rows = [("pull", t_pull, t_curl_pull)]
        if not args.pull_only:
            rows.append(("push", t_push, t_curl_push))
        if old_api:
            rows.insert(1, ("pull (baseline)", statistics.median(sides["baseline"]), t_curl_pull))
        print(f"{'':16}{'corral':>16}{'curl':>16}{'corral/curl':>14}")
        for what, ours, theirs in rows:
            print(
                f"{what:16}{mb / ours:11.0f} MB/s{mb / theirs:11.0f} MB/s{theirs / ours:13.2f}x"
                f"   ({ours:.3f}s vs {theirs:.3f}s, medians of {args.repeats})"
            )
        # the VM's speed drifts from one pull to the next: each round's curl/corral ratio
        # (the two ran back to back), then their median
        paired = statistics.median(
            c / o for c, o in zip(sides["curl"], sides["corral"], strict=True)
        )
        print(f"pull paired_ratio {paired:.2f}x (median of the per-round curl/corral ratios)")
        if args.pull_only:
            return
        print(f"create FROM a {mb:.0f} MB GGUF path: {t_create:.2f}s ({mb / t_create:.0f} MB/s)")
        print(f"create FROM an existing model:      {t_create_name:.3f}s")
    finally:
        for process in servers:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
