"""Placing a model's layers on RPC workers, and the leases that keep each worker to one
runner (the scheduler's side of ``corral.rpc``).

When a model does not fit this host even with every other model unloaded (or always, with
``CORRAL_RPC_ONLY``), the scheduler asks the pool here. The pool probes every worker it has
not leased (``corral.rpc.probe``: in threads, a 1.5 s timeout each, all at once), so a
worker that died, froze or came back is asked again before it is used; then ``plan_layers``
splits the model over the workers that answered ``ok``:

- llama.cpp's units are the repeating layers plus the output layer; ``n_gpu_layers``
  moves the *last* units off this host, the output first; ``tensor_split`` gives each
  worker device its share, in order (the first device takes the lowest offloaded layers);
- a device's share is in proportion to its free memory, and never more than fits there
  with the compute buffer it needs (``compute_bytes``); what no worker can hold stays here
  (the first layers);
- with a large vocabulary (``LARGE_VOCAB``) the output matrix stays on this host: remote, it
  would send 4 x n_vocab bytes of logits back for every token (the runner pins it with a
  buffer override, see ``corral.runner.rpc``).

Leases: a worker serves one client at a time, and a second one waits in silence; so a
worker is leased to exactly one runner from placement until that runner is unloaded or
dies, and leased workers are not probed (the probe would only wait behind our own runner).
A worker another server holds answers the probe ``busy`` and is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from corral import estimate
from corral.estimate import Estimate, ModelLayout
from corral.rpc.endpoints import parse_endpoints
from corral.rpc.probe import ProbeResult, ProbeState, probe
from corral.runner.settings import LoadSettings

__all__ = [
    "LARGE_VOCAB",
    "Placement",
    "WorkerPool",
    "compute_bytes",
    "plan_layers",
    "ps_fields",
]

logger = logging.getLogger("corral.scheduler")

MiB = 1024 * 1024
#: from this vocabulary size on, the output matrix stays on this host
LARGE_VOCAB = 32_000
#: room kept free on each worker device beyond the compute buffer (fragmentation, the
#: worker process's own growth)
DEVICE_MARGIN_BYTES = 64 * MiB
_KV_BYTES = {"f16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
_KV_PAD = 256


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a model's layers go: ``units`` per worker device, in order."""

    endpoints: tuple[str, ...]  # the workers used, in device order
    devices: tuple[str, ...]  # "host:port#device" per device with layers
    units: tuple[int, ...]  # llama.cpp units (layers, the output last) per device
    device_bytes: tuple[int, ...]  # memory each device takes (weights, KV, compute)
    local_units: int  # units left on this host
    keep_output: bool  # the output matrix stays here
    local_bytes: int  # what this host holds of the model (embeddings, output, local layers)

    @property
    def remote_units(self) -> int:
        return sum(self.units)

    def per_endpoint(self) -> list[dict[str, object]]:
        """``[{"endpoint", "layers", "size"}]`` for ``/api/ps``."""
        found: dict[str, dict[str, int]] = {}
        for device, units, size in zip(self.devices, self.units, self.device_bytes, strict=True):
            endpoint = device.rsplit("#", 1)[0]
            entry = found.setdefault(endpoint, {"layers": 0, "size": 0})
            entry["layers"] += units
            entry["size"] += size
        return [{"endpoint": e, "layers": v["layers"], "size": v["size"]} for e, v in found.items()]

    def describe(self) -> str:
        parts = [f"{e['layers']} on {e['endpoint']}" for e in self.per_endpoint()]
        here = f"{self.local_units} here" + (", output here" if self.keep_output else "")
        return f"layers: {', '.join(parts)}, {here}"


def _cells(settings: LoadSettings) -> int:
    return math.ceil(settings.num_ctx / _KV_PAD) * _KV_PAD * max(settings.num_parallel, 1)


def _kv_bytes(layout: ModelLayout, settings: LoadSettings) -> list[int]:
    per_element = _KV_BYTES.get(settings.kv_cache_type, 2.0)
    cells = _cells(settings)
    kv = [int(elements * cells * per_element) for elements in layout.kv_elements_per_cell]
    return kv + [0] * (layout.block_count - len(kv))


def compute_bytes(layout: ModelLayout, settings: LoadSettings, *, with_logits: bool) -> int:
    """The compute buffer a worker device reserves: a batch's activations and attention
    scores (f32), the logits too when the output layer is computed there."""
    batch = min(settings.batch_size, _cells(settings))
    cells = math.ceil(settings.num_ctx / _KV_PAD) * _KV_PAD
    activations = 4 * batch * (3 * layout.n_embd + layout.n_ff)
    attention = 4 * batch * cells * (layout.n_head + 1)
    logits = 4 * max(settings.num_parallel, 1) * layout.n_vocab if with_logits else 0
    return activations + attention + logits + DEVICE_MARGIN_BYTES


def plan_layers(
    layout: ModelLayout,
    settings: LoadSettings,
    devices: Sequence[tuple[str, int]],
) -> Placement | None:
    """Split the model over ``devices`` (``("host:port#index", free bytes)``, in the order
    the runner registers them); None when no device can take even one layer.

    Pure arithmetic: the most units that fit (from the last layer down), shared in
    proportion to free memory, then trimmed until every device's range fits.
    """
    blocks = layout.block_count
    if blocks <= 0 or not devices:
        return None
    keep_output = layout.n_vocab >= LARGE_VOCAB
    kv = _kv_bytes(layout, settings)
    # unit i < blocks: layer i; unit blocks: the output layer
    unit_bytes = [layout.layer_bytes[i] + kv[i] for i in range(blocks)]
    unit_bytes.append(0 if keep_output else layout.output_bytes)
    total_units = blocks + 1
    budgets = [
        free - compute_bytes(layout, settings, with_logits=not keep_output) for _, free in devices
    ]
    room = sum(max(b, 0) for b in budgets)
    if room <= 0:
        return None
    counts: list[int] = []
    offloaded = 0
    while offloaded < total_units and sum(unit_bytes[total_units - offloaded - 1 :]) <= room:
        offloaded += 1
    while offloaded > 0:
        counts = _shares(offloaded, [max(b, 0) for b in budgets])
        sizes = _range_sizes(unit_bytes, total_units - offloaded, counts)
        if all(size <= budget for size, budget, n in zip(sizes, budgets, counts, strict=True) if n):
            break
        offloaded -= 1
    if offloaded < (2 if keep_output else 1) or not any(counts):
        return None  # not even one layer: a kept-local output alone is no placement
    local_layers = total_units - offloaded  # the first layers stay here
    used = [(name, n, size) for (name, _), n, size in zip(devices, counts, sizes, strict=True) if n]
    extra = [
        compute_bytes(layout, settings, with_logits=not keep_output and index == len(used) - 1)
        for index in range(len(used))
    ]
    endpoints: list[str] = []
    for name, _, _ in used:
        endpoint = name.rsplit("#", 1)[0]
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    local = (
        layout.token_embd_bytes
        + layout.other_bytes
        + sum(unit_bytes[:local_layers])
        + (layout.output_bytes if keep_output else 0)
    )
    return Placement(
        endpoints=tuple(endpoints),
        devices=tuple(name for name, _, _ in used),
        units=tuple(n for _, n, _ in used),
        device_bytes=tuple(size + more for (_, _, size), more in zip(used, extra, strict=True)),
        local_units=local_layers,
        keep_output=keep_output,
        local_bytes=local,
    )


def _shares(count: int, weights: Sequence[int]) -> list[int]:
    """``count`` split in proportion to ``weights`` (largest remainder)."""
    total = sum(weights)
    if total <= 0:
        return [0] * len(weights)
    exact = [count * w / total for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: count - sum(shares)]:
        shares[i] += 1
    return shares


def _range_sizes(unit_bytes: Sequence[int], start: int, counts: Sequence[int]) -> list[int]:
    sizes = []
    at = start
    for n in counts:
        sizes.append(sum(unit_bytes[at : at + n]))
        at += n
    return sizes


@dataclass(slots=True)
class _Lease:
    owner: str
    placement: Placement


@dataclass(slots=True)
class WorkerPool:
    """The operator's workers, what each last answered, and which runner holds which."""

    endpoints: tuple[str, ...]
    probe: Callable[[str], ProbeResult] = field(default=lambda e: probe(e))
    last: dict[str, ProbeResult] = field(default_factory=dict)
    _leases: dict[str, _Lease] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, servers: Sequence[str]) -> WorkerPool | None:
        """The pool of ``OLLAMA_RPC_SERVERS`` (None when there are none); a bad address is
        logged and left out."""
        good: list[str] = []
        for text in servers:
            try:
                good.extend(e for e in parse_endpoints(text) if e not in good)
            except ValueError as exc:
                logger.warning("ignoring OLLAMA_RPC_SERVERS entry: %s", exc)
        return cls(tuple(good)) if good else None

    def leased_to(self, endpoint: str) -> str | None:
        lease = self._leases.get(endpoint)
        return lease.owner if lease else None

    async def refresh(self) -> list[ProbeResult]:
        """Probe every worker not leased now, all at once, each in a thread."""
        free = [e for e in self.endpoints if e not in self._leases]
        results = await asyncio.gather(*(asyncio.to_thread(self.probe, e) for e in free))
        for result in results:
            before = self.last.get(result.endpoint)
            if before is None or before.state != result.state:
                logger.info("RPC worker %s: %s", result.endpoint, result.describe())
            self.last[result.endpoint] = result
        return list(results)

    def devices(self) -> list[tuple[str, int]]:
        """Free memory per device of every worker that answered ``ok`` and is not leased."""
        found: list[tuple[str, int]] = []
        for endpoint in self.endpoints:
            result = self.last.get(endpoint)
            if endpoint in self._leases or result is None or result.state is not ProbeState.OK:
                continue
            found.extend((f"{endpoint}#{i}", free) for i, free in enumerate(result.free_bytes))
        return found

    def place(self, owner: str, config: LoadSettings) -> tuple[LoadSettings, Estimate] | None:
        """Plan ``config``'s model on the free workers (as last probed) and lease them to
        ``owner``; the runner's settings and this host's share. Synchronous: nothing else
        can lease the same workers in between."""
        try:
            layout = estimate.model_layout(config.model_path)
        except Exception:  # an unreadable model: the local load says why
            return None
        placement = plan_layers(layout, config, self.devices())
        if placement is None:
            return None
        for endpoint in placement.endpoints:
            self._leases[endpoint] = _Lease(owner, placement)
        placed = replace(
            config,
            num_gpu_layers=placement.remote_units,
            gpu_ids=(),
            # over every device of the leased workers (the runner registers them all),
            # zero for a device that got no layer
            tensor_split=self._split_over_all(placement),
            rpc_servers=placement.endpoints,
            rpc_keep_output=placement.keep_output,
        )
        local = placement.local_bytes + estimate.RUNNER_OVERHEAD_BYTES
        plan = Estimate(
            layers=0,  # no GPU layers here: this host's share is system memory
            gpu_layers=0,
            ram_bytes=local,
            weights_bytes=layout.weights_bytes,
            notes=(placement.describe(),),
        )
        logger.info("placing %s on RPC workers: %s", owner, placement.describe())
        return placed, plan

    def _split_over_all(self, placement: Placement) -> tuple[float, ...]:
        split: list[float] = []
        for endpoint in placement.endpoints:
            result = self.last.get(endpoint)
            count = len(result.free_bytes) if result is not None else 1
            for index in range(count):
                name = f"{endpoint}#{index}"
                units = (
                    placement.units[placement.devices.index(name)]
                    if name in placement.devices
                    else 0
                )
                split.append(float(units))
        return tuple(split)

    def release(self, endpoints: Sequence[str]) -> None:
        """The runner holding ``endpoints`` is gone: they may be probed and leased again."""
        for endpoint in endpoints:
            if self._leases.pop(endpoint, None) is not None:
                self.last.pop(endpoint, None)  # asked again before its next use

    def placement_of(self, endpoints: Sequence[str]) -> Placement | None:
        for endpoint in endpoints:
            lease = self._leases.get(endpoint)
            if lease is not None:
                return lease.placement
        return None

    def status(self) -> list[dict[str, object]]:
        """Each worker: its address, its last probe, who holds it (``corral info``, logs)."""
        rows: list[dict[str, object]] = []
        for endpoint in self.endpoints:
            result = self.last.get(endpoint)
            rows.append(
                {
                    "endpoint": endpoint,
                    "state": result.state.value if result else "unknown",
                    "detail": result.describe() if result else "",
                    "leased_to": self.leased_to(endpoint) or "",
                }
            )
        return rows


def ps_fields(pool: WorkerPool | None, config: LoadSettings) -> dict[str, object]:
    """``/api/ps``'s ``rpc`` object for a runner on workers (``{}`` for any other): each
    worker's address, layers and bytes, and the layers left on this host."""
    if pool is None or not config.rpc_servers:
        return {}
    placement = pool.placement_of(config.rpc_servers)
    if placement is None:
        return {"rpc": {"workers": [{"endpoint": e} for e in config.rpc_servers]}}
    return {
        "rpc": {
            "workers": placement.per_endpoint(),
            "local_layers": placement.local_units,
            "output_local": placement.keep_output,
        }
    }
