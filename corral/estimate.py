"""How much memory a model takes with given load settings, and which layers go to which GPU.

The settings are the runner's own record (``corral.runner.settings.LoadSettings``), as the
scheduler built it: the estimate sizes exactly what the runner will load.

The terms follow what llama.cpp allocates (read off its load log for the bundled models):
- **weights**: every tensor's bytes from the GGUF. The repeating layers (``blk.N.*``) and the
  output layer (``output_norm`` + ``output``, or the tied ``token_embd`` that stands in for
  it) can go to a GPU; ``token_embd`` itself always stays in system memory. On an x86 CPU
  with AVX2, llama.cpp keeps a second, repacked copy of Q4_0/Q4_K/IQ4_NL tensors.
- **KV cache**: ``2 (K, V) x layers x kv_heads x head_dim x cells x bytes per element``; the
  runner gives each of its ``num_parallel`` slots ``num_ctx`` cells (rounded up to 256) in a
  stream of its own; a sliding-window layer (an architecture of
  ``SLIDING_WINDOW_PATTERNS``) keeps ``n_swa + num_batch`` of them (rounded up to 256) at
  most, as llama.cpp sizes its window cache.
- **compute graph**: the largest of (a) the attention scores of one ``num_batch`` chunk
  against a full slot, ``4 x batch x cells x (heads + 1)`` (the +1 is the mask; flash
  attention never materialises the scores), and (b) the logits of a whole chunk,
  ``4 x batch x vocab`` -- reserved on a GPU, but on the CPU only the rows of the tokens
  asked for are ever written, so system memory sees (a) and a few logit rows.
  On the CPU, the matmul that applies the scores works from an f16 copy of them
  (``2 x batch x cells x heads`` more).
- **runner**: the Python process with llama.cpp loaded, and llama.cpp's vocabulary tables
  (about 128 bytes a token), measured (``bench/bench_estimate.py``).
- **GPU**: each GPU used pays the CUDA runtime's minimum (457 MiB, as Ollama) and
  ``OLLAMA_GPU_OVERHEAD``; a layer's share is its weights plus its KV cells.

Placement follows Ollama's ``EstimateGPULayers``, made to match llama.cpp's own order: with
``n`` GPU layers, llama.cpp offloads the *last* ``n`` repeating layers and, when ``n`` is
greater than the layer count, the output layer. Unless ``OLLAMA_SCHED_SPREAD`` is set, a
model that fits whole on one GPU goes to the one with the most free memory; otherwise its
layers are spread over every GPU with room, in proportion to that room. ``num_gpu`` (when
not -1) caps the GPU layers.

Errors: an unreadable GGUF raises ``GGUFError`` from the reader; everything here is plain
arithmetic on its header.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from corral.gguf import GGUFInfo, read_gguf
from corral.hardware import CpuInfo, GpuInfo, SystemInfo
from corral.runner.settings import SLIDING_WINDOW_PATTERNS, LoadSettings

__all__ = [
    "RUNNER_OVERHEAD_BYTES",
    "Estimate",
    "ModelLayout",
    "auto_parallel",
    "estimate",
    "fits",
    "model_layout",
]

MiB = 1024 * 1024
_KV_BYTES = {"f16": 2.0, "f32": 4.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
#: the runner process itself: Python, numpy, the HTTP side and llama.cpp's code and state
#: (VmRSS of a runner on a tiny model, bench/bench_estimate.py)
RUNNER_OVERHEAD_BYTES = 82 * MiB
#: llama.cpp's vocabulary tables (token texts, scores, lookup maps) per token
_VOCAB_BYTES_PER_TOKEN = 128
#: CPU kernels repack these types into an interleaved copy (x86 with AVX2, aarch64)
_REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
#: the sliding window llama.cpp assumes when the GGUF does not say
_DEFAULT_N_SWA = {"gemma2": 4096}
_KV_PAD = 256
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """The numbers of a GGUF that memory depends on."""

    architecture: str
    block_count: int
    layer_bytes: tuple[int, ...]  # weights of each repeating layer
    output_bytes: int  # output_norm + output (or the tied token_embd, on a GPU)
    token_embd_bytes: int
    other_bytes: int  # tensors outside layers, output and embeddings
    repacked_bytes: int  # weights the CPU backend copies into its repacked layout
    kv_elements_per_cell: tuple[int, ...]  # K + V elements per cell, per layer
    n_embd: int
    n_head: int
    n_ff: int
    n_vocab: int
    tied_output: bool
    sliding: tuple[bool, ...] = ()  # per layer, slides over the last n_swa positions (empty: none)
    n_swa: int = 0

    @property
    def weights_bytes(self) -> int:
        """The file's tensors, each once (a tied output is the embeddings themselves)."""
        output = self.output_bytes - (self.token_embd_bytes if self.tied_output else 0)
        return sum(self.layer_bytes) + output + self.token_embd_bytes + self.other_bytes


@dataclass(frozen=True, slots=True)
class Estimate:
    """Where a model goes and what it takes there."""

    layers: int  # offloadable layers: repeating layers + the output layer
    gpu_layers: int  # what the runner gets as n_gpu_layers
    gpu_ids: tuple[str, ...] = ()  # GPUs used, in CUDA order
    tensor_split: tuple[int, ...] = ()  # layers on each of gpu_ids
    gpu_bytes: tuple[int, ...] = ()  # memory taken on each of gpu_ids
    ram_bytes: int = 0  # system memory of the runner process
    weights_bytes: int = 0
    kv_bytes: int = 0
    graph_bytes: int = 0  # the compute graph llama.cpp reserves (on the GPU, whole)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def vram_bytes(self) -> int:
        return sum(self.gpu_bytes)

    @property
    def total_bytes(self) -> int:
        return self.vram_bytes + self.ram_bytes

    @property
    def fully_offloaded(self) -> bool:
        return self.layers > 0 and self.gpu_layers >= self.layers

    @classmethod
    def on_cpu(cls, ram_bytes: int) -> Estimate:
        """A CPU-only estimate of a known size (fakes in tests, unreadable models)."""
        return cls(layers=0, gpu_layers=0, ram_bytes=ram_bytes)


# ---- reading the model ---------------------------------------------------------------


def _int(value: object, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return int(max(value))
    return default


def _per_layer(value: object, count: int, default: int) -> list[int]:
    """An int, or a per-layer list of ints, as one value per layer."""
    if isinstance(value, list) and len(value) == count and all(isinstance(v, int) for v in value):
        return [int(v) for v in value]
    return [_int(value, default)] * count


@functools.lru_cache(maxsize=64)
def model_layout(path: str) -> ModelLayout:
    """The layout of the GGUF at ``path`` (cached: a blob never changes under its digest)."""
    return layout_of(read_gguf(path))


def layout_of(info: GGUFInfo) -> ModelLayout:
    blocks = _int(info.arch_value("block_count", 0))
    layer_bytes = [0] * blocks
    output = token_embd = other = repacked = 0
    has_output = False
    for tensor in info.tensors:
        if tensor.ggml_type in _REPACKED_TYPES and tensor.name != "token_embd.weight":
            repacked += tensor.n_bytes
        match = _LAYER.match(tensor.name)
        if match and int(match.group(1)) < blocks:
            layer_bytes[int(match.group(1))] += tensor.n_bytes
        elif tensor.name.startswith("output"):
            output += tensor.n_bytes
            has_output = has_output or tensor.name == "output.weight"
        elif tensor.name == "token_embd.weight":
            token_embd += tensor.n_bytes
        else:
            other += tensor.n_bytes
    if not has_output:  # tied embeddings: llama.cpp duplicates token_embd as the output
        output += token_embd
    n_embd = _int(info.arch_value("embedding_length", 0))
    heads = _per_layer(info.arch_value("attention.head_count", 0), blocks, 0)
    kv_heads = _per_layer(info.arch_value("attention.head_count_kv", None), blocks, 0)
    kv_heads = [kv or h for kv, h in zip(kv_heads, heads, strict=True)]
    n_head = max(heads, default=0)
    head_k = _int(info.arch_value("attention.key_length", 0)) or (n_embd // n_head if n_head else 0)
    head_v = _int(info.arch_value("attention.value_length", 0)) or head_k
    kv_cells = tuple(kv * (head_k + head_v) for kv in kv_heads)
    n_swa, sliding = _sliding_layers(info, blocks)
    return ModelLayout(
        architecture=info.architecture,
        block_count=blocks,
        layer_bytes=tuple(layer_bytes),
        output_bytes=output,
        token_embd_bytes=token_embd,
        other_bytes=other,
        repacked_bytes=repacked,
        kv_elements_per_cell=kv_cells,
        sliding=sliding,
        n_swa=n_swa,
        n_embd=n_embd,
        n_head=n_head,
        n_ff=_int(info.arch_value("feed_forward_length", 0)),
        n_vocab=_vocab_size(info),
        tied_output=not has_output,
    )


def _sliding_layers(info: GGUFInfo, blocks: int) -> tuple[int, tuple[bool, ...]]:
    """The window and which layers slide, as llama.cpp reads them (none for an architecture
    outside ``SLIDING_WINDOW_PATTERNS``: every layer then counts at full size)."""
    pattern = SLIDING_WINDOW_PATTERNS.get(info.architecture)
    n_swa = _int(info.arch_value("attention.sliding_window", 0))
    n_swa = n_swa or _DEFAULT_N_SWA.get(info.architecture, 0)
    if pattern is None or n_swa <= 0:
        return 0, (False,) * blocks
    given = info.arch_value("attention.sliding_window_pattern")
    if isinstance(given, list) and len(given) == blocks:
        return n_swa, tuple(bool(v) for v in given)
    if isinstance(given, int) and not isinstance(given, bool):
        pattern = given
    return n_swa, tuple(pattern == 0 or i % pattern < pattern - 1 for i in range(blocks))


def _vocab_size(info: GGUFInfo) -> int:
    size = _int(info.arch_value("vocab_size", 0))
    if size:
        return size
    tokens = info.metadata.get("tokenizer.ggml.tokens")
    length = getattr(tokens, "length", None)
    if isinstance(length, int):
        return length
    if isinstance(tokens, list):
        return len(tokens)
    for tensor in info.tensors:
        if tensor.name == "token_embd.weight" and len(tensor.shape) == 2:
            return tensor.shape[1]
    return 0


# ---- the arithmetic ------------------------------------------------------------------


def _cells(settings: LoadSettings) -> int:
    """KV cells of one slot (llama.cpp pads each stream to 256)."""
    return math.ceil(settings.num_ctx / _KV_PAD) * _KV_PAD


def _kv_layer_bytes(layout: ModelLayout, settings: LoadSettings) -> list[int]:
    if settings.embedding and not layout.kv_elements_per_cell:
        return []
    per_element = _KV_BYTES.get(settings.kv_cache_type, 2.0)
    slots = max(settings.num_parallel, 1)
    full = _cells(settings)
    window = min(full, math.ceil((layout.n_swa + settings.batch_size) / _KV_PAD) * _KV_PAD)
    sliding = layout.sliding or (False,) * len(layout.kv_elements_per_cell)
    return [
        int(elements * (window if slides else full) * slots * per_element)
        for elements, slides in zip(layout.kv_elements_per_cell, sliding, strict=True)
    ]


def _attention_graph(layout: ModelLayout, settings: LoadSettings, *, on_cpu: bool) -> int:
    """One chunk's attention against a full slot (the scores and their mask in f32), plus,
    on the CPU, the f16 copy of the scores its matmul works from (outside the graph)."""
    batch = min(settings.batch_size, _cells(settings))
    activations = 4 * batch * (3 * layout.n_embd + layout.n_ff)
    if settings.flash_attention is not False:
        return activations + 2 * batch * _cells(settings)
    per_cell = 4 * (layout.n_head + 1) + (2 * layout.n_head if on_cpu else 0)
    return activations + batch * _cells(settings) * per_cell


def _logits_graph(layout: ModelLayout, settings: LoadSettings, rows: int) -> int:
    if settings.embedding:
        return 4 * rows * layout.n_embd
    # the last hidden states beside the logits: one more of them without flash attention
    hidden = 2 if settings.flash_attention is not False else 3
    return 4 * rows * (layout.n_vocab + hidden * layout.n_embd)


def _cpu_repacks(cpu: CpuInfo | None) -> bool:
    if cpu is None:
        return True
    return "avx2" in cpu.features or "asimd" in cpu.features


def estimate(
    settings: LoadSettings,
    gpus: Sequence[GpuInfo],
    cpu: CpuInfo | None = None,
    *,
    spread: bool = False,
) -> Estimate:
    """Place the layers of the model at ``settings.model_path``, loaded with ``settings``,
    on ``gpus`` (their free memory as given) and the CPU; ``spread`` is
    ``OLLAMA_SCHED_SPREAD`` (every GPU with room, even when one would do)."""
    layout = model_layout(settings.model_path)
    kv_layers = _kv_layer_bytes(layout, settings)
    layers = layout.block_count + 1
    batch = min(settings.batch_size, _cells(settings))
    attention = _attention_graph(layout, settings, on_cpu=True)
    # what llama.cpp reserves for its compute graph, allocated whole on a GPU
    gpu_graph = max(
        _attention_graph(layout, settings, on_cpu=False), _logits_graph(layout, settings, batch)
    )
    wanted = layers if settings.num_gpu < 0 else min(settings.num_gpu, layers)
    placement = _place(layout, kv_layers, gpus, gpu_graph, wanted, spread)
    on_gpu = sum(placement.counts)
    offloaded = _offloaded_layers(layout.block_count, on_gpu)
    cpu_layer_weights = sum(b for i, b in enumerate(layout.layer_bytes) if i not in offloaded)
    cpu_kv = sum(b for i, b in enumerate(kv_layers) if i not in offloaded)
    output_on_cpu = on_gpu <= layout.block_count
    cpu_weights = (
        cpu_layer_weights
        + layout.token_embd_bytes
        + layout.other_bytes
        + (
            layout.output_bytes - (layout.token_embd_bytes if layout.tied_output else 0)
            if output_on_cpu
            else 0
        )
    )
    if _cpu_repacks(cpu) and on_gpu == 0:
        cpu_weights += layout.repacked_bytes
    # The CPU computes what stays on it: a chunk's attention while any layer is here, and
    # the logit rows of one decode step (one per slot) while the output layer is.
    cpu_graph = (attention if on_gpu < layout.block_count else 0) + (
        _logits_graph(layout, settings, max(settings.num_parallel, 1)) if output_on_cpu else 0
    )
    vocab = _VOCAB_BYTES_PER_TOKEN * layout.n_vocab
    ram = RUNNER_OVERHEAD_BYTES + vocab + cpu_weights + cpu_kv + cpu_graph
    placed = Estimate(
        layers=layers,
        gpu_layers=on_gpu,
        gpu_ids=tuple(g.id for g, n in zip(placement.gpus, placement.counts, strict=True) if n),
        tensor_split=tuple(n for n in placement.counts if n),
        gpu_bytes=tuple(b for b, n in zip(placement.bytes, placement.counts, strict=True) if n),
        ram_bytes=ram,
        weights_bytes=layout.weights_bytes,
        kv_bytes=sum(kv_layers),
        graph_bytes=gpu_graph,
        notes=placement.notes,
    )
    return _with_projector(_with_draft(placed, settings, cpu), settings)


@functools.lru_cache(maxsize=16)
def projector_bytes(path: str) -> tuple[int, int]:
    """A vision projector's ``(weights, encode graph)`` bytes.

    The graph is one image through the ViT: the attention scores of one head group
    (``4 x heads x patches^2``), a block's activations (``4 x patches x (4 x width + ffn)``),
    the picture as floats and its patches unfolded (``im2col``), as clip.cpp allocates them.
    """
    info = read_gguf(path)
    weights = sum(t.n_bytes for t in info.tensors)
    meta = info.metadata
    side = _int(meta.get("clip.vision.image_size"), 0)
    patch = max(_int(meta.get("clip.vision.patch_size"), 1), 1)
    width = _int(meta.get("clip.vision.embedding_length"), 0)
    ffn = _int(meta.get("clip.vision.feed_forward_length"), 0)
    heads = _int(meta.get("clip.vision.attention.head_count"), 0)
    patches = (side // patch) ** 2 + 1
    graph = (
        4 * (heads * patches * patches + patches * (4 * width + ffn) + 3 * side * side)
        + 4 * patches * 3 * patch * patch
    )
    return weights, graph


def _with_projector(placed: Estimate, settings: LoadSettings) -> Estimate:
    """A vision model's projector: its weights and encode graph, on the first GPU when the
    model uses one (the runner puts it there), else in system memory."""
    if not settings.projector:
        return placed
    weights, graph = projector_bytes(settings.projector)
    placed = replace(placed, weights_bytes=placed.weights_bytes + weights)
    if placed.gpu_layers > 0 and placed.gpu_bytes:
        first = placed.gpu_bytes[0] + weights + graph
        return replace(placed, gpu_bytes=(first, *placed.gpu_bytes[1:]))
    return replace(placed, ram_bytes=placed.ram_bytes + weights + graph)


def _with_draft(placed: Estimate, settings: LoadSettings, cpu: CpuInfo | None) -> Estimate:
    """A draft model (speculative decoding) beside the model: its weights, KV cache and
    graph with the same context and slots, where the runner puts it (whole on the GPU when
    the model uses one, else in system memory)."""
    if not settings.draft_path:
        return placed
    alone = replace(settings, model_path=settings.draft_path, draft_path=None, num_gpu=0)
    draft = estimate(alone, (), cpu)
    extra = draft.ram_bytes - RUNNER_OVERHEAD_BYTES
    placed = replace(
        placed,
        weights_bytes=placed.weights_bytes + draft.weights_bytes,
        kv_bytes=placed.kv_bytes + draft.kv_bytes,
    )
    if placed.gpu_layers > 0 and placed.gpu_bytes:
        return replace(placed, gpu_bytes=(placed.gpu_bytes[0] + extra, *placed.gpu_bytes[1:]))
    return replace(placed, ram_bytes=placed.ram_bytes + extra)


def _offloaded_layers(block_count: int, gpu_layers: int) -> set[int]:
    """Which repeating layers llama.cpp puts on GPUs for ``n_gpu_layers``: the last ones."""
    count = min(gpu_layers, block_count)
    return set(range(block_count - count, block_count))


@dataclass(frozen=True, slots=True)
class _Placement:
    gpus: tuple[GpuInfo, ...]
    counts: tuple[int, ...]
    bytes: tuple[int, ...]
    notes: tuple[str, ...] = ()


def _place(
    layout: ModelLayout,
    kv_layers: Sequence[int],
    gpus: Sequence[GpuInfo],
    graph: int,
    wanted: int,
    spread: bool,
) -> _Placement:
    if not gpus or wanted <= 0:
        return _Placement((), (), ())
    blocks = layout.block_count
    # Offload order: last repeating layer first, then backwards; the output layer is the
    # (blocks+1)-th and goes only after every repeating layer.
    sizes = [
        layout.layer_bytes[i] + (kv_layers[i] if i < len(kv_layers) else 0)
        for i in reversed(range(blocks))
    ]
    sizes.append(layout.output_bytes)
    sizes = sizes[:wanted]
    largest = max(sizes, default=0)
    usable = [g for g in gpus if g.usable_bytes >= graph + 2 * largest]
    notes: list[str] = [
        f"GPU {g.id} skipped: {g.usable_bytes // MiB} MiB usable, needs"
        f" {(graph + 2 * largest) // MiB} MiB for the graph and two layers"
        for g in gpus
        if g not in usable
    ]
    if not usable:
        return _Placement((), (), (), tuple(notes))
    if not spread:
        whole = sum(sizes) + graph
        best = max(usable, key=lambda g: g.usable_bytes)
        if best.usable_bytes >= whole:
            usable = [best]
    ordered = sorted(usable, key=lambda g: g.index)
    counts = [0] * len(ordered)
    used = [graph] * len(ordered)
    for size in sizes:
        # the GPU with the most room left takes the next layer (proportional spreading)
        room = [g.usable_bytes - u for g, u in zip(ordered, used, strict=True)]
        index = max(range(len(ordered)), key=lambda i: room[i])
        if room[index] < size:
            break
        counts[index] += 1
        used[index] += size
    total = [
        u + g.minimum_bytes + g.overhead_bytes if n else 0
        for g, u, n in zip(ordered, used, counts, strict=True)
    ]
    return _Placement(tuple(ordered), tuple(counts), tuple(total), tuple(notes))


# ---- decisions built on it -----------------------------------------------------------


def fits(plan: Estimate, system: SystemInfo, *, wanted_gpu_layers: int = -1) -> bool:
    """Whether ``plan`` runs here as well as it can: its system memory is free, and on a
    machine with GPUs every layer (or the ``num_gpu`` asked for) is on one."""
    if plan.ram_bytes > system.memory.free_bytes:
        return False
    if not system.gpus or wanted_gpu_layers == 0:
        return True
    if wanted_gpu_layers > 0:
        return plan.gpu_layers >= min(wanted_gpu_layers, plan.layers)
    return plan.fully_offloaded


def auto_parallel(settings: LoadSettings, system: SystemInfo, *, spread: bool = False) -> int:
    """Ollama's rule: 4 parallel requests where memory allows it (with a fifth to spare),
    else 1."""
    four = estimate(replace(settings, num_parallel=4), system.gpus, system.cpu, spread=spread)
    roomy = replace(
        system, memory=replace(system.memory, free_bytes=int(system.memory.free_bytes * 0.8))
    )
    return 4 if fits(four, roomy, wanted_gpu_layers=settings.num_gpu) else 1
