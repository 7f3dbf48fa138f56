"""The one record a runner is loaded with: its arguments read back into an equal record, and
the values it refuses (the scheduler clamps them before they get here)."""

from __future__ import annotations

import argparse

import pytest

from corral.runner.settings import LoadSettings, add_arguments, from_namespace


def read_back(settings: LoadSettings) -> LoadSettings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_namespace(parser.parse_args(settings.argv()))


@pytest.mark.parametrize(
    "settings",
    [
        LoadSettings(model_path="/m/a.gguf"),
        LoadSettings(
            model_path="/m/b.gguf",
            num_ctx=8192,
            num_parallel=4,
            num_batch=256,
            num_thread=3,
            num_gpu=20,
            num_gpu_layers=18,
            main_gpu=1,
            gpu_ids=("GPU-a", "GPU-b"),
            tensor_split=(10, 8),
            use_mmap=False,
            flash_attention=None,
            kv_cache_type="q8_0",
            embedding=True,
            adapters=("/m/l1.gguf", "/m/l2.gguf"),
            verbose=True,
            cpu_lock_path="/tmp/lock",
        ),
        LoadSettings(model_path="/m/c.gguf", flash_attention=True, tensor_split=(0.25, 0.75)),
    ],
)
def test_the_runner_reads_back_the_record_it_was_started_with(settings: LoadSettings) -> None:
    again = read_back(settings)
    assert again == settings
    # the process fields are not compared, but travel too
    assert (again.verbose, again.cpu_lock_path) == (settings.verbose, settings.cpu_lock_path)


def test_num_ctx_travels_as_llama_cpps_ctx_size() -> None:
    args = LoadSettings(model_path="/m/a.gguf", num_ctx=2048, num_parallel=2).argv()
    assert args[args.index("--ctx-size") + 1] == "2048"
    assert args[args.index("--parallel") + 1] == "2"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_ctx": 3}, "num_ctx must be at least 4"),
        ({"num_batch": 0}, "num_batch must be at least 1"),
        ({"num_parallel": -1}, "num_parallel must not be negative"),
    ],
)
def test_values_no_clamping_lets_through_are_refused(values: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoadSettings(model_path="/m/a.gguf", **values)  # type: ignore[arg-type]


def test_a_runner_needs_its_slot_count_decided() -> None:
    automatic = LoadSettings(model_path="/m/a.gguf", num_parallel=0)
    with pytest.raises(ValueError, match="--parallel must be at least 1"):
        read_back(automatic)


def test_the_batch_llama_cpp_gets_holds_a_token_per_slot_and_no_more_than_the_context() -> None:
    def batch(num_batch: int, parallel: int, ctx: int = 4096) -> int:
        settings = LoadSettings("m.gguf", num_ctx=ctx, num_parallel=parallel, num_batch=num_batch)
        return settings.batch_size

    assert batch(512, 4) == 512
    assert [batch(n, 4) for n in (1, 2, 3)] == [4, 4, 4]  # fewer aborted llama.cpp
    assert batch(2**31 - 1, 4) == 4 * 4096  # a huge value became a SIGSEGV
    assert batch(1, 1, ctx=4) == 1
    assert batch(100, 2, ctx=16) == 32
