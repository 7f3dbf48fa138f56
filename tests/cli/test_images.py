"""Image paths in ``corral run`` prompts (``corral/cli/images.py``)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from corral.cli.client import CliError
from corral.cli.images import extract_images, user_message
from corral.cli.show import show_summary
from tests.runner.tiny_vision import png_bytes


def test_paths_are_taken_out_of_the_prompt(tmp_path: Path) -> None:
    picture = tmp_path / "my photo.png"
    picture.write_bytes(png_bytes(8, 8))
    other = tmp_path / "b.JPG"
    other.write_bytes(b"\xff\xd8\xff\xe0")
    escaped = str(picture).replace(" ", "\\ ")
    text, paths = extract_images(f"what is in {escaped} and '{other}'?")
    assert paths == [picture, other]
    assert text == "what is in  and ?"


def test_missing_files_stay_text(tmp_path: Path) -> None:
    text, paths = extract_images(f"compare {tmp_path}/nothing.png with ./x.webp")
    assert paths == []
    assert "nothing.png" in text


def test_user_message_attaches_for_vision_models_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "a.png"
    data = png_bytes(8, 8)
    picture.write_bytes(data)
    message = user_message(f"describe {picture}", vision=True)
    assert message == {
        "role": "user",
        "content": "describe",
        "images": [base64.b64encode(data).decode()],
    }
    assert f"Added image '{picture}'" in capsys.readouterr().err
    plain = user_message(f"describe {picture}", vision=False)
    assert plain == {"role": "user", "content": f"describe {picture}"}


def test_a_file_that_is_not_a_picture_is_an_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    with pytest.raises(CliError, match="invalid image type"):
        user_message(f"look at {fake}", vision=True)


def test_show_prints_the_projector(capsys: pytest.CaptureFixture[str]) -> None:
    show_summary(
        {
            "details": {"family": "llama"},
            "projector_info": {
                "general.architecture": "clip",
                "general.parameter_count": 28032,
                "clip.vision.embedding_length": 32,
                "clip.vision.projection_dim": 64,
            },
        }
    )
    out = capsys.readouterr().out
    assert "  Projector" in out and "28.03K" in out and "dimensions" in out
