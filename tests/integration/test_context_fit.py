"""A context that fits an agent's request, on a real server with the bundled models: a long
prompt loads gemma3:270m (trained for 32768) with a longer context instead of cutting it,
smollm2:135m (8192) cuts a longer one with a warning, ``truncate``/``shift`` false, and
Anthropic's ``stop_sequence``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import ServerProcess, started

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]  # long prefills on busy cores

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
TIMEOUT = 900  # a prefill of 8k tokens on two shared cores


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with started(tmp_path_factory.mktemp("context"), OLLAMA_NUM_PARALLEL="1") as proc:
        for name in (SMOL, GEMMA):
            pulled = httpx.post(
                proc.url + "/api/pull", json={"model": name, "stream": False}, timeout=300
            )
            assert pulled.status_code == 200, pulled.text
        yield proc


def facts(count: int, topic: str) -> str:
    """``count`` short distinct sentences (about 12 tokens each), so no prefix is shared
    between two topics."""
    return " ".join(
        f"{topic} fact {i}: the number {i} is {('odd', 'even')[i % 2]}." for i in range(count)
    )


def ps_context(server: ServerProcess, name: str) -> int:
    models = httpx.get(server.url + "/api/ps").json()["models"]
    return next(int(m["context_length"]) for m in models if m["name"] == name)


def post(server: ServerProcess, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=TIMEOUT, headers=headers)


def log_text(server: ServerProcess) -> str:
    return Path(server.log_path).read_text(errors="replace")


def test_a_long_chat_loads_gemma_with_a_longer_context(server: ServerProcess) -> None:
    system = facts(420, "Alpha")  # about 6700 Gemma tokens (a token per digit)
    response = post(
        server,
        "/api/chat",
        {
            "model": GEMMA,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": "Is 3 odd? Answer yes or no."},
            ],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 8},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prompt_eval_count"] > 6000  # the whole prompt, not 4096
    assert ps_context(server, GEMMA) >= 8192
    assert "does not fit its context" not in log_text(server)


def test_a_long_anthropic_request_is_answered_whole(server: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        message = client.messages.create(
            model=GEMMA,
            max_tokens=8,
            system=facts(450, "Beta"),  # another prefix: nothing comes from the cache
            messages=[{"role": "user", "content": "Is 4 even? Answer yes or no."}],
            extra_body={"temperature": 0},
            timeout=TIMEOUT,
        )
    assert message.usage.input_tokens > 6000
    assert ps_context(server, GEMMA) >= 8192


def test_a_prompt_beyond_smollm2s_training_length_is_cut_with_a_warning(
    server: ServerProcess,
) -> None:
    turns: list[dict[str, str]] = []
    for i in range(16):  # about 20000 tokens in all
        turns.append({"role": "user", "content": facts(100, f"Topic{i}")})
        turns.append({"role": "assistant", "content": "Noted."})
    turns.append({"role": "user", "content": "Say OK."})
    response = post(
        server,
        "/api/chat",
        {
            "model": SMOL,
            "messages": turns,
            "stream": False,
            "options": {"temperature": 0, "num_predict": 4},
        },
    )
    assert response.status_code == 200, response.text
    assert 0 < response.json()["prompt_eval_count"] <= 8192
    assert ps_context(server, SMOL) == 8192  # grown to its training length, no further
    assert f"the chat for {SMOL} does not fit its context (num_ctx 8192)" in log_text(server)


def test_truncate_false_is_a_400_for_a_prompt_over_the_context(server: ServerProcess) -> None:
    body = {
        "model": SMOL,
        "prompt": facts(900, "Gamma"),  # about 11000 tokens: more than 8192
        "stream": False,
        "truncate": False,
        "options": {"num_predict": 4},
    }
    refused = post(server, "/api/generate", body)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    chat = post(
        server,
        "/api/chat",
        {
            "model": SMOL,
            "messages": [{"role": "user", "content": body["prompt"]}],
            "stream": False,
            "truncate": False,
        },
    )
    assert chat.status_code == 400
    assert chat.json()["error"] == "the input length exceeds the context length"
    shift = post(server, "/api/generate", {**body, "truncate": True, "shift": False})
    assert shift.status_code == 400
    assert shift.json()["error"].startswith("the prompt is longer than the context length")


def test_shift_false_ends_the_answer_at_a_full_context(server: ServerProcess) -> None:
    # a smaller num_ctx than loaded is served by the loaded runner: unload it first
    unloaded = post(server, "/api/generate", {"model": SMOL, "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload"
    body = {
        "model": SMOL,
        "prompt": "Count from 1 to 500, separated by commas: 1, 2, 3,",
        "raw": True,
        "stream": False,
        "shift": False,
        "options": {"temperature": 0, "num_predict": 150, "num_ctx": 64},
    }
    stopped = post(server, "/api/generate", body).json()
    assert stopped["done_reason"] == "length"
    # a full context: 64 tokens in it, and the last token sampled that had no room left
    assert stopped["prompt_eval_count"] + stopped["eval_count"] == 64 + 1
    shifted = post(server, "/api/generate", {**body, "shift": True}).json()
    assert shifted["eval_count"] > stopped["eval_count"]


def test_anthropic_names_the_stop_sequence(server: ServerProcess) -> None:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0) as client:
        kwargs: dict[str, Any] = {
            "model": SMOL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
            "stop_sequences": ["zzz", "e"],
            "extra_body": {"temperature": 0},
        }
        message = client.messages.create(**kwargs)
        assert message.stop_reason == "stop_sequence"
        assert message.stop_sequence == "e"
        text = "".join(block.text for block in message.content if block.type == "text")
        assert "e" not in text
        with client.messages.stream(**kwargs) as stream:
            events = list(stream)
            final = stream.get_final_message()
        deltas = [e for e in events if e.type == "message_delta"]
        assert [d.delta.stop_reason for d in deltas] == ["stop_sequence"]
        assert deltas[0].delta.stop_sequence == "e"
        assert final.stop_sequence == "e"
        plain = client.messages.create(**{**kwargs, "stop_sequences": ["qqqq"]})
        assert plain.stop_reason in {"end_turn", "max_tokens"}
        assert plain.stop_sequence is None
    # and Ollama's chat chunks never carry it
    chat = post(
        server,
        "/api/chat",
        {
            "model": SMOL,
            "messages": [{"role": "user", "content": "Describe the sea in one sentence."}],
            "stream": False,
            "options": {"temperature": 0, "stop": ["e"]},
        },
    ).json()
    assert chat["done_reason"] == "stop" and "stop_sequence" not in chat
