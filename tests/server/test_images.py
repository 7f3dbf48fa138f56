"""Image checks and markers of ``corral/server/images.py``: formats, sizes, base64, placement."""

from __future__ import annotations

import base64
import struct

import pytest

from corral.errors import BadRequestError
from corral.server.images import (
    check_images,
    generate_image_messages,
    image_size,
    mark_chat_images,
    mark_prompt,
    referenced_images,
)
from tests.runner.tiny_vision import png_bytes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _webp_vp8x(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def test_sizes_from_headers() -> None:
    assert image_size(png_bytes(48, 40)) == (48, 40)
    assert image_size(_jpeg(640, 480)) == (640, 480)
    assert image_size(_webp_vp8x(300, 200)) == (300, 200)
    assert image_size(b"GIF89a....") is None


def test_good_images_pass() -> None:
    check_images([b64(png_bytes(32, 32)), b64(_jpeg(10, 20)), b64(_webp_vp8x(5, 5))])
    check_images(None)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("abc$def", "illegal base64 data at input byte 3"),
        (b64(b"hello world"), "image 0: unsupported image format"),
        (b64(_jpeg(10000, 10000)), "too large"),
        (b64(b"\x89PNG\r\n\x1a\n"), "no pixels"),
    ],
)
def test_bad_images_say_why(image: str, message: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        check_images([image])
    assert message in caught.value.message
    assert caught.value.status == 400


def test_markers_go_before_the_text_or_into_placeholders() -> None:
    assert mark_prompt("what is it?", 0, 2) == "[img-0][img-1] what is it?"
    assert mark_prompt("compare [img] and [img]", 3, 2) == "compare [img-3] and [img-4]"
    assert mark_prompt("one [img] then", 0, 2) == "[img-1] one [img-0] then"
    assert mark_prompt("", 0, 1) == "[img-0]"
    assert generate_image_messages(2) == [
        {"role": "user", "content": "[img-0]"},
        {"role": "user", "content": "[img-1]"},
    ]


def test_chat_images_are_numbered_across_messages() -> None:
    messages = [
        {"Role": "user", "Content": "first", "Images": ["a"]},
        {"Role": "assistant", "Content": "ok", "Images": []},
        {"Role": "user", "Content": "second", "Images": ["b", "c"]},
    ]
    assert mark_chat_images(messages) == ["a", "b", "c"]
    assert messages[0]["Content"] == "[img-0] first"
    assert messages[2]["Content"] == "[img-1][img-2] second"


def test_images_of_dropped_turns_are_not_sent() -> None:
    assert referenced_images("x [img-1] y", ["a", "b"]) == ["a", "b"]
    assert referenced_images("only text", ["a"]) == []
    assert referenced_images("[img-5]", ["a"]) == []
