"""Scale-out on llama.cpp's RPC backend: workers on other hosts hold a model's layers.

- ``worker``: ``corral rpc-worker``, llama.cpp's RPC server from this same engine build;
- ``probe``: a protocol-level check of a worker (hello, devices, free memory) with a short
  timeout, made by the server, never by a runner (a runner that meets a dead worker aborts);
- ``endpoints``: the operator's list of workers (``OLLAMA_RPC_SERVERS``), parsed.

The placement of layers on leased workers is ``corral.scheduler.placement``; the runner's
side (registering the workers' devices, the abort and stall guards) is ``corral.runner.rpc``.
"""

from corral.rpc.endpoints import parse_endpoint, parse_endpoints
from corral.rpc.probe import ProbeResult, ProbeState, probe

__all__ = ["ProbeResult", "ProbeState", "parse_endpoint", "parse_endpoints", "probe"]
