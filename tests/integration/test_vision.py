"""Vision end to end: a tiny random LLaVA-style pair created with the real CLI, images through
every API, the prefix cache across turns, parallel image requests and every bad picture.

The pair is written by ``tests/runner/tiny_vision.py``; the Modelfile has two FROM lines (the
model and its projector), as Ollama's does. Answers are greedy, so equal inputs must give
equal tokens, and the random projector makes different pictures give different ones.
"""

from __future__ import annotations

import base64
import concurrent.futures
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import ServerProcess, start_server, stop_server
from tests.runner.tiny_vision import IMAGE_TOKENS, png_bytes, write_tiny_vision_pair

pytestmark = pytest.mark.model

CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
OPTIONS = {"temperature": 0, "num_predict": 8, "seed": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


IMAGE_A = b64(png_bytes(32, 32, seed=1))
IMAGE_B = b64(png_bytes(48, 40, seed=2))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("vision"), OLLAMA_NUM_PARALLEL="4")
    try:
        yield proc
    finally:
        stop_server(proc)


def _cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=server.env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def model(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("pair")
    write_tiny_vision_pair(folder)
    (folder / "Modelfile").write_text(
        f'FROM ./base.gguf\nFROM ./projector.gguf\nTEMPLATE """{CHATML}"""\n'
    )
    done = _cli(server, "create", "tiny-vision", "-f", str(folder / "Modelfile"))
    assert done.returncode == 0, done.stderr
    (folder / "Modelfile.text").write_text(f'FROM ./base.gguf\nTEMPLATE """{CHATML}"""\n')
    done = _cli(server, "create", "tiny-text", "-f", str(folder / "Modelfile.text"))
    assert done.returncode == 0, done.stderr
    return "tiny-vision"


def _generate(server: ServerProcess, model: str, **body: Any) -> httpx.Response:
    return httpx.post(
        server.url + "/api/generate",
        json={"model": model, "stream": False, "options": OPTIONS, **body},
        timeout=180,
    )


def _chat(server: ServerProcess, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(
        server.url + "/api/chat",
        json={"model": model, "stream": False, "options": OPTIONS, "messages": messages},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_show_reports_the_projector(server: ServerProcess, model: str) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": model}).json()
    assert "vision" in shown["capabilities"]
    assert shown["projector_info"]["clip.projector_type"] == "mlp"
    assert shown["projector_info"]["general.architecture"] == "clip"
    froms = [line for line in shown["modelfile"].splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2, shown["modelfile"]
    tags = httpx.get(server.url + "/api/tags").json()["models"]
    entry = next(m for m in tags if m["name"].startswith("tiny-vision"))
    assert "vision" in entry["capabilities"]
    text = httpx.post(server.url + "/api/show", json={"model": "tiny-text"}).json()
    assert "vision" not in text["capabilities"] and "projector_info" not in text


def test_show_modelfile_round_trips(server: ServerProcess, model: str, tmp_path: Path) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": model}).json()
    body = {"model": "tiny-vision-copy", "modelfile": shown["modelfile"], "stream": False}
    created = httpx.post(server.url + "/api/create", json=body, timeout=120)
    assert created.status_code == 200, created.text
    copy = httpx.post(server.url + "/api/show", json={"model": "tiny-vision-copy"}).json()
    assert copy["projector_info"] == shown["projector_info"]
    assert "vision" in copy["capabilities"]


def test_create_json_files_with_projector(server: ServerProcess, model: str) -> None:
    shown = httpx.post(server.url + "/api/show", json={"model": model}).json()
    froms = [
        line.split(" ", 1)[1]
        for line in shown["modelfile"].splitlines()
        if line.startswith("FROM ")
    ]
    digests = [Path(path).name.replace("sha256-", "sha256:") for path in froms]
    body = {
        "model": "tiny-vision-json",
        "files": {"model.gguf": digests[0], "mmproj.gguf": digests[1]},
        "template": CHATML,
        "stream": False,
    }
    created = httpx.post(server.url + "/api/create", json=body, timeout=120)
    assert created.status_code == 200, created.text
    again = httpx.post(server.url + "/api/show", json={"model": "tiny-vision-json"}).json()
    assert "vision" in again["capabilities"]
    alone = {"model": "only-projector", "files": {"mmproj.gguf": digests[1]}, "stream": False}
    refused = httpx.post(server.url + "/api/create", json=alone, timeout=60)
    assert refused.status_code == 400 and "projector" in refused.json()["error"]


def test_images_change_the_answer_and_equal_images_do_not(
    server: ServerProcess, model: str
) -> None:
    first = _generate(server, model, prompt="what is this?", images=[IMAGE_A])
    assert first.status_code == 200, first.text
    again = _generate(server, model, prompt="what is this?", images=[IMAGE_A])
    other = _generate(server, model, prompt="what is this?", images=[IMAGE_B])
    none = _generate(server, model, prompt="what is this?")
    assert first.json()["context"] == again.json()["context"]
    generated = [r.json()["context"][-8:] for r in (first, other, none)]
    assert generated[0] != generated[1] and generated[0] != generated[2], generated
    assert first.json()["prompt_eval_count"] >= IMAGE_TOKENS


def test_same_image_in_turn_two_comes_from_the_cache(server: ServerProcess, model: str) -> None:
    image = b64(png_bytes(32, 32, seed=5))
    turn1 = [{"role": "user", "content": "describe it", "images": [image]}]
    first = _chat(server, model, turn1)
    assert first["prompt_eval_count"] > IMAGE_TOKENS

    def turn2(picture: str) -> list[dict[str, Any]]:
        return [
            {"role": "user", "content": "describe it", "images": [picture]},
            {"role": "assistant", "content": "a picture"},
            {"role": "user", "content": "and the colours?"},
        ]

    def read(messages: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
        """The answer, and how many prompt tokens the runner read (not held by its cache)."""
        before = server.metric("corral_prompt_tokens_evaluated_total")
        answer = _chat(server, model, messages)
        return answer, server.metric("corral_prompt_tokens_evaluated_total") - before

    second, second_read = read(turn2(image))
    # the same conversation about a picture never seen: everything from the image on is read
    control, control_read = read(turn2(b64(png_bytes(32, 32, seed=6))))
    assert second["prompt_eval_count"] == control["prompt_eval_count"]  # the whole prompt
    assert second_read + IMAGE_TOKENS < control_read, (second_read, control_read)


def test_parallel_image_requests_match_their_answers_alone(
    server: ServerProcess, model: str
) -> None:
    images = [b64(png_bytes(32, 32, seed=10 + i)) for i in range(4)]
    alone = [
        _generate(server, model, prompt="look", images=[image]).json()["context"]
        for image in images
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda image: _generate(server, model, prompt="look", images=[image]), images)
        )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert [r.json()["context"] for r in results] == alone


def test_ollama_and_openai_clients(server: ServerProcess, model: str) -> None:
    client = ollama.Client(host=server.url)
    try:
        answer = client.chat(
            model=model,
            messages=[{"role": "user", "content": "hi", "images": [base64.b64decode(IMAGE_A)]}],
            options=OPTIONS,
        )
    finally:
        client._client.close()
    assert answer.message.content and answer.prompt_eval_count
    fresh = b64(png_bytes(32, 32, seed=7))  # never sent before: nothing of it is cached
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as oai:
        reply = oai.chat.completions.create(
            model=model,
            max_tokens=8,
            temperature=0,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + fresh},
                        },
                    ],
                }
            ],
        )
        assert reply.usage is not None and reply.usage.prompt_tokens >= IMAGE_TOKENS
        with pytest.raises(openai.BadRequestError, match="base64"):
            oai.chat.completions.create(
                model=model,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}
                        ],
                    }
                ],
            )


def _huge_png(width: int, height: int) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = b"IHDR" + header
    chunk = struct.pack(">I", len(header)) + body + struct.pack(">I", zlib.crc32(body))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("not base64 at all!", "illegal base64 data"),
        (b64(b"plain text, not a picture"), "unsupported image format"),
        (b64(png_bytes(32, 32, seed=3)[:80]), "could not be decoded"),
        (b64(_huge_png(10000, 10000)), "too large"),
    ],
    ids=["base64", "not-an-image", "truncated", "100-megapixel"],
)
def test_bad_images_are_400s(server: ServerProcess, model: str, image: str, message: str) -> None:
    response = _generate(server, model, prompt="what is this?", images=[image])
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    chat = httpx.post(
        server.url + "/api/chat",
        json={
            "model": model,
            "stream": False,
            "messages": [{"role": "user", "content": "x", "images": [image]}],
        },
        timeout=60,
    )
    assert chat.status_code == 400 and message in chat.json()["error"]
    assert _generate(server, model, prompt="still there?").status_code == 200


def test_text_model_keeps_the_capability_error(server: ServerProcess, model: str) -> None:
    response = _generate(server, "tiny-text", prompt="what is this?", images=[IMAGE_A])
    assert response.status_code == 400
    assert "does not support vision" in response.json()["error"]


def test_anthropic_and_responses_images(server: ServerProcess, model: str) -> None:
    fresh = b64(png_bytes(32, 32, seed=8))
    with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as claude:
        reply = claude.messages.create(
            model=model,
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": fresh},
                        },
                        {"type": "text", "text": "what is this?"},
                    ],
                }
            ],
        )
    assert reply.usage.input_tokens >= IMAGE_TOKENS
    other = b64(png_bytes(32, 32, seed=9))
    parts = [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64," + other},
    ]
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as oai:
        response = oai.responses.create(
            model=model,
            max_output_tokens=8,
            temperature=0,
            input=cast(Any, [{"role": "user", "content": parts}]),
        )
    assert response.usage is not None and response.usage.input_tokens >= IMAGE_TOKENS


def test_cli_run_attaches_image_paths(server: ServerProcess, model: str, tmp_path: Path) -> None:
    picture = tmp_path / "photo.png"
    picture.write_bytes(png_bytes(32, 32, seed=11))
    done = _cli(server, "run", model, f"what is in {picture}?")
    assert done.returncode == 0, done.stderr
    assert f"Added image '{picture}'" in done.stderr
