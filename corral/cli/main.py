"""The ``corral`` command line: Ollama's commands, talking to the server over HTTP.

Expected failures (server down, unknown model) print one line on stderr with the next
command to try and exit 1; a traceback means a bug.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from corral import __version__
from corral.cli import _output as output
from corral.cli import background
from corral.cli.chat import ChatSettings, chat, parse_think
from corral.cli.client import CliError, ServerClient, ServerDown, env_settings
from corral.cli.images import user_message
from corral.cli.info import info as info_command
from corral.cli.launch import CONTEXT as LAUNCH_CONTEXT
from corral.cli.launch import launch as launch_command
from corral.cli.rpc_worker import rpc_worker as rpc_worker_command
from corral.cli.show import show_summary
from corral.config import VARIABLES, Settings
from corral.errors import ModelfileError
from corral.modelfile import decode_modelfile, parse_modelfile, to_create_fields

__all__ = ["app", "main"]

DEFAULT_MODEL = "smollm2:135m"

app = typer.Typer(
    name="corral",
    help="Large language model runner, compatible with Ollama's API.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _settings() -> Settings:
    return env_settings()


def _version_callback(value: bool) -> None:
    if not value:
        return
    client = ServerClient(_settings())
    try:
        server = client.request("GET", "/api/version")["version"]
        output.out(f"corral version is {server}")
        if server != __version__:
            output.err(f"Warning: client version is {__version__}")
    except CliError:
        output.err("Warning: could not connect to a running corral server")
        output.err(f"Warning: client version is {__version__}")
    raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-v",
            help="Show version information",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Large language model runner, compatible with Ollama's API."""


# ---- serve -------------------------------------------------------------------------------


def _serve_help() -> str:
    lines = ["Start corral (the API server).", "", "Environment Variables:"]
    for spec in VARIABLES:
        lines.append(f"  {spec.name:<26} {spec.description} (default {spec.default})")
    return "\n\n".join(["Start corral.", "\n".join(lines[2:])])


@app.command("start", help=_serve_help())
@app.command("serve", help=_serve_help())
def serve() -> None:
    import asyncio  # the server's alone: not on the other commands' start-up

    from corral.server.serve import configure_logging, run_server

    settings = _settings()
    configure_logging(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_server(settings))


# ---- models ------------------------------------------------------------------------------


def _client(*, autostart: bool = False) -> ServerClient:
    client = ServerClient(_settings())
    if not client.is_up():
        if not autostart:
            raise ServerDown(
                f"could not connect to a corral server at {client.base_url} (OLLAMA_HOST);"
                " start one with: corral serve"
            )
        client.start_background_server()
    # a server this process started (just now, or from the entry point before this module
    # loaded, which may already answer), said once
    log = background.started()
    if log is not None:
        output.err(f"started a corral server in the background at {client.base_url} (log: {log})")
    return client


def _pull(client: ServerClient, model: str, *, insecure: bool = False) -> None:
    body: dict[str, Any] = {"model": model, "stream": True}
    if insecure:
        body["insecure"] = True
    _show_progress(client.stream("/api/pull", body))


def _show_progress(events: Iterator[dict[str, Any]]) -> None:
    """Ollama's progress display: a bar per blob, redrawn in place on a terminal; elsewhere
    one line per step and one per finished blob (logs stay short)."""
    tty = sys.stderr.isatty()
    last_status = ""
    open_line = False
    for event in events:
        status = event.get("status", "")
        if status != last_status and open_line:
            output.err("")
            open_line = False
        total = event.get("total")
        if total:
            completed = min(event.get("completed", 0), total)
            percent = int(completed * 100 / total)
            sizes = f"{_human_size(completed)}/{_human_size(total)}"
            line = f"{status} {percent:3d}% ▕{_bar(percent)}▏ {sizes}"
            if tty:
                output.err_inline(line)
                open_line = True
            elif completed >= total:
                output.err(line)
        elif status != last_status:
            output.err(status)
        last_status = status
    if open_line:
        output.err("")


def _bar(percent: int, width: int = 20) -> str:
    filled = percent * width // 100
    return "█" * filled + " " * (width - filled)


@app.command("pull")
def pull(
    model: Annotated[str, typer.Argument(help="Model to pull, e.g. smollm2:135m")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Use an insecure registry")] = False,
) -> None:
    """Pull a model from a registry (bundled models work offline).

    Examples: corral pull smollm2:135m; corral pull 127.0.0.1:5000/me/tiny:1 --insecure
    """
    client = _client()
    _pull(client, model, insecure=insecure)


@app.command("push")
def push(
    model: Annotated[str, typer.Argument(help="Model to push, e.g. registry.example/me/m:1")],
    insecure: Annotated[bool, typer.Option("--insecure", help="Use an insecure registry")] = False,
) -> None:
    """Push a model to the registry its name points at.

    Example: corral cp tiny 127.0.0.1:5000/me/tiny:1 && corral push 127.0.0.1:5000/me/tiny:1
    --insecure
    """
    client = _client()
    body: dict[str, Any] = {"model": model, "stream": True}
    if insecure:
        body["insecure"] = True
    _show_progress(client.stream("/api/push", body))


@app.command("create")
def create(
    model: Annotated[str, typer.Argument(help="Name of the model to create")],
    file: Annotated[Path, typer.Option("--file", "-f", help="Name of the Modelfile")] = Path(
        "Modelfile"
    ),
    quantize: Annotated[
        str, typer.Option("--quantize", "-q", help="Quantize the model to this level (q4_K_M)")
    ] = "",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Pull a missing FROM model over plain HTTP")
    ] = False,
    draft_quantize: Annotated[
        str, typer.Option("--draft-quantize", help="Quantize the DRAFT model to this level")
    ] = "",
) -> None:
    """Create a model from a Modelfile.

    Local files named by FROM and ADAPTER (relative to the Modelfile) are uploaded to the
    server first, skipped when it already has them. Example: corral create tiny -f Modelfile
    """
    body = _create_body(file)
    if quantize:
        body["quantize"] = quantize
    if draft_quantize:
        if "draft_local" not in body:
            raise CliError("--draft-quantize requires a DRAFT model")
        body["draft_quantize"] = draft_quantize
    if insecure:
        body["insecure"] = True
    client = _client()
    _upload_local_files(client, body, file.parent)
    body["model"] = model
    body["stream"] = True
    _show_progress(client.stream("/api/create", body))


def _create_body(file: Path) -> dict[str, Any]:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the Modelfile {file}: {exc.strerror}") from None
    try:
        fields = to_create_fields(parse_modelfile(decode_modelfile(data)))
    except ModelfileError as exc:
        raise CliError(f"{file}: {exc.message}") from None
    body = fields.request_body()
    body["adapters_local"] = list(fields.adapters)
    if fields.draft is not None:
        body["draft_local"] = fields.draft
    body["from_local"] = list(fields.from_all)  # a vision model: model and projector
    return body


def _upload_local_files(client: ServerClient, body: dict[str, Any], base: Path) -> None:
    """Replace local FROM/ADAPTER paths by uploaded blobs (``files``/``adapters``)."""
    files: dict[str, str] = {}
    for raw in body.pop("from_local", None) or [body["from"]]:
        source = _local_path(raw, base)
        if source is not None:
            files.update(_upload_tree(client, source))
        elif raw != body["from"]:
            body["from"] = raw  # a model name beside a local projector
    if files:
        if _local_path(body["from"], base) is not None:
            del body["from"]
        body["files"] = files
    adapters: dict[str, str] = {}
    for raw in body.pop("adapters_local"):
        path = _local_path(raw, base)
        if path is None or path.is_dir():
            raise CliError(f"ADAPTER {raw}: not a local file")
        adapters[path.name] = client.upload_blob(path, _transfer_progress(path))
    if adapters:
        body["adapters"] = adapters
    draft = body.pop("draft_local", None)
    if draft is not None:
        path = _local_path(draft, base)
        if path is None:
            body["draft"] = draft  # a model name: the server takes its weights
        elif path.is_dir():
            raise CliError(f"DRAFT {draft}: not a GGUF file")
        else:
            body["draft_files"] = {path.name: client.upload_blob(path, _transfer_progress(path))}


def _local_path(value: str, base: Path) -> Path | None:
    """The local file or folder a FROM/ADAPTER value names, or None for a model name."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    looks_like_path = value.startswith(("/", "./", "../", "~", ".\\")) or "\\" in value
    if path.exists():
        return path
    if looks_like_path or value.lower().endswith(".gguf"):
        raise CliError(f"{value}: no such file or directory")
    return None


def _upload_tree(client: ServerClient, source: Path) -> dict[str, str]:
    if source.is_file():
        return {source.name: client.upload_blob(source, _transfer_progress(source))}
    files: dict[str, str] = {}
    for path in sorted(source.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.parts):
            relative = path.relative_to(source).as_posix()
            files[relative] = client.upload_blob(path, _transfer_progress(path))
    if not files:
        raise CliError(f"{source}: no files to upload")
    return files


def _transfer_progress(path: Path) -> Callable[[int, int], None]:
    status = "transferring model data"
    tty = sys.stderr.isatty()
    state = {"shown": -1}

    def show(completed: int, total: int) -> None:
        percent = int(completed * 100 / total) if total else 100
        if percent == state["shown"]:
            return
        state["shown"] = percent
        sizes = f"{_human_size(completed)}/{_human_size(total)}"
        line = f"{status} {percent:3d}% ▕{_bar(percent)}▏ {sizes}"
        if tty:
            output.err_inline(line)
            if completed >= total:
                output.err("")
        elif completed >= total:
            output.err(line)

    return show


def _ensure_model(client: ServerClient, model: str, *, insecure: bool = False) -> dict[str, Any]:
    """The model's ``/api/show`` answer, pulling it first where it is not here."""
    try:
        shown = client.request("POST", "/api/show", {"model": model})
    except CliError as exc:
        if exc.status != 404:
            raise
        _pull(client, model, insecure=insecure)
        shown = client.request("POST", "/api/show", {"model": model})
    return shown if isinstance(shown, dict) else {}


@app.command("run")
def run(
    model: Annotated[str, typer.Argument(help="Model to run")] = DEFAULT_MODEL,
    prompt: Annotated[list[str] | None, typer.Argument(help="Prompt (else interactive)")] = None,
    format: Annotated[str, typer.Option("--format", help="Response format (e.g. json)")] = "",
    keepalive: Annotated[
        str, typer.Option("--keepalive", help="How long to keep the model loaded (e.g. 5m)")
    ] = "",
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show timings for the response")
    ] = False,
    nowordwrap: Annotated[bool, typer.Option("--nowordwrap", help="Don't wrap words")] = False,
    think: Annotated[
        str | None,
        typer.Option(
            "--think",
            help="Thinking for models that support it: --think, or --think=high|medium|low|false",
        ),
    ] = None,
    hidethinking: Annotated[
        bool, typer.Option("--hidethinking", help="Hide the thinking text (if any)")
    ] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="Use an insecure registry")] = False,
    truncate: Annotated[
        bool | None,
        typer.Option(
            "--truncate/--no-truncate",
            help="For embedding models: cut inputs longer than the context (default: true);"
            " --truncate=false to get an error instead",
        ),
    ] = None,
    dimensions: Annotated[
        int,
        typer.Option(
            "--dimensions", help="Cut output embeddings to this many dimensions (embedding models)"
        ),
    ] = 0,
) -> None:
    """Run a model: answer PROMPT, or chat interactively (type /? for help there).

    Examples: corral run smollm2:135m "Why is the sky blue?"; echo hi | corral run smollm2:135m
    """
    settings = ChatSettings(
        model=model,
        format=format,
        keep_alive=keepalive,
        think=parse_think(think) if think is not None else None,
        hide_thinking=hidethinking,
        word_wrap=not nowordwrap,
        verbose=verbose,
    )
    client = _client(autostart=True)
    shown = _ensure_model(client, model, insecure=insecure)
    text = " ".join(prompt or [])
    interactive = sys.stdin.isatty() and output.stdout_is_terminal()
    if not sys.stdin.isatty():
        piped = sys.stdin.read()
        text = f"{text}\n\n{piped}".strip() if text else piped.strip()
    if "embedding" in shown.get("capabilities", ()):
        from corral.cli.embed_run import print_embedding  # numpy: not on a chat's cold start

        print_embedding(client, model, text, keepalive, truncate, dimensions)
    elif text:
        vision = "vision" in shown.get("capabilities", ())
        chat(client, settings, [user_message(text, vision=vision)])  # image paths: images.py
    elif interactive:
        from corral.cli.repl import OllamaHistory, Repl, history_path  # not on a one-shot's path

        history = OllamaHistory(history_path(), enabled=not _settings().no_history)
        Repl(client, settings, history=history, pull=lambda name: _pull(client, name)).start()
    else:  # no prompt and no terminal to chat on: load the model, as Ollama does
        from corral.cli.repl import preload

        preload(client, settings)


@app.command("list")
def list_models(
    prefix: Annotated[str, typer.Argument(help="Only models whose name starts so")] = "",
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List models."""
    data = _client().request("GET", "/api/tags")
    if json_output:
        output.print_json(data)
        return
    print_model_list(data, prefix)


def print_model_list(data: dict[str, Any], prefix: str = "") -> None:
    """``list``'s table (and the REPL's ``/list``): models whose name starts with
    ``prefix`` (any casing), as Ollama's ``ListHandler``."""
    rows = [
        [m["name"], m["digest"][:12], _human_size(m["size"]), _ago(m["modified_at"])]
        for m in data.get("models", [])
        if m["name"].lower().startswith(prefix.lower())
    ]
    output.table(["NAME", "ID", "SIZE", "MODIFIED"], rows)


app.command("ls", help="List models.")(list_models)


@app.command("ps")
def ps(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """List running models."""
    data = _client().request("GET", "/api/ps")
    if json_output:
        output.print_json(data)
        return
    rows = []
    # a model with several runners (CORRAL_MAX_REPLICAS): a REPLICA column
    replicated = any("replica" in m for m in data.get("models", []))
    for m in data.get("models", []):
        size, vram = m.get("size", 0), m.get("size_vram", 0)
        if vram == 0:
            processor = "100% CPU"
        elif vram >= size:
            processor = "100% GPU"
        else:
            cpu = round((size - vram) * 100 / size)
            processor = f"{cpu}%/{100 - cpu}% CPU/GPU"
        if isinstance(m.get("rpc"), dict):  # spread over RPC workers: layers on each
            workers = m["rpc"].get("workers") or []
            processor = "RPC " + " ".join(
                f"{w.get('layers', '?')}@{w.get('endpoint')}" for w in workers
            )
        rows.append(
            [
                ",".join(m.get("names") or [m["name"]]),  # every name sharing the runner
                m["digest"][:12],
                _human_size(size),
                processor,
                str(m.get("context_length", "")),
                _until(m.get("expires_at", "")),
                str(m.get("requests_running", 0)),
                str(m.get("requests_waiting", 0)),
            ]
            + ([str(m.get("replica", 0))] if replicated else [])
        )
    output.table(
        ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "RUNNING", "WAITING"]
        + (["REPLICA"] if replicated else []),
        rows,
    )


@app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="Model to show")],
    license: Annotated[bool, typer.Option("--license", help="Show license")] = False,
    modelfile: Annotated[bool, typer.Option("--modelfile", help="Show Modelfile")] = False,
    parameters: Annotated[bool, typer.Option("--parameters", help="Show parameters")] = False,
    system: Annotated[bool, typer.Option("--system", help="Show system message")] = False,
    template: Annotated[bool, typer.Option("--template", help="Show template")] = False,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Show detailed model information")
    ] = False,
) -> None:
    """Show information for a model."""
    body: dict[str, Any] = {"model": model, "verbose": True} if verbose else {"model": model}
    data = _model_request(_client(), "/api/show", body)
    if license:
        output.out(data.get("license", ""))
    elif modelfile:
        output.out(data.get("modelfile", ""))
    elif parameters:
        output.out(data.get("parameters", ""))
    elif system:
        output.out(data.get("system", ""))
    elif template:
        output.out(data.get("template", ""))
    else:
        show_summary(data, verbose=verbose)


@app.command("rm")
def rm(models: Annotated[list[str], typer.Argument(help="Models to remove")]) -> None:
    """Remove one or more models (stopping them first if loaded)."""
    client = _client()
    for model in models:
        with contextlib.suppress(CliError):  # not loaded, or not a generate model
            client.request("POST", "/api/generate", {"model": model, "keep_alive": 0})
        client.request("DELETE", "/api/delete", {"model": model})
        output.out(f"deleted '{model}'")


@app.command("cp")
def cp(
    source: Annotated[str, typer.Argument(help="Source model")],
    destination: Annotated[str, typer.Argument(help="Destination model")],
) -> None:
    """Copy a model."""
    _client().request("POST", "/api/copy", {"source": source, "destination": destination})
    output.out(f"copied '{source}' to '{destination}'")


app.command("info")(info_command)
app.command("launch", context_settings=LAUNCH_CONTEXT)(launch_command)
app.command("rpc-worker")(rpc_worker_command)


@app.command("stop")
def stop(model: Annotated[str, typer.Argument(help="Model to stop")]) -> None:
    """Stop a running model."""
    _model_request(_client(), "/api/generate", {"model": model, "keep_alive": 0})


def _model_request(client: ServerClient, path: str, body: dict[str, Any]) -> Any:
    """POST about one model; a model the server does not have names the command that
    gets it."""
    try:
        return client.request("POST", path, body)
    except CliError as exc:
        if exc.status != 404:
            raise
        raise CliError(f"{exc.message}; try: corral pull {body['model']}", 404) from None


# ---- formatting helpers ------------------------------------------------------------------


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1000
    return f"{size} TB"  # pragma: no cover


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ago(text: str) -> str:
    stamp = _parse_time(text)
    if stamp is None:
        return ""
    seconds = (datetime.now(UTC) - stamp).total_seconds()
    return f"{_duration_words(seconds)} ago" if seconds >= 1 else "Less than a second ago"


def _until(text: str) -> str:
    stamp = _parse_time(text)
    if stamp is None:
        return ""
    seconds = (stamp - datetime.now(UTC)).total_seconds()
    if seconds > 20 * 365 * 86400:
        return "Forever"
    if seconds <= 0:
        return "Stopping..."
    return f"{_duration_words(seconds)} from now"


def _duration_words(seconds: float) -> str:
    for unit, size in (
        ("year", 31536000),
        ("month", 2592000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        if seconds >= size:
            count = int(seconds // size)
            if count == 1:
                article = "An" if unit == "hour" else "A"
                return f"{article} {unit}" if unit != "second" else "1 second"
            return f"{count} {unit}s"
    return "Less than a second"


def _bare_think(argv: list[str]) -> list[str]:
    """``--think`` alone means ``--think=true`` (Ollama's flag has an optional value); click
    would otherwise take the next word, often the prompt, as its value. ``--truncate=false``
    (Ollama's spelling) is ``--no-truncate`` here, ``--truncate=true`` ``--truncate``."""
    cut = argv.index("--") if "--" in argv else len(argv)
    words = {
        "--think": "--think=true",
        "--truncate=false": "--no-truncate",
        "--truncate=true": "--truncate",
    }
    return [words.get(a, a) for a in argv[:cut]] + argv[cut:]


def main() -> None:
    try:
        app(args=_bare_think(sys.argv[1:]))
    except CliError as exc:
        output.err(f"Error: {exc.message}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
