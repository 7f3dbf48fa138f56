"""The pure parts of ``corral/runner/vision.py``: markers, placeholders, image boundaries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from corral.estimate import estimate, projector_bytes
from corral.gguf import read_gguf
from corral.runner.settings import LoadSettings
from corral.runner.vision import (
    _MARKER,
    VisionPrompt,
    _place_markers,
    _placeholder,
    image_run_start,
    text_run,
)
from tests.runner.tiny_vision import write_tiny_vision_pair


def test_markers_name_images_by_index() -> None:
    text, order = _place_markers("a [img-1] b [img-0] c", 2)
    assert text == f"a {_MARKER} b {_MARKER} c"
    assert order == [1, 0]


def test_markers_past_the_images_stay_text() -> None:
    text, order = _place_markers("a [img-3] b [img-0]", 1)
    assert text == f"a [img-3] b {_MARKER}"
    assert order == [0]


def test_a_prompt_without_markers_gets_every_image_first() -> None:
    text, order = _place_markers("describe", 2)
    assert text == _MARKER * 2 + "describe"
    assert order == [0, 1]
    assert _place_markers("no images [img-0]", 0) == ("no images [img-0]", [])


def test_placeholders_are_negative_and_follow_the_picture() -> None:
    first, again, other = _placeholder("aa"), _placeholder("aa"), _placeholder("bb")
    assert first < 0 and first == again and first != other


def test_text_runs_stop_at_images() -> None:
    assert text_run([1, 2, -5, -5, 3]) == 2
    assert text_run([-5, 3]) == 0
    assert text_run([1, 2]) == 2


def test_a_cached_prefix_never_ends_inside_an_image() -> None:
    prompt = VisionPrompt([1, 2, -7, -7, -7, 3], sizes={2: 3})
    assert image_run_start(prompt, 4) == 2
    assert image_run_start(prompt, 3) == 2
    assert image_run_start(prompt, 2) == 2
    assert image_run_start(prompt, 5) == 5


def test_the_estimate_counts_the_projector(tmp_path: Path) -> None:
    model, projector = write_tiny_vision_pair(tmp_path)
    plain = LoadSettings(model_path=str(model), num_ctx=256)
    vision = replace(plain, projector=str(projector))
    weights, graph = projector_bytes(str(projector))
    assert weights == sum(t.n_bytes for t in read_gguf(projector).tensors)
    assert graph > 0
    before, after = estimate(plain, ()), estimate(vision, ())
    assert after.ram_bytes == before.ram_bytes + weights + graph
    assert after.weights_bytes == before.weights_bytes + weights
    argv = vision.argv()
    assert argv[argv.index("--mmproj") + 1] == str(projector)
