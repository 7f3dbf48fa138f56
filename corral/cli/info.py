"""``corral info``: the compute devices this machine offers, found the way ``serve`` finds
them (no server needed): NVIDIA GPUs through their libraries, the CPU, system memory, and
the engine: the llama.cpp build, its backends, the instruction sets it uses and its self-test
(asked of llama.cpp in a child process, so a build that cannot run here is reported, not
crashed on)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli import _output as output
from corral.cli.client import env_settings
from corral.engine.probe import engine_report
from corral.hardware import Hardware, SystemInfo
from corral.rpc.probe import report as rpc_report

__all__ = ["info"]

GiB = 1024**3


def info(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print devices, CPU and memory as JSON")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also say why each GPU library was not used")
    ] = False,
) -> None:
    """Show the compute devices corral would use.

    Examples: corral info; corral info --json | jq '.devices[0].free_bytes'
    """
    hardware = Hardware(env_settings())
    try:
        system = hardware.discover()
        errors = hardware.errors
    finally:
        hardware.close()
    engine = engine_report()
    workers = rpc_report(env_settings().rpc_servers)  # OLLAMA_RPC_SERVERS, probed
    if json_output:
        data = system.as_json()
        data["engine"] = engine
        data["rpc_workers"] = workers
        if verbose:
            data["library_errors"] = errors
        output.print_json(data)
        return
    _print_table(system)
    _print_engine(engine)
    for worker in workers:
        output.out(f"RPC worker {worker['endpoint']}: {worker['detail'] or worker['state']}")
    if system.gpu_note:
        output.err(system.gpu_note)
    if verbose:
        for error in errors:
            output.err(f"note: {error}")


def _print_table(system: SystemInfo) -> None:
    rows = [
        [
            str(row["id"]),
            str(row["library"]),
            str(row["name"]),
            str(row["compute"]) or "-",
            str(row["driver"]) or "-",
            f"{row['total_bytes'] / GiB:.1f} GiB",
            f"{row['free_bytes'] / GiB:.1f} GiB",
        ]
        for row in system.devices()
    ]
    output.table(["ID", "LIBRARY", "NAME", "COMPUTE", "DRIVER", "TOTAL", "AVAILABLE"], rows)
    cpu = system.cpu
    output.out()
    output.out(
        f"CPU: {cpu.model_name or 'unknown'}, {cpu.physical_cores} cores"
        f" ({cpu.logical_cores} threads, {cpu.usable_cores:g} usable),"
        f" features: {' '.join(cpu.features) or 'none found'}"
    )


def _print_engine(engine: dict[str, Any]) -> None:
    build = engine.get("build") or {}
    if "llama_cpp_python" not in engine:
        output.out(f"Engine: cannot be loaded here: {engine.get('error', 'unknown error')}")
        return
    how = (
        f"{build.get('description', '')} (tier {build.get('tier')})"
        if build
        else "not built by install.sh (unrecorded)"
    )
    output.out(
        f"Engine: llama.cpp from llama-cpp-python {engine['llama_cpp_python']},"
        f" backends {', '.join(engine.get('backends', [])) or 'none'}; built {how}"
    )
    output.out(f"  instruction sets: {' '.join(engine.get('cpu_features', [])) or 'none'}")
    output.out(f"  self-test: {engine.get('selftest', 'not run')}")
    if not engine.get("ok"):
        output.out(f"  cannot run here: {engine.get('error')}")
