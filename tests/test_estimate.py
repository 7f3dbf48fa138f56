"""The memory estimator: tiny GGUF files with known sizes, layer placement on fake GPUs, and
the bundled models' KV cache and compute graph against what llama.cpp itself allocates."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gguf
import numpy as np
import pytest

from corral.catalog.bundled import find_bundled, pull_bundled
from corral.errors import CatalogError
from corral.estimate import (
    RUNNER_OVERHEAD_BYTES,
    Estimate,
    auto_parallel,
    estimate,
    fits,
    layout_of,
    model_layout,
)
from corral.gguf import read_gguf
from corral.hardware import MINIMUM_GPU_BYTES, CpuInfo, GpuInfo, SystemInfo, SystemMemory
from corral.runner.settings import LoadSettings
from corral.store import ModelStore
from corral.store.names import Name

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCKS, EMBD, HEADS, KV_HEADS, FF, VOCAB = 4, 64, 4, 2, 128, 100
HEAD_DIM = EMBD // HEADS
CPU = CpuInfo("test", 4, 4, 4.0, ())  # no AVX2: nothing repacked


def tensor(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def layer_tensors() -> dict[str, np.ndarray]:
    return {
        "attn_norm.weight": tensor(EMBD),
        "attn_q.weight": tensor(EMBD, EMBD),
        "attn_k.weight": tensor(KV_HEADS * HEAD_DIM, EMBD),
        "attn_v.weight": tensor(KV_HEADS * HEAD_DIM, EMBD),
        "attn_output.weight": tensor(EMBD, EMBD),
        "ffn_norm.weight": tensor(EMBD),
        "ffn_gate.weight": tensor(FF, EMBD),
        "ffn_up.weight": tensor(FF, EMBD),
        "ffn_down.weight": tensor(EMBD, FF),
    }


LAYER_BYTES = sum(t.nbytes for t in layer_tensors().values())
EMBD_BYTES = VOCAB * EMBD * 4
NORM_BYTES = EMBD * 4


def write_model(path: Path, *, tied: bool = False) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", BLOCKS)
    writer.add_uint32("llama.embedding_length", EMBD)
    writer.add_uint32("llama.attention.head_count", HEADS)
    writer.add_uint32("llama.attention.head_count_kv", KV_HEADS)
    writer.add_uint32("llama.feed_forward_length", FF)
    writer.add_uint32("llama.context_length", 4096)
    writer.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(VOCAB)])
    writer.add_tensor("token_embd.weight", tensor(VOCAB, EMBD))
    for block in range(BLOCKS):
        for name, value in layer_tensors().items():
            writer.add_tensor(f"blk.{block}.{name}", value)
    writer.add_tensor("output_norm.weight", tensor(EMBD))
    if not tied:
        writer.add_tensor("output.weight", tensor(VOCAB, EMBD))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    return str(write_model(tmp_path / "tiny.gguf"))


def gpu(index: int, free_mib: float, total_mib: float = 0) -> GpuInfo:
    free = int(free_mib * MiB) + MINIMUM_GPU_BYTES
    return GpuInfo(
        id=f"GPU-{index}",
        index=index,
        name=f"fake {index}",
        compute="8.6",
        driver="12.4",
        total_bytes=int(total_mib * MiB) or free,
        free_bytes=free,
    )


def machine(*gpus: GpuInfo, free: int = 64 * GiB) -> SystemInfo:
    return SystemInfo(gpus=gpus, cpu=CPU, memory=SystemMemory(free * 2, free))


# ---- the model's numbers -------------------------------------------------------------------


def test_layout_of_an_untied_model(tiny: str) -> None:
    layout = layout_of(read_gguf(tiny))
    assert layout.block_count == BLOCKS
    assert layout.layer_bytes == (LAYER_BYTES,) * BLOCKS
    assert layout.output_bytes == NORM_BYTES + EMBD_BYTES
    assert layout.token_embd_bytes == EMBD_BYTES
    assert not layout.tied_output
    assert layout.kv_elements_per_cell == (KV_HEADS * 2 * HEAD_DIM,) * BLOCKS
    assert (layout.n_embd, layout.n_head, layout.n_ff, layout.n_vocab) == (EMBD, HEADS, FF, VOCAB)
    assert layout.weights_bytes == BLOCKS * LAYER_BYTES + 2 * EMBD_BYTES + NORM_BYTES


def test_tied_embeddings_stand_in_for_the_output_layer(tmp_path: Path) -> None:
    layout = layout_of(read_gguf(write_model(tmp_path / "tied.gguf", tied=True)))
    assert layout.tied_output
    assert layout.output_bytes == NORM_BYTES + EMBD_BYTES  # copied to a GPU with the output


def test_kv_cache_is_padded_per_slot_and_typed(tiny: str) -> None:
    per_cell = BLOCKS * KV_HEADS * 2 * HEAD_DIM
    plan = estimate(LoadSettings(tiny, num_ctx=300, num_parallel=2), (), CPU)
    assert plan.kv_bytes == per_cell * 512 * 2 * 2  # 300 -> 512 cells, 2 slots, f16
    q8 = estimate(LoadSettings(tiny, num_ctx=512, kv_cache_type="q8_0"), (), CPU)
    assert q8.kv_bytes == int(per_cell * 512 * 34 / 32)


def test_cpu_estimate_adds_up(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512, num_parallel=1, num_batch=512, flash_attention=False)
    plan = estimate(request, (), CPU)
    assert plan.gpu_layers == 0 and plan.vram_bytes == 0 and plan.layers == BLOCKS + 1
    scores = 512 * 512 * (4 * (HEADS + 1) + 2 * HEADS)
    activations = 4 * 512 * (3 * EMBD + FF)
    logits = 4 * 1 * (VOCAB + 3 * EMBD)  # without flash attention
    weights = BLOCKS * LAYER_BYTES + EMBD_BYTES + NORM_BYTES + EMBD_BYTES
    expected = (
        RUNNER_OVERHEAD_BYTES
        + 128 * VOCAB
        + weights
        + plan.kv_bytes
        + scores
        + activations
        + logits
    )
    assert plan.ram_bytes == expected


def test_estimates_grow_with_context_and_slots(tiny: str) -> None:
    sizes = [
        estimate(LoadSettings(tiny, num_ctx=ctx, num_parallel=par), (), CPU).ram_bytes
        for ctx, par in ((512, 1), (2048, 1), (2048, 4))
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_flash_attention_needs_less_graph(tiny: str) -> None:
    plain = estimate(LoadSettings(tiny, num_ctx=4096, flash_attention=False), (), CPU)
    flash = estimate(LoadSettings(tiny, num_ctx=4096, flash_attention=True), (), CPU)
    assert flash.ram_bytes < plain.ram_bytes


# ---- placement ---------------------------------------------------------------------------


def room(request: LoadSettings, share: float) -> float:
    """MiB of GPU room for the compute graph and ``share`` of every layer (output included)."""
    plan = estimate(request, (gpu(0, 100_000),), CPU)
    assert plan.fully_offloaded
    layers = plan.vram_bytes - MINIMUM_GPU_BYTES - plan.graph_bytes
    return (plan.graph_bytes + share * layers) / MiB


def test_a_gpu_with_room_takes_every_layer(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512)
    plan = estimate(request, (gpu(0, 100_000),), CPU)
    assert plan.gpu_layers == BLOCKS + 1 and plan.fully_offloaded
    assert plan.gpu_ids == ("GPU-0",) and plan.tensor_split == (BLOCKS + 1,)
    cpu_only = estimate(request, (), CPU)
    # weights and KV left system memory; only token_embd, the runner and a few logits stay
    assert plan.ram_bytes < cpu_only.ram_bytes - BLOCKS * LAYER_BYTES - cpu_only.kv_bytes // 2
    assert plan.vram_bytes > BLOCKS * LAYER_BYTES + MINIMUM_GPU_BYTES


def test_a_small_gpu_takes_the_last_layers_only(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512)
    graph = estimate(request, (), CPU).graph_bytes
    kv_layer = estimate(request, (), CPU).kv_bytes // BLOCKS
    room = graph + 2.5 * (LAYER_BYTES + kv_layer)  # two layers fit, not three
    plan = estimate(request, (gpu(0, room / MiB),), CPU)
    assert plan.gpu_layers == 2 and not plan.fully_offloaded
    cpu_only = estimate(request, (), CPU)
    assert cpu_only.ram_bytes - plan.ram_bytes == 2 * (LAYER_BYTES + kv_layer)


def test_a_gpu_without_room_for_the_graph_is_skipped(tiny: str) -> None:
    plan = estimate(LoadSettings(tiny, num_ctx=512), (gpu(0, 0.01),), CPU)
    assert plan.gpu_layers == 0 and plan.gpu_ids == ()
    assert plan.notes and "GPU-0 skipped" in plan.notes[0]


def test_a_model_that_fits_one_gpu_goes_to_the_roomiest(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512)
    plan = estimate(request, (gpu(0, room(request, 1.5)), gpu(1, room(request, 3))))
    assert plan.gpu_ids == ("GPU-1",) and plan.tensor_split == (BLOCKS + 1,)
    both = (gpu(0, room(request, 3)), gpu(1, room(request, 3)))
    spread = estimate(request, both, spread=True)
    assert spread.gpu_ids == ("GPU-0", "GPU-1") and sum(spread.tensor_split) == BLOCKS + 1


def test_a_model_too_big_for_one_gpu_is_split_across_two(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512)
    half = room(request, 0.7)
    plan = estimate(request, (gpu(0, half), gpu(1, half)), CPU)
    assert plan.fully_offloaded
    assert plan.gpu_ids == ("GPU-0", "GPU-1")
    assert sorted(plan.tensor_split) == [2, 3]
    assert all(b > MINIMUM_GPU_BYTES for b in plan.gpu_bytes)


@pytest.mark.parametrize(("num_gpu", "expected"), [(0, 0), (1, 1), (3, 3), (99, BLOCKS + 1)])
def test_num_gpu_caps_the_layers(tiny: str, num_gpu: int, expected: int) -> None:
    plan = estimate(LoadSettings(tiny, num_ctx=512, num_gpu=num_gpu), (gpu(0, 100_000),), CPU)
    assert plan.gpu_layers == expected


def test_placement_table_over_one_and_two_gpus(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=512)
    table = [
        # (free MiB of each GPU as a share of the whole model) -> layers on each GPU
        ((2.0,), (5,)),
        ((0.01,), ()),
        ((2.0, 0.5), (5,)),
        ((0.5, 2.0), (5,)),
        ((0.6, 0.6), (3, 2)),
    ]
    for shares, split in table:
        gpus = tuple(gpu(i, room(request, share)) for i, share in enumerate(shares))
        plan = estimate(request, gpus, CPU)
        assert tuple(sorted(plan.tensor_split, reverse=True)) == split, shares


# ---- decisions -------------------------------------------------------------------------------


def test_fits() -> None:
    cpu_plan = Estimate.on_cpu(2 * GiB)
    assert fits(cpu_plan, machine(free=4 * GiB))
    assert not fits(cpu_plan, machine(free=1 * GiB))
    partial = Estimate(layers=10, gpu_layers=6, gpu_ids=("GPU-0",), ram_bytes=GiB)
    full = replace(partial, gpu_layers=10)
    with_gpu = machine(gpu(0, 1000))
    assert fits(full, with_gpu) and not fits(partial, with_gpu)
    assert fits(partial, with_gpu, wanted_gpu_layers=6)
    assert fits(partial, with_gpu, wanted_gpu_layers=0)


def test_auto_parallel_follows_memory(tiny: str) -> None:
    request = LoadSettings(tiny, num_ctx=2048)
    assert auto_parallel(request, machine(free=64 * GiB)) == 4
    one = estimate(request, (), CPU).ram_bytes
    assert auto_parallel(request, machine(free=int(one * 1.1))) == 1


# ---- the bundled models against llama.cpp ----------------------------------------------------


@pytest.fixture(scope="module")
def bundled_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    return ModelStore(tmp_path_factory.mktemp("estimate-store"))


def bundled_path(store: ModelStore, name: str) -> str:
    """The GGUF of a bundled model, imported into ``store`` as a pull would."""
    parsed = Name.parse(name)
    model = find_bundled(parsed)
    assert model is not None
    path = store.blob_path(f"sha256:{model.sha256}")
    if not path.exists():
        try:
            pull_bundled(store, parsed, model, lambda _progress: None)
        except CatalogError as exc:
            pytest.skip(str(exc))
    return str(path)


def _llama_cpp_buffers(path: str, num_ctx: int, parallel: int) -> tuple[float, float]:
    """KV and compute buffer sizes (MiB) from llama.cpp's own load log of a real runner."""
    command = [sys.executable, "-m", "corral.runner", "--model", path, "--verbose"]
    command += ["--ctx-size", str(num_ctx), "--parallel", str(parallel)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()  # the greeting: loaded
        # closing stdin (communicate does) is the runner's signal that its parent is gone
        _out, log = process.communicate(timeout=60)
    kv = sum(float(m) for m in re.findall(r"CPU KV buffer size =\s+([\d.]+) MiB", log))
    compute = re.findall(r"CPU compute buffer size =\s+([\d.]+) MiB", log)
    assert kv and compute, log[-2000:]
    return kv, float(compute[-1])


@pytest.mark.model
@pytest.mark.parametrize(
    ("name", "num_ctx", "parallel"),
    [("smollm2:135m", 2048, 1), ("smollm2:135m", 8192, 4), ("gemma3:270m", 4096, 2)],
)
def test_kv_and_graph_match_what_llama_cpp_allocates(
    bundled_store: ModelStore, name: str, num_ctx: int, parallel: int
) -> None:
    path = bundled_path(bundled_store, name)
    plan = estimate(LoadSettings(path, num_ctx=num_ctx, num_parallel=parallel), ())
    kv_mib, compute_mib = _llama_cpp_buffers(path, num_ctx, parallel)
    assert plan.kv_bytes / MiB == pytest.approx(kv_mib, abs=0.01)
    # with flash attention (llama.cpp's auto) its allocator adds a few MiB at some sizes
    assert plan.graph_bytes / MiB == pytest.approx(compute_mib, rel=0.05)
    assert model_layout(path).weights_bytes <= Path(path).stat().st_size
