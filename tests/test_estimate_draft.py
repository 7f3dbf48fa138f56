"""The memory estimate counts a draft model (speculative decoding) beside its model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from corral.estimate import RUNNER_OVERHEAD_BYTES, estimate
from corral.runner.settings import LoadSettings
from tests.test_estimate import gpu, write_model


def test_a_draft_adds_its_weights_kv_and_graph(tmp_path: Path) -> None:
    model = str(write_model(tmp_path / "model.gguf"))
    draft = str(write_model(tmp_path / "draft.gguf", tied=True))
    plain = LoadSettings(model_path=model, num_ctx=512, num_parallel=2)
    drafted = replace(plain, draft_path=draft)
    alone = estimate(replace(plain, model_path=draft), ())
    base = estimate(plain, ())
    with_draft = estimate(drafted, ())
    assert with_draft.ram_bytes == base.ram_bytes + alone.ram_bytes - RUNNER_OVERHEAD_BYTES
    assert with_draft.weights_bytes == base.weights_bytes + alone.weights_bytes
    assert with_draft.kv_bytes == base.kv_bytes + alone.kv_bytes
    # with the model on a GPU, the draft goes there whole
    on_gpu = estimate(drafted, [gpu(0, 8 * 1024)])
    gpu_only = estimate(plain, [gpu(0, 8 * 1024)])
    assert on_gpu.gpu_layers == gpu_only.gpu_layers > 0
    assert on_gpu.vram_bytes == gpu_only.vram_bytes + alone.ram_bytes - RUNNER_OVERHEAD_BYTES
    assert on_gpu.ram_bytes == gpu_only.ram_bytes
