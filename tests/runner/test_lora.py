"""LoRA adapters in the engine and the runner process, on a tiny random Llama and LoRAs.

A LoRA with non-zero B matrices must change greedy generation; one whose B matrices are zero
must leave every token and every logprob exactly as the base gives them (llama.cpp adds a
zero product). A file llama.cpp refuses fails the load with a message naming it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.errors import RunnerError
from corral.runner.client import RunnerClient
from corral.runner.engine import Engine, LoadError, Task
from corral.runner.settings import LoadSettings
from tests.runner.tiny_lora import write_tiny_base, write_tiny_lora

pytestmark = pytest.mark.model

PROMPT = "hello world, hello"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lora")
    base = write_tiny_base(folder)
    return {
        "base": base,
        "lora": write_tiny_lora(folder / "lora.gguf", base),
        "zero": write_tiny_lora(folder / "zero.gguf", base, zero_b=True),
        "bad": write_tiny_lora(folder / "bad.gguf", base, wrong_shape=True),
    }


def _generate(base: Path, adapters: Sequence[Path]) -> dict[str, Any]:
    """Greedy tokens and logprobs of PROMPT, on a fresh engine with ``adapters``."""
    engine = Engine(
        LoadSettings(
            model_path=str(base),
            num_ctx=128,
            adapters=tuple(str(a) for a in adapters),
        )
    )
    engine.load()
    engine.start()
    try:
        finished = threading.Event()
        logprobs: list[float] = []
        final: dict[str, Any] = {}

        def emit(event: dict[str, Any]) -> None:
            logprobs.extend(entry["logprob"] for entry in event.get("logprobs", ()))
            if "done" in event or "error" in event:
                final.update(event)
                finished.set()

        engine.submit(
            Task(
                tokens=engine.tokenize(PROMPT),
                options={"temperature": 0, "num_predict": 8},
                emit=emit,
                return_tokens=True,
                logprobs=0,
            )
        )
        assert finished.wait(60), "generation did not finish"
        assert "error" not in final, final
        return {"tokens": final["tokens"], "logprobs": logprobs}
    finally:
        engine.stop()
        engine.close()


def test_lora_changes_greedy_output_and_zero_lora_does_not(files: dict[str, Path]) -> None:
    base = _generate(files["base"], [])
    adapted = _generate(files["base"], [files["lora"]])
    zero = _generate(files["base"], [files["zero"]])
    assert len(base["tokens"]) > len(_prompt_tokens(files["base"]))
    assert adapted["tokens"] != base["tokens"]
    assert adapted["logprobs"] != base["logprobs"]
    assert zero == base


def _prompt_tokens(base: Path) -> list[int]:
    engine = Engine(LoadSettings(model_path=str(base), num_ctx=32))
    engine.load()
    try:
        return engine.tokenize(PROMPT)
    finally:
        engine.close()


def test_adapter_llama_cpp_refuses_fails_the_load_naming_it(files: dict[str, Path]) -> None:
    engine = Engine(LoadSettings(model_path=str(files["base"]), adapters=(str(files["bad"]),)))
    with pytest.raises(LoadError, match=r"failed to load LoRA adapter '.*bad\.gguf'"):
        engine.load()
    engine.close()  # nothing left to free, and no double free


async def test_runner_process_with_a_bad_adapter_says_why(files: dict[str, Path]) -> None:
    config = LoadSettings(model_path=str(files["base"]), num_ctx=64, adapters=(str(files["bad"]),))
    assert config.argv()[-2:] == ["--lora", str(files["bad"])]
    with pytest.raises(RunnerError) as caught:
        await RunnerClient.start(config, load_timeout=60)
    message = str(caught.value)
    assert "failed to load LoRA adapter" in message and "bad.gguf" in message
    assert "incorrect shape" in message  # llama.cpp's reason, from the runner's log


async def test_runner_process_applies_the_adapter(files: dict[str, Path]) -> None:
    async def greedy(adapters: tuple[str, ...]) -> list[int]:
        runner = await RunnerClient.start(
            LoadSettings(model_path=str(files["base"]), num_ctx=64, adapters=adapters),
            load_timeout=60,
        )
        try:
            payload = {
                "prompt": PROMPT,
                "options": {"temperature": 0, "num_predict": 8},
                "return_tokens": True,
            }
            events = [event async for event in runner.completion(payload)]
            return list(events[-1]["tokens"])
        finally:
            await runner.stop()

    base = await greedy(())
    assert await greedy((str(files["lora"]),)) != base
    assert await greedy((str(files["zero"]),)) == base
