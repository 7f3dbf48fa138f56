"""Load options at and past llama.cpp's limits answer; no request value crashes a runner.

Before: ``num_batch`` 0-3 with 4 slots (and negatives, 1.5) aborted the runner with
``GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)``, 2147483648 was a SIGSEGV, and 2^63
and 1e308 failed to create a context; the same on /api/chat and /api/embed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def four_slots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("bounds")
    with started(tmp, OLLAMA_NUM_PARALLEL="4") as server:
        for model in ("smollm2:135m", "all-minilm"):
            pulled = httpx.post(
                server.url + "/api/pull", json={"model": model, "stream": False}, timeout=300
            )
            assert pulled.status_code == 200, pulled.text
        yield server


@pytest.mark.parametrize("num_batch", [0, 1, 3, -1, 1.5, 2147483648, 2**63 - 1, 1e308])
def test_generate_answers_whatever_num_batch(four_slots: ServerProcess, num_batch: float) -> None:
    body = {
        "model": "smollm2:135m",
        "prompt": "Say hi",
        "stream": False,
        "options": {"num_batch": num_batch, "num_predict": 3, "num_thread": 2**31},
    }
    response = httpx.post(four_slots.url + "/api/generate", json=body, timeout=120)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:  # refused with a reason, never a crash
        assert "num_batch" in response.json()["error"]
    else:
        assert response.json()["done"] is True
    assert "GGML_ASSERT" not in four_slots.log_path.read_text()


@pytest.mark.parametrize("num_batch", [2, 2147483648])
def test_chat_and_embed_answer_whatever_num_batch(
    four_slots: ServerProcess, num_batch: int
) -> None:
    chat = httpx.post(
        four_slots.url + "/api/chat",
        json={
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
            "options": {"num_batch": num_batch, "num_predict": 2},
        },
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    embed = httpx.post(
        four_slots.url + "/api/embed",
        json={"model": "all-minilm", "input": ["a", "b"], "options": {"num_batch": num_batch}},
        timeout=120,
    )
    assert embed.status_code == 200, embed.text
    assert len(embed.json()["embeddings"]) == 2
    assert "stopped unexpectedly" not in four_slots.log_path.read_text()
