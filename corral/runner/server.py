"""The runner process: a tiny HTTP/1.1 API on loopback in front of one ``Engine``.

Started by ``RunnerClient`` as ``python -m corral.runner --model PATH ...`` (the arguments
are a ``LoadSettings``, see ``settings.py``). It binds ``127.0.0.1`` on a port the OS picks,
prints ``{"port": N, "pid": P}`` on stdout so the parent knows where to connect, then loads
the model while ``/health`` answers ``loading``.

Routes (JSON in, JSON or NDJSON out; every response closes its connection):
  GET  /health      {"status": "loading"|"ok"|"error", "error"?, "slots_busy", "n_ctx", ...}
  POST /completion  {"prompt"|"tokens", "prompt_tokens"?, "options", "format"?, "wrap"?,
                     "grammar_after"?: the thinking end marker, where the format applies,
                     "return_tokens"?, "logprobs"?: top N 0-20, "truncate"?, "shift"?
                     (false: a prompt over the context is a 400; false: a full context
                     ends the answer)}; "prompt_tokens" are the
                    prompt's tokens as /tokenize with add_special gave them (then "prompt"
                    is not tokenized again, only kept for logs)
                    → NDJSON: {"content", "logprobs"?} ... {"done": true, "done_reason", stats...}
  POST /tokenize    {"content", "add_special"?, "parse_special"? (true)} → {"tokens": [...]}
  POST /detokenize  {"tokens": [...]} → {"content": "..."} (control tokens rendered as text)
  POST /embed       {"content": [str | [token id, ...], ...], "truncate"?, "num_ctx"?}
                    → {"embeddings_b64", "dim", "prompt_eval_count", "duration"}: pooled
                    float32 rows, base64, in order
  POST /rerank      {"query": str, "documents": [str, ...], "truncate"?, "num_ctx"?}
                    → {"scores": [float, ...], "prompt_eval_count", "duration"}: one raw
                    relevance score per document, in order (a reranker only: else 400)

The parent may die without stopping us (``kill -9``): we watch stdin, which is a pipe from
the parent, and exit when it reaches EOF, so no runner is ever orphaned.

Why not a web framework here: this process should import little (it starts on every model
load) and its only client is our own ``RunnerClient``; the protocol is deliberately small.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson

from corral.runner.embed import Embedder, InputTooLongError, NotSupportedError
from corral.runner.engine import GRAMMARS, Engine, LoadError, Task
from corral.runner.grammar import SchemaError, schema_to_grammar
from corral.runner.grammar.deferred import DeferredGrammar
from corral.runner.logprobs import MAX_TOP_LOGPROBS as MAX_TOP
from corral.runner.settings import LoadSettings
from corral.runner.vision_request import vision_prompt

__all__ = ["RunnerServer", "serve"]

logger = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024 * 1024
_SEND_TIMEOUT = 30.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RunnerServer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.status = "loading"
        self.error: str | None = None
        self.embedder = Embedder(engine)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await _read_request(reader)
            await self._route(method, path, body, reader, writer)
        except HTTPError as exc:
            await _send_json(writer, exc.status, {"error": exc.message})
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            logger.exception("runner request failed")
            with contextlib.suppress(Exception):
                await _send_json(writer, 500, {"error": str(exc)})
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _route(
        self,
        method: str,
        path: str,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if path == "/health":
            await _send_json(writer, 200, self._health())
            return
        if method != "POST":
            raise HTTPError(404, "not found")
        if self.status != "ok":
            raise HTTPError(503, self.error or "model is still loading")
        payload = _parse_json(body)
        if path == "/completion":
            await self._completion(payload, reader, writer)
        elif path == "/tokenize":
            content = payload.get("content", "")
            if not isinstance(content, str):
                raise HTTPError(400, "content must be a string")
            # parse_special as for a completion's prompt (unless asked not), so that these
            # tokens may come back as its prompt_tokens
            tokens = self.engine.tokenize(
                content,
                add_special=bool(payload.get("add_special")),
                parse_special=bool(payload.get("parse_special", True)),
            )
            await _send_json(writer, 200, {"tokens": tokens})
        elif path == "/detokenize":
            tokens = _token_list(payload.get("tokens"), self.engine.n_vocab)
            text = self.engine.detokenize(tokens, special=True)
            await _send_json(writer, 200, {"content": text})
        elif path == "/embed":
            await _send_json(writer, 200, await self._embed(payload))
        elif path == "/rerank":
            await _send_json(writer, 200, await self._rerank(payload))
        else:
            raise HTTPError(404, "not found")

    def _health(self) -> dict[str, Any]:
        health: dict[str, Any] = {"status": self.status}
        if self.error:
            health["error"] = self.error
        if self.status == "ok":
            settings = self.engine.settings
            health.update(
                slots_busy=self.engine.slots_busy,
                n_parallel=settings.num_parallel,
                n_ctx=settings.num_ctx,
                n_ctx_train=self.engine.n_ctx_train,
                pid=os.getpid(),
            )
        return health

    async def _completion(
        self, payload: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        tokens = [] if payload.get("images") else self._prompt_tokens(payload)
        options = payload.get("options") or {}
        if not isinstance(options, dict):
            raise HTTPError(400, "options must be an object")
        grammar = payload.get("grammar")
        fmt = payload.get("format")
        if grammar is None and isinstance(fmt, str) and fmt:
            grammar = GRAMMARS.get(fmt)
            if grammar is None:
                raise HTTPError(400, f'invalid format: "{fmt}"; expected "json"')
        elif grammar is None and isinstance(fmt, dict):
            # "wrap": literal text around the document (a forced tool call's tags)
            wrap = payload.get("wrap") or ["", ""]
            if not (
                isinstance(wrap, list) and len(wrap) == 2 and all(isinstance(w, str) for w in wrap)
            ):
                raise HTTPError(400, "wrap must be a list of two strings")
            try:
                grammar = schema_to_grammar(fmt, prefix=wrap[0], suffix=wrap[1])
            except SchemaError as exc:
                raise HTTPError(400, f"invalid JSON schema in format: {exc}") from exc
        if grammar is not None and not isinstance(grammar, str):
            raise HTTPError(400, "grammar must be a string")
        # a thinking model: the grammar starts after its thinking ends (grammar/deferred.py)
        deferred = DeferredGrammar.of(grammar, payload.get("grammar_after"))
        logprobs = _logprobs(payload.get("logprobs"))
        truncate, shift = payload.get("truncate", True), payload.get("shift", True)
        if not isinstance(truncate, bool) or not isinstance(shift, bool):
            raise HTTPError(400, "truncate and shift must be booleans")
        images = await vision_prompt(self.engine.vision, payload)
        if images is not None:
            tokens = images.tokens
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        except BaseException:
            if images is not None:
                images.close()
            raise
        # The engine thread writes each event to the socket itself, between two decode
        # steps: handing events to this event loop would wake a second thread per token
        # while the decode threads want both cores (measured: 85 vs 110 tok/s on 2 cores).
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def signal_finished() -> None:
            loop.call_soon_threadsafe(finished.set)

        stream = _EngineStream(writer, signal_finished)
        task = Task(
            tokens=tokens,
            options=options,
            emit=stream.emit,
            grammar=grammar if deferred is None else None,
            deferred=deferred,
            return_tokens=bool(payload.get("return_tokens")),
            logprobs=logprobs,
            on_finished=stream.finished,
            truncate=truncate,
            shift=shift,
            images=images,
        )
        stream.task = task
        self.engine.submit(task)
        disconnect = asyncio.ensure_future(reader.read(1))
        waiter = asyncio.ensure_future(finished.wait())
        try:
            await asyncio.wait({waiter, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                task.cancelled = True  # the client went away: free the slot
                await waiter  # the engine lets go of the socket before we close it
        except asyncio.CancelledError:
            task.cancelled = True
            await asyncio.shield(waiter)
            raise
        finally:
            disconnect.cancel()
            waiter.cancel()
            stream.close()
            if images is not None and finished.is_set():  # the engine has let go of them
                images.close()

    async def _embed(self, payload: dict[str, Any]) -> dict[str, Any]:
        texts = payload.get("content")
        if not isinstance(texts, list):
            raise HTTPError(400, "content must be a list of strings or token-id lists")
        inputs = [
            text if isinstance(text, str) else _token_list(text, self.engine.n_vocab)
            for text in texts
        ]
        truncate, max_tokens = _batch_limits(payload)
        try:
            output = await asyncio.to_thread(
                self.embedder.embed, inputs, truncate=truncate, max_tokens=max_tokens
            )
        except (InputTooLongError, NotSupportedError) as exc:
            raise HTTPError(400, str(exc)) from exc
        except (RuntimeError, LoadError) as exc:
            raise HTTPError(500, str(exc)) from exc
        vectors = output.vectors.astype("<f4", copy=False)
        return {
            "embeddings_b64": base64.b64encode(vectors.tobytes()).decode("ascii"),
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "count": len(texts),
            "prompt_eval_count": output.prompt_eval_count,
            "duration": int(output.duration_s * 1e9),
        }

    async def _rerank(self, payload: dict[str, Any]) -> dict[str, Any]:
        query = payload.get("query")
        documents = payload.get("documents")
        if not isinstance(query, str):
            raise HTTPError(400, "query must be a string")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise HTTPError(400, "documents must be a list of strings")
        truncate, max_tokens = _batch_limits(payload)
        try:
            output = await asyncio.to_thread(
                self.embedder.rerank, query, documents, truncate=truncate, max_tokens=max_tokens
            )
        except (InputTooLongError, NotSupportedError) as exc:
            raise HTTPError(400, str(exc)) from exc
        except (RuntimeError, LoadError) as exc:
            raise HTTPError(500, str(exc)) from exc
        return {
            "scores": output.scores,
            "prompt_eval_count": output.prompt_eval_count,
            "duration": int(output.duration_s * 1e9),
        }

    def _prompt_tokens(self, payload: dict[str, Any]) -> list[int]:
        """The prompt's tokens: ``tokens`` as given, else ``prompt_tokens`` (the server
        tokenized ``prompt`` through ``/tokenize`` with ``add_special``, which is this same
        tokenization, while fitting it to the context), else ``prompt`` tokenized here."""
        if "tokens" in payload:
            return _token_list(payload["tokens"], self.engine.n_vocab)
        prompt = payload.get("prompt", "")
        if not isinstance(prompt, str):
            raise HTTPError(400, "prompt must be a string")
        if payload.get("prompt_tokens") is not None:
            return _token_list(payload["prompt_tokens"], self.engine.n_vocab)
        return self.engine.tokenize(prompt, add_special=True, parse_special=True)


class _EngineStream:
    """The response body of one completion, written by the engine thread.

    The socket is a duplicate of the connection's, in blocking mode with a timeout, used
    only by the engine thread until the task is finished; then the event loop closes it.
    A client that stops reading for the timeout, or disconnects, cancels its task.
    """

    def __init__(self, writer: asyncio.StreamWriter, on_finished: Callable[[], None]) -> None:
        connection = writer.get_extra_info("socket")
        self._socket = socket.socket(fileno=os.dup(connection.fileno()))
        self._socket.setblocking(True)
        self._socket.settimeout(_SEND_TIMEOUT)
        self._on_finished = on_finished
        self.task: Task | None = None
        self._ended = False

    def emit(self, event: dict[str, Any]) -> None:
        if self._ended:
            return
        try:  # per token: orjson
            data = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:  # a value orjson does not write: the standard library's way
            data = json.dumps(event, default=float).encode() + b"\n"
        chunk = b"%x\r\n%s\r\n" % (len(data), data)
        final = "done" in event or "error" in event
        if final:
            chunk += b"0\r\n\r\n"
            self._ended = True
        try:
            self._socket.sendall(chunk)
        except OSError:
            self._ended = True
            if self.task is not None:
                self.task.cancelled = True

    def finished(self) -> None:
        self._on_finished()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.close()


def _batch_limits(payload: dict[str, Any]) -> tuple[bool, int | None]:
    """An embed or rerank request's ``truncate`` and ``num_ctx``, checked."""
    truncate = payload.get("truncate", True)
    if not isinstance(truncate, bool):
        raise HTTPError(400, "truncate must be a boolean")
    max_tokens = payload.get("num_ctx")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise HTTPError(400, "num_ctx must be a positive integer")
    return truncate, max_tokens


def _token_list(value: Any, n_vocab: int) -> list[int]:
    """A list of token ids, each within the vocabulary, or a 400 naming the first bad one."""
    if not isinstance(value, list):
        raise HTTPError(400, "tokens must be a list of token ids")
    for token in value:
        if not isinstance(token, int) or isinstance(token, bool):
            raise HTTPError(400, f"token id {json.dumps(token)} is not an integer")
        if not 0 <= token < n_vocab:
            raise HTTPError(
                400, f"token id {token} is out of range: the vocabulary has {n_vocab} tokens"
            )
    return value


def _logprobs(value: Any) -> int:
    """The ``logprobs`` field: top N alternatives (0-20), or -1 when absent."""
    if value is None:
        return -1
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOP:
        raise HTTPError(400, f"top_logprobs must be between 0 and {MAX_TOP}")
    return value


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except ValueError as exc:
        raise HTTPError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise HTTPError(400, "request body must be a JSON object")
    return payload


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, _version = lines[0].split(" ", 2)
    except ValueError as exc:
        raise HTTPError(400, "bad request line") from exc
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise HTTPError(400, "bad content-length") from exc
    if length < 0 or length > _MAX_BODY:
        raise HTTPError(400, "body too large")
    body = await reader.readexactly(length) if length else b""
    return method, path.split("?", 1)[0], body


async def _send_json(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    writer.write(
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()


def _watch_parent(loop: asyncio.AbstractEventLoop, gone: asyncio.Event) -> None:
    """Set ``gone`` when stdin (a pipe from the parent) closes: the parent is gone.

    A daemon thread, not the default executor: ``asyncio.run`` waits for executor threads
    at exit, and this one blocks in ``read`` until the parent goes away.
    """

    def block() -> None:
        try:  # os.read on the raw fd: a buffered reader's lock breaks interpreter exit
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        loop.call_soon_threadsafe(gone.set)

    threading.Thread(target=block, name="parent-watch", daemon=True).start()


async def serve(settings: LoadSettings, *, host: str = "127.0.0.1", port: int = 0) -> int:
    engine = Engine(settings)
    server = RunnerServer(engine)
    http = await asyncio.start_server(server.handle, host, port, limit=1 << 20)
    bound = http.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": bound, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    parent_gone = asyncio.Event()
    _watch_parent(asyncio.get_running_loop(), parent_gone)
    try:
        await asyncio.to_thread(engine.load)
    except LoadError as exc:
        server.status, server.error = "error", str(exc)
        sys.stderr.write(f"error: {exc}\n")
        sys.stderr.flush()
        return 1
    engine.start()
    server.status = "ok"
    logger.info("runner ready on 127.0.0.1:%d", bound)
    async with http:
        await parent_gone.wait()
    # The parent is gone: exit now, as on SIGTERM (see __main__), not through a teardown
    # that may race a decode step holding the CPU turn.
    sys.stderr.flush()
    os._exit(0)
