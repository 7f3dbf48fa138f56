"""The server's side of a runner: spawn it, wait until it is healthy, stream from it, stop it.

What can go wrong and what the caller sees (``RunnerError`` with a reason, never a hang):
- the process cannot start, or exits while loading: ``llama runner process has terminated:
  exit status N <last error line of its stderr>``;
- it does not become healthy before the load timeout: killed, ``timed out waiting for llama
  runner to start``;
- it dies mid-stream: ``model runner has unexpectedly stopped ...`` and ``alive`` turns false
  so the scheduler drops it.
Stopping is terminate, wait, then kill; the runner also exits by itself when our end of its
stdin pipe closes, so even a ``kill -9`` of the server leaves no orphan.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import math
import os
import ssl
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    import numpy as np  # imported where embeddings arrive: not on a server's start-up

from corral.errors import BadRequestError, RunnerError
from corral.runner.diagnose import ENGINE_UNUSABLE, OomCounter, explain
from corral.runner.events import CompletionEvent
from corral.runner.settings import LoadSettings
from corral.runner.stream import StreamError, open_stream

__all__ = ["RunnerClient", "RunnerConfig", "RunnerEmbeddings", "RunnerRerank"]

logger = logging.getLogger(__name__)

_ERROR_MARKERS = ("error:", "error ", "CUDA error", "cudaMalloc failed", '"ERR"', "failed")


#: the record a runner is started with, under the name ``serve`` wires its factory with
RunnerConfig = LoadSettings


@dataclass(frozen=True, slots=True)
class RunnerEmbeddings:
    """What ``RunnerClient.embed`` returns: float32 rows in input order, as pooled."""

    vectors: np.ndarray[Any, Any]
    prompt_eval_count: int
    duration_ns: int


@dataclass(frozen=True, slots=True)
class RunnerRerank:
    """What ``RunnerClient.rerank`` returns: one raw relevance score per document, in order."""

    scores: list[float]
    prompt_eval_count: int
    duration_ns: int


class RunnerClient:
    """One runner process. Create with ``await RunnerClient.start(settings, timeout)``;
    ``config`` is what it was loaded with."""

    def __init__(self, config: LoadSettings, process: asyncio.subprocess.Process) -> None:
        self.config = config
        self.process = process
        self.port = 0
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=50)
        self._stderr_task: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self._oom = OomCounter()
        self.stall_timeout = 0.0  # the watchdog's patience (0 or infinite: off)
        self._frozen = ""  # why the watchdog killed it, if it did

    @classmethod
    async def start(
        cls,
        config: LoadSettings,
        *,
        load_timeout: float,
        stall_timeout: float = 0.0,
        extra_env: dict[str, str] | None = None,
    ) -> RunnerClient:
        # OpenMP workers spin ~300k iterations after each step by default; spinning threads
        # of one runner steal the cores another runner decodes on (with the decode lock,
        # two SmolLM2 runners on 2 cores: 62 tok/s each instead of 34; one alone: same).
        env = {**os.environ, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "1000")}
        # The runner sees only the GPUs its layers were placed on (none for a CPU runner,
        # so a CUDA build does not put work or buffers on GPUs the estimate left out).
        env["CUDA_VISIBLE_DEVICES"] = ",".join(config.gpu_ids)
        if not config.verbose:
            # ggml attaches gdb to print a backtrace when it aborts: seconds of a stalled
            # process and lines no user can act on (OLLAMA_DEBUG keeps them)
            env.setdefault("GGML_NO_BACKTRACE", "1")
        env.update(extra_env or {})
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "corral.runner",
                *config.argv(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise RunnerError(f"error starting the llama runner: {exc}") from exc
        runner = cls(config, process)
        runner.stall_timeout = stall_timeout
        runner._stderr_task = asyncio.create_task(runner._read_stderr())
        try:
            await runner._wait_until_running(load_timeout)
        except BaseException:
            await runner.stop()
            raise
        return runner

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def stderr_tail(self) -> str:
        return "".join(self._stderr_tail)

    def last_error_line(self) -> str:
        for line in reversed(self._stderr_tail):
            if any(marker in line for marker in _ERROR_MARKERS):
                return line.strip()
        return ""

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while True:
            line = await self.process.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace")
            self._stderr_tail.append(text)
            logger.debug("runner %d: %s", self.process.pid, text.rstrip())

    def _terminated_error(self) -> RunnerError:
        code = self.process.returncode
        if code is not None and (code < 0 or code == ENGINE_UNUSABLE):
            # a signal or an engine this CPU cannot run: the explanation is the message
            return RunnerError(f"llama runner process has terminated: {self.exit_status()}")
        detail = self.last_error_line()
        message = f"llama runner process has terminated: exit status {code}"
        if detail:
            message += f" {detail}"
        if "failed to load model" in message:
            message += (
                ": this model may be incompatible with your version of corral. If you previously"
                " pulled this model, try updating it by running `corral pull <name>`"
            )
        return RunnerError(message)

    async def _wait_until_running(self, load_timeout: float) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + load_timeout
        try:
            async with asyncio.timeout(load_timeout):
                line = await self.process.stdout.readline()
        except TimeoutError:
            raise RunnerError("timed out waiting for llama runner to start") from None
        if not line:
            await self._wait_exit(2.0)
            raise self._terminated_error()
        try:
            hello = json.loads(line)
            self.port = int(hello["port"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RunnerError(f"llama runner sent an unexpected greeting: {line!r}") from exc
        self._http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            timeout=httpx.Timeout(None, connect=10.0),
            limits=httpx.Limits(max_keepalive_connections=0),
            # plain HTTP on loopback: a TLS context that trusts nothing, instead of httpx's
            # default, whose CA bundle took 25-60 ms of every model load
            verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        )
        delay = 0.01
        while True:
            if not self.alive:
                await self._wait_exit(2.0)
                raise self._terminated_error()
            health = await self._health_once()
            status = health.get("status")
            if status == "ok":
                return
            if status == "error":
                await self._wait_exit(5.0)
                if not self.alive:
                    raise self._terminated_error()
                reason = str(health.get("error", "llama runner failed to load the model"))
                detail = self.last_error_line()
                raise RunnerError(f"{reason}: {detail}" if detail else reason)
            if time.monotonic() > deadline:
                detail = self.last_error_line()
                raise RunnerError(
                    "timed out waiting for llama runner to start"
                    + (f" - {detail}" if detail else "")
                )
            await asyncio.sleep(delay)
            # a small model loads in well under a second: a long sleep here would be most
            # of a cold start's wait; a health check on loopback costs little
            delay = min(delay * 2, 0.02)

    async def _health_once(self) -> dict[str, Any]:
        assert self._http is not None
        try:
            response = await self._http.get("/health", timeout=5.0)
            data = response.json()
        except (httpx.HTTPError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    async def health(self) -> bool:
        if not self.alive:
            return False
        return (await self._health_once()).get("status") == "ok"

    async def _wait_exit(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.process.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(self._stderr_task)

    async def completion(self, payload: dict[str, Any]) -> AsyncGenerator[CompletionEvent, None]:
        """Stream the runner's NDJSON events; closing the iterator cancels the generation."""
        assert self._http is not None
        try:
            async with (
                self._watchdog() as beat,
                open_stream(self.port, "/completion", payload) as response,
            ):
                if response.status != 200:
                    body = await response.read()
                    text = _error_text(body) or f"runner answered {response.status}"
                    if response.status == 400:
                        raise BadRequestError(text)
                    raise RunnerError(text)
                async for line in response.lines():
                    beat()
                    if not line.strip():
                        continue
                    try:
                        event = orjson.loads(line)
                    except ValueError as exc:  # orjson.JSONDecodeError too
                        raise StreamError(f"runner sent a malformed event: {exc}") from exc
                    if "error" in event:
                        if event.get("status") == 400:
                            raise BadRequestError(str(event["error"]))
                        raise RunnerError(str(event["error"]))
                    yield event
                    if event.get("done"):
                        return
        except StreamError as exc:
            raise await self._died(exc) from exc
        raise await self._died(None)

    @contextlib.asynccontextmanager
    async def _watchdog(self) -> AsyncIterator[Callable[[], None]]:
        """Watch one call to the runner; the caller beats (the callable it is given) on every
        sign of progress. When ``stall_timeout`` seconds pass without a beat, the runner is
        asked for its health (a long prompt keeps it silent but answering); one that does not
        answer is frozen (stopped, hung in native code) and is killed: the caller's read then
        fails, no request waits on it forever, and the CPU turn it may hold is freed. The
        reads stay in the caller's task (a stream read from another task is not closed when
        its client leaves)."""
        if not self.stall_timeout or math.isinf(self.stall_timeout):
            yield lambda: None
            return
        last = time.monotonic()

        def beat() -> None:
            nonlocal last
            last = time.monotonic()

        async def watch() -> None:
            while self.alive:
                await asyncio.sleep(max(last + self.stall_timeout - time.monotonic(), 0.05))
                if time.monotonic() - last < self.stall_timeout:
                    continue
                if await self._answers():
                    beat()
                    continue
                await self._kill_frozen()
                return

        watcher = asyncio.create_task(watch())
        try:
            yield beat
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher

    async def _answers(self) -> bool:
        """Whether the runner answers a health check within a few seconds (busy counts)."""
        if not self.alive:
            return False
        return bool(await self._health_once())

    async def _kill_frozen(self) -> None:
        self._frozen = (
            f"stopped by corral: no output for {self.stall_timeout:g} s and no answer to a"
            " health check (a frozen or stopped process); the model loads again on the next"
            " request"
        )
        logger.warning("runner %d %s", self.process.pid, self._frozen)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self._wait_exit(5.0)

    async def _died(self, exc: Exception | None) -> RunnerError:
        await self._wait_exit(0.5)
        if self._frozen:  # the watchdog killed it: that is what happened
            return RunnerError(f"model runner stopped responding: {self._frozen}")
        detail = self.last_error_line()
        message = (
            "model runner has unexpectedly stopped, this may be due to resource limitations or an"
            " internal error, check corral server logs for details"
        )
        if not self.alive:  # how it ended is what the client can act on (OOM kill, crash)
            code = self.process.returncode
            explained = code is not None and (code < 0 or code == ENGINE_UNUSABLE)
            message += f": {self.exit_status()}"
            if detail and not explained:
                message += f" {detail}"
        elif detail:
            message += f": {detail}"
        elif exc is not None:
            message = f"lost connection to the model runner: {exc}"
        return RunnerError(message)

    def exit_status(self) -> str:
        """How the process ended: ``exit status N`` or ``killed by signal N (NAME)``, with
        what that means where it says something (see ``corral.runner.diagnose``)."""
        said = explain(
            self.process.returncode, list(self._stderr_tail), oom_killed=self._oom.fired()
        )
        return f"{said}: {self._frozen}" if self._frozen and self.process.returncode else said

    async def exited(self) -> str:
        """Wait until the process ends (the scheduler's watcher awaits this); say how, with
        the last error line of its stderr when there is one."""
        await self.process.wait()
        await self._wait_exit(1.0)  # let the stderr reader take the last lines
        code = self.process.returncode
        explained = code is None or code < 0 or code == ENGINE_UNUSABLE
        detail = "" if explained else self.last_error_line()
        return self.exit_status() + (f"; last error: {detail}" if detail else "")

    async def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = True
    ) -> list[int]:
        payload = {"content": text, "add_special": add_special, "parse_special": parse_special}
        data = await self._post("/tokenize", payload)
        tokens = data.get("tokens")
        if not isinstance(tokens, list):
            raise RunnerError("runner returned no tokens")
        return [int(t) for t in tokens]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        data = await self._post("/detokenize", {"tokens": list(tokens)})
        return str(data.get("content", ""))

    async def embed(
        self,
        texts: Sequence[str] | Sequence[list[int]],
        *,
        truncate: bool = True,
        num_ctx: int | None = None,
    ) -> RunnerEmbeddings:
        """Pooled, unnormalised vectors of ``texts``, batched in the runner.

        ``BadRequestError`` when an input is too long and ``truncate`` is false (Ollama's
        message), ``RunnerError`` when the runner fails or dies.
        """
        assert self._http is not None
        payload: dict[str, Any] = {"content": list(texts), "truncate": truncate}
        if num_ctx is not None:
            payload["num_ctx"] = num_ctx  # inputs longer than this are cut (or refused)
        response = await self._batch_call("/embed", payload)
        try:
            data = response.json()
            dim = int(data["dim"])
            raw = base64.b64decode(data["embeddings_b64"])
            import numpy as np

            vectors = np.frombuffer(raw, dtype="<f4").reshape(int(data["count"]), dim)
        except (ValueError, KeyError, TypeError) as exc:
            raise RunnerError(f"runner sent a malformed embedding answer: {exc}") from exc
        return RunnerEmbeddings(
            vectors=vectors,
            prompt_eval_count=int(data.get("prompt_eval_count", 0)),
            duration_ns=int(data.get("duration", 0)),
        )

    async def _batch_call(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        """POST a batch request under the watchdog: a 400 from the runner is the client's
        ``BadRequestError``, any other failure a ``RunnerError`` (or the runner's death)."""
        assert self._http is not None
        try:
            async with self._watchdog():
                response = await self._http.post(path, json=payload, timeout=None)
        except httpx.HTTPError as exc:
            raise await self._died(exc) from exc
        if response.status_code != 200:
            text = _error_text(response.content) or f"runner answered {response.status_code}"
            if response.status_code == 400:
                raise BadRequestError(text)
            raise RunnerError(text)
        return response

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncate: bool = True,
        num_ctx: int | None = None,
    ) -> RunnerRerank:
        """Scores of ``documents`` for ``query`` from a reranker, batched in the runner.

        ``BadRequestError`` when the model is not a reranker or a pair is too long and
        ``truncate`` is false, ``RunnerError`` when the runner fails or dies.
        """
        assert self._http is not None
        payload: dict[str, Any] = {
            "query": query,
            "documents": list(documents),
            "truncate": truncate,
        }
        if num_ctx is not None:
            payload["num_ctx"] = num_ctx
        response = await self._batch_call("/rerank", payload)
        try:
            data = response.json()
            scores = [float(score) for score in data["scores"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise RunnerError(f"runner sent a malformed rerank answer: {exc}") from exc
        if len(scores) != len(documents):
            raise RunnerError("runner sent a score count that does not match the documents")
        return RunnerRerank(
            scores=scores,
            prompt_eval_count=int(data.get("prompt_eval_count", 0)),
            duration_ns=int(data.get("duration", 0)),
        )

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        try:
            response = await self._http.post(path, json=payload, timeout=60.0)
        except httpx.HTTPError as exc:
            raise await self._died(exc) from exc
        data = response.json()
        if response.status_code != 200:
            text = str(data.get("error", f"runner answered {response.status_code}"))
            if response.status_code == 400:  # the request's values (e.g. token ids), not us
                raise BadRequestError(text)
            raise RunnerError(text)
        if not isinstance(data, dict):
            raise RunnerError("runner sent a malformed answer")
        return data

    async def stop(self, grace: float = 5.0) -> None:
        """Terminate, then kill after ``grace`` seconds; always reaps the process."""
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.aclose()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self.process.stdin is not None:
            with contextlib.suppress(Exception):
                self.process.stdin.close()
        if self._stderr_task is not None:
            self._stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stderr_task


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", errors="replace").strip()
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return ""
