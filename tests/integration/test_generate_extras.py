"""``/api/generate`` beyond a plain prompt: suffix (fill-in-the-middle), ``context`` round
trips, per-request ``template``/``system``, and the 400s of bad ``context`` and ``images``.

Each behaviour is checked by equality under greedy decoding: the request under test must
answer exactly what a ``raw`` request with the prompt it should have built answers.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.model

MODEL = "smollm2:135m"
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 10}
FIM_TEMPLATE = (
    "{{- if .Suffix }}<|im_start|>user\nComplete the middle.\nBefore: {{ .Prompt }}\n"
    "After: {{ .Suffix }}<|im_end|>\n<|im_start|>assistant\n"
    "{{ else }}{{ .Prompt }}{{ end }}"
)


def _generate(server: ServerProcess, **body: Any) -> dict[str, Any]:
    body.setdefault("options", GREEDY)
    response = httpx.post(server.url + "/api/generate", json={"stream": False, **body}, timeout=120)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _create(server: ServerProcess, body: dict[str, Any]) -> None:
    response = httpx.post(server.url + "/api/create", json={"stream": False, **body}, timeout=120)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def fim(server: ServerProcess, smollm2: str) -> str:
    _create(server, {"model": "fim", "from": smollm2, "template": FIM_TEMPLATE})
    return "fim"


@pytest.fixture(scope="module")
def plain(server: ServerProcess, smollm2: str) -> str:
    """smollm2 with a template that is the prompt itself: generate prompts are exact text."""
    _create(server, {"model": "plain", "from": smollm2, "template": "{{ .Prompt }}"})
    return "plain"


def test_suffix_fills_the_middle_through_the_template(server: ServerProcess, fim: str) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": fim}).json()
    assert "insert" in shown["capabilities"]
    prefix, suffix = "def add(a, b):\n", "\n    return total\n"
    answer = _generate(server, model=fim, prompt=prefix, suffix=suffix)
    expected_prompt = (
        f"<|im_start|>user\nComplete the middle.\nBefore: {prefix}\nAfter: {suffix}"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    raw = _generate(server, model=fim, prompt=expected_prompt, raw=True)
    assert answer["response"] and answer["response"] == raw["response"]
    without = _generate(server, model=fim, prompt=prefix)  # no suffix: the else branch
    assert without["response"] == _generate(server, model=fim, prompt=prefix, raw=True)["response"]
    # the same through /v1/completions
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
        completion = client.completions.create(
            model=fim, prompt=prefix, suffix=suffix, max_tokens=10, temperature=0, seed=1
        )
    assert completion.choices[0].text == answer["response"]


def test_suffix_without_insert_support_is_ollamas_400(server: ServerProcess, smollm2: str) -> None:
    response = httpx.post(
        server.url + "/api/generate",
        json={"model": smollm2, "prompt": "def f():", "suffix": "return 1", "stream": False},
    )
    assert response.status_code == 400
    assert response.json()["error"] == (
        "registry.ollama.ai/library/smollm2:135m does not support insert"
    )
    assert httpx.get(server.url + "/api/version").status_code == 200


def test_context_round_trip_continues_the_conversation(server: ServerProcess, plain: str) -> None:
    first_prompt, second_prompt = "My cat is called Tom. My cat is called", " Again, my cat is"
    first = _generate(server, model=plain, prompt=first_prompt)
    context = first["context"]
    assert isinstance(context, list) and all(isinstance(t, int) for t in context)
    assert len(context) >= first["eval_count"] + 5
    second = _generate(server, model=plain, prompt=second_prompt, context=context)
    assert second["context"][: len(context)] == context  # the same tokens, continued
    # the continuation is exactly the raw text of the whole exchange
    whole = first_prompt + first["response"] + second_prompt
    raw = _generate(server, model=plain, prompt=whole, raw=True)
    assert second["response"] == raw["response"]
    assert "context" not in raw  # raw answers carry no context, as Ollama


def test_template_and_system_overrides(server: ServerProcess, smollm2: str) -> None:
    overridden = _generate(
        server,
        model=smollm2,
        prompt="Say hello.",
        system="You are a pirate.",
        template="{{ .System }}\n---\n{{ .Prompt }}\n",
    )
    raw = _generate(server, model=smollm2, prompt="You are a pirate.\n---\nSay hello.\n", raw=True)
    assert overridden["response"] and overridden["response"] == raw["response"]
    # a system override alone goes through the model's own template, as a chat would
    with_system = _generate(server, model=smollm2, prompt="Say hello.", system="Be brief.")
    chat = httpx.post(
        server.url + "/api/chat",
        json={
            "model": smollm2,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello."},
            ],
            "options": GREEDY,
            "stream": False,
        },
        timeout=120,
    ).json()
    assert with_system["response"] == chat["message"]["content"]
    plain_answer = _generate(server, model=smollm2, prompt="Say hello.")
    assert plain_answer["context"] != with_system["context"]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ([1, -5], "invalid context: token id -5 is negative"),
        ([1, 10**9], "invalid context: token id 1000000000 is out of range"),
    ],
)
def test_bad_context_is_a_400(
    server: ServerProcess, smollm2: str, context: list[int], message: str
) -> None:
    response = httpx.post(
        server.url + "/api/generate",
        json={"model": smollm2, "prompt": "hi", "context": context, "stream": False},
        timeout=120,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(message)
    assert httpx.get(server.url + "/api/version").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"prompt": "what is this?", "images": ["aGk="]}),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}),
    ],
)
def test_images_without_vision_is_the_capability_error(
    server: ServerProcess, smollm2: str, path: str, body: dict[str, Any]
) -> None:
    response = httpx.post(server.url + path, json={"model": smollm2, **body})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "registry.ollama.ai/library/smollm2:135m does not support vision"
    )
